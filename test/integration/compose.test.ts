/**
 * docker-compose.yml and the Dockerfile, checked without a Docker engine. The Compose file goes
 * through the Compose specification's reference implementation (compose-go, test/compose/main.go):
 * its JSON schema and the loader's own checks, as `docker compose config` does; a broken copy must
 * fail the same check. Then what a deployment needs: current Temporal images (no auto-setup), restart
 * policies, loopback-only ports, the API behind its token, the pgpass copied to a private file; and an
 * image on a supported Node LTS that runs as a non-root user with a healthcheck.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../harness/process';

const root = resolve(__dirname, '..', '..');

interface Service {
  image?: string;
  build?: unknown;
  restart?: string;
  command?: string[] | null;
  environment?: Record<string, string | null>;
  ports?: { host_ip?: string; target: number; published: string }[];
  secrets?: { source: string }[];
  healthcheck?: { test?: string[] };
}
interface Project {
  services: Record<string, Service>;
  secrets?: Record<string, { file?: string }>;
}

describe('docker-compose.yml and Dockerfile', () => {
  let scratch: string;
  let checker: string;
  let project: Project;

  const check = (file: string) => runCommand(checker, [file], { cwd: root, timeoutMs: 60_000 });

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pgdts-compose-'));
    checker = join(scratch, 'compose-check');
    const built = await runCommand('go', ['build', '-o', checker, '.'], { cwd: join(root, 'test', 'compose'), timeoutMs: 600_000 });
    expect(built.code, `go build of the compose checker failed (Go ≥ 1.24 and the Go module proxy are needed): ${built.err}`).toBe(0);
    const r = await check(join(root, 'docker-compose.yml'));
    expect(r.code, r.err).toBe(0);
    project = JSON.parse(r.out) as Project;
  }, 660_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('the checker rejects what the specification forbids', async () => {
    const dir = join(scratch, 'broken');
    cpSync(join(root, 'examples'), join(dir, 'examples'), { recursive: true });
    const text = readFileSync(join(root, 'docker-compose.yml'), 'utf8');
    const unknownKey = text.replace(/^( {2}worker:\n)/m, '$1    restart_policy: always\n');
    expect(unknownKey).not.toBe(text);
    writeFileSync(join(dir, 'a.yml'), unknownKey);
    const a = await check(join(dir, 'a.yml'));
    expect(a.code).not.toBe(0);
    expect(a.err).toContain('restart_policy');
    const badDependency = text.replace('condition: service_completed_successfully', 'condition: service_finished');
    writeFileSync(join(dir, 'b.yml'), badDependency);
    const b = await check(join(dir, 'b.yml'));
    expect(b.code).not.toBe(0);
    expect(b.err).toContain('condition');
  });

  it('uses current Temporal images and restarts every long-running service', () => {
    const images = Object.values(project.services).map((s) => s.image ?? '');
    expect(images.some((i) => i.startsWith('temporalio/auto-setup'))).toBe(false);
    expect(images).toContainEqual(expect.stringMatching(/^temporalio\/server:\d+\.\d+\.\d+$/));
    for (const [name, s] of Object.entries(project.services)) expect(s.restart, name).toMatch(/^(unless-stopped|always|on-failure(:\d+)?)$/);
  });

  it('publishes ports on loopback only, and the API requires its token', () => {
    for (const [name, s] of Object.entries(project.services)) for (const p of s.ports ?? []) expect(p.host_ip, `${name}:${p.published}`).toBe('127.0.0.1');
    const api = project.services.api!;
    expect(api.environment?.PG_DTS_API_TOKEN_FILE).toBe('/run/secrets/api-token');
    expect(api.secrets?.map((s) => s.source)).toContain('api-token');
    expect(project.secrets?.['api-token']?.file).toBeDefined();
    expect(api.healthcheck?.test?.join(' ')).toContain('/api/v1/health');
  });

  it('gives the worker a pgpass only its user can read, and an allow-list', () => {
    const worker = project.services.worker!;
    const pgpass = worker.environment?.PGPASSFILE;
    expect(pgpass).toBeDefined();
    expect(pgpass!.startsWith('/run/secrets/')).toBe(false);
    expect(worker.command?.join(' ')).toContain(`install -m 0600 /run/secrets/pgpass "$PGPASSFILE"`);
    expect(worker.environment?.PG_DTS_ALLOWED_HOSTS).toBeTruthy();
  });

  it('builds an image on a Node LTS that runs as a non-root user with a healthcheck', () => {
    const lines = readFileSync(join(root, 'Dockerfile'), 'utf8').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    const froms = lines.filter((l) => /^FROM /.test(l)).map((l) => l.split(/\s+/)[1]!);
    const major = Number(/^node:(\d+)/.exec(froms.at(-1)!)?.[1]);
    expect([22, 24]).toContain(major); // the LTS lines supported in December 2026
    const lastFrom = lines.map((l) => l.startsWith('FROM ')).lastIndexOf(true);
    const final = lines.slice(lastFrom);
    const user = final.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user).toBeDefined();
    expect(user!.split(/\s+/)[1]).not.toMatch(/^(root|0)$/);
    expect(final.findIndex((l) => l.startsWith('USER '))).toBeLessThan(final.findIndex((l) => l.startsWith('CMD ')));
    expect(final.some((l) => l.startsWith('HEALTHCHECK '))).toBe(true);
    expect(final.find((l) => l.startsWith('CMD '))).toContain('lib/worker/main.js');
    expect(final.join('\n')).not.toMatch(/tsx/);
  });
});
