import { describe, expect, it } from 'vitest';
import { replicationGrantAdvice } from '../../activities/preflight';

describe('what to grant a source role that may not open a replication connection', () => {
  const base = { rolname: 'mig', rds: false, rds_member: false, cloudsql: false, azure: false };

  it("names each service's way, recognised by its admin roles", () => {
    expect(replicationGrantAdvice({ ...base, rds: true })).toBe(
      'GRANT rds_replication TO "mig" (RDS/Aurora: as the master user; the parameter group needs rds.logical_replication = 1)',
    );
    expect(replicationGrantAdvice({ ...base, cloudsql: true })).toBe(
      'ALTER ROLE "mig" REPLICATION (Cloud SQL: as a cloudsqlsuperuser member; the instance needs the flag cloudsql.logical_decoding = on)',
    );
    expect(replicationGrantAdvice({ ...base, azure: true })).toBe('ALTER ROLE "mig" REPLICATION (Azure: as an azure_pg_admin member; the server needs wal_level = logical)');
    expect(replicationGrantAdvice(base)).toBe('ALTER ROLE "mig" REPLICATION (as a superuser)');
  });

  it('says why rds_replication membership is not enough off RDS', () => {
    expect(replicationGrantAdvice({ ...base, rds: true, rds_member: true })).toContain(
      '"mig" is a member of rds_replication, which grants replication only on RDS/Aurora: on this server ALTER ROLE "mig" REPLICATION',
    );
  });
});
