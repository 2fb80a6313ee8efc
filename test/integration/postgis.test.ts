/**
 * A PostGIS database, migrated online with `schemas: ["public"]` as a user would: the extension's own
 * objects (spatial_ref_sys, its types and functions) are the extension's, created by CREATE EXTENSION
 * on the target, not copied as user tables; the rows a user added to spatial_ref_sys (a custom SRID)
 * reach the target; geometry and geography columns with SRIDs and type modifiers, NULLs and large
 * (TOASTed) polygons arrive exactly through the copy and the apply, compared by ST_AsEWKB; the GiST,
 * SP-GiST and BRIN indexes are built after the load. Needs PostGIS for the server binaries in use (.ci/run installs
 * Debian's package); without it the test fails and says so.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { pgBinDir } from '../harness/pg-cluster';

let env: TestEnv;

const PLACES = `
CREATE EXTENSION postgis;
INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, proj4text, srtext)
  VALUES (990001, 'pgdts', 990001, '+proj=longlat +datum=WGS84 +no_defs', 'GEOGCS["pgdts test"]');
CREATE TABLE places (
  id bigserial PRIMARY KEY,
  name text NOT NULL,
  pt geometry(Point, 4326),
  area geometry(MultiPolygon, 3857),
  loc geography(Point, 4326),
  custom geometry(Point, 990001)
);
CREATE INDEX places_pt ON places USING gist (pt);
CREATE INDEX places_loc ON places USING gist (loc);
CREATE INDEX places_pt_spgist ON places USING spgist (pt);
CREATE INDEX places_area_brin ON places USING brin (area);
INSERT INTO places (name, pt, area, loc, custom)
SELECT 'p' || g,
       ST_SetSRID(ST_MakePoint(g % 360 - 180, g % 170 - 85), 4326),
       CASE WHEN g % 5 = 0 THEN NULL ELSE ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(g * 10, g * 7), 3857), 50 + g % 20, 2)) END,
       ST_SetSRID(ST_MakePoint(g % 360 - 180, g % 170 - 85), 4326)::geography,
       CASE WHEN g % 3 = 0 THEN ST_SetSRID(ST_MakePoint(g, -g), 990001) END
  FROM generate_series(1, 3000) g;
-- A polygon large enough to be TOASTed (thousands of vertices).
INSERT INTO places (name, area) VALUES ('big', ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(0, 0), 3857), 100000, 2000)));
`;

async function ewkb(cluster: TestEnv['source'], db: string): Promise<{ n: number; h: string }> {
  const [r] = await cluster.query<{ n: number; h: string }>(
    `SELECT count(*)::int AS n,
            md5(string_agg(concat_ws('|', id, name, encode(ST_AsEWKB(pt), 'hex'), encode(ST_AsEWKB(area), 'hex'),
                                     encode(ST_AsEWKB(loc::geometry), 'hex'), encode(ST_AsEWKB(custom), 'hex')), E'\\n' ORDER BY id)) AS h
       FROM places`,
    [],
    db,
  );
  return r!;
}

beforeAll(async () => {
  const major = pgBinDir().split('/').at(-2)!;
  const control = join('/usr/share/postgresql', major, 'extension', 'postgis.control');
  if (!existsSync(control)) throw new Error(`PostGIS is not installed for ${pgBinDir()} (no ${control}): apt-get install postgresql-${major}-postgis-3 (.ci/run does)`);
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

describe('PostGIS', () => {
  it('migrates online under writes: extension objects left to the extension, custom SRIDs carried, geometries exact', async () => {
    const db = 'gis';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(PLACES, [], db);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), schemas: ['public'], cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL', 180_000);
    await env.source.query(
      `UPDATE places SET pt = ST_Translate(pt, 0.5, 0.25), loc = ST_Translate(loc::geometry, 0.5, 0.25)::geography WHERE id % 7 = 0;
       UPDATE places SET area = NULL WHERE id % 11 = 0;
       UPDATE places SET area = ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(1, 1), 3857), 200000, 3000)) WHERE name = 'big';
       DELETE FROM places WHERE id % 13 = 0;
       INSERT INTO places (name, pt, custom) VALUES ('late', ST_SetSRID(ST_MakePoint(1.25, 2.5), 4326), ST_SetSRID(ST_MakePoint(3, 4), 990001))`,
      [],
      db,
    );
    await new Promise((r) => setTimeout(r, 1000));
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.tables.map((t) => t.source)).toEqual(['public.places']);
    expect(report.notices.join('\n')).toContain('spatial_ref_sys');

    const [a, b] = await Promise.all([ewkb(env.source, db), ewkb(env.target, db)]);
    expect(b).toEqual(a);
    expect(a.n).toBeGreaterThan(2700);
    const srid = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM spatial_ref_sys WHERE srid = 990001 AND auth_name = 'pgdts'`, [], db);
    expect(srid[0]!.n).toBe(1);
    const types = await env.target.query<{ t: string }>(
      `SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'places'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
      [],
      db,
    );
    expect(types.map((t) => t.t)).toEqual(['bigint', 'text', 'geometry(Point,4326)', 'geometry(MultiPolygon,3857)', 'geography(Point,4326)', 'geometry(Point,990001)']);
    // GiST, SP-GiST and BRIN indexes, built after the load, with the extension's operator classes.
    const indexes = `SELECT indexname AS name, regexp_replace(indexdef, ' ON .* USING ', ' USING ') AS def FROM pg_indexes WHERE tablename = 'places' ORDER BY indexname`;
    const [si, ti] = await Promise.all([env.source.query<{ name: string; def: string }>(indexes, [], db), env.target.query<{ name: string; def: string }>(indexes, [], db)]);
    expect(ti).toEqual(si);
    expect(ti.map((i) => i.def).join('\n')).toMatch(/USING spgist \(pt\)[\s\S]*USING brin \(area\)|USING brin \(area\)[\s\S]*USING spgist \(pt\)/);
    const valid = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_index WHERE indrelid = 'places'::regclass AND indisvalid`, [], db);
    expect(valid[0]!.n).toBe(5);
  });
});
