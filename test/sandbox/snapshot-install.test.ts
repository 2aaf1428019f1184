// npm's postinstall (package.json, scripts/guest-snapshot-install.ts): a package installed from
// the registry holds only its "files", no guest.blob; the installing node makes the blob, and a
// CLI run from the package then starts its guest from it. The install never fails for it: a blob
// that cannot be made leaves a warning and the code cache, no dist at all leaves nothing.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir, writeInput } from './helpers.ts';
import { ROOT } from '../helpers/oracles.ts';
import { snapshotFiles, usableSnapshot } from '../../src/host/sandbox/snapshot.ts';
import { installGuestSnapshot, snapshotFlags } from '../../scripts/guest-snapshot.ts';

const scratch = scratchDir();
after(scratch.cleanup);
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[]; scripts: Record<string, string> };
const input = writeInput(scratch.dir, 'in.raw', Buffer.alloc(1024 * 1024));

/** What `npm install` from the registry puts in node_modules/instar: package.json and its "files". */
function installedCopy(name: string): string {
  const pkg = join(scratch.dir, name);
  mkdirSync(pkg);
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  for (const f of manifest.files) cpSync(join(ROOT, f), join(pkg, f), { recursive: true });
  return pkg;
}

/** Runs the postinstall as npm does: its command, by sh, in the package's directory. */
function postinstall(pkg: string): { status: number | null; stderr: string } {
  const { NODE_EXTRA_CA_CERTS: _, ...env } = process.env;
  const r = spawnSync('sh', ['-c', manifest.scripts.postinstall], { cwd: pkg, env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stderr: r.stderr };
}

/** How the package's CLI started its guest, and what it printed. */
function cliInfo(pkg: string): { start: string | undefined; stdout: string } {
  const r = spawnSync(process.execPath, [join(pkg, 'dist', 'cli.js'), '--debug', 'info', '-f', 'raw', input], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return { start: /sandbox: guest start: (snapshot|code cache) /.exec(r.stderr)?.[1], stdout: r.stdout };
}

describe('guest snapshot made at install', () => {
  it('a package from the registry ships no blob; its postinstall makes one this node vouches for, which its CLI starts from; a second run leaves it', () => {
    const pkg = installedCopy('installed');
    const bundle = join(pkg, 'dist', 'guest.cjs');
    assert.equal(existsSync(snapshotFiles(bundle).blob), false);
    assert.equal(cliInfo(pkg).start, 'code cache');
    assert.deepEqual(postinstall(pkg), { status: 0, stderr: '' });
    assert.ok('blob' in usableSnapshot(bundle, snapshotFlags()));
    const made = statSync(snapshotFiles(bundle).blob).mtimeMs;
    const run = cliInfo(pkg);
    assert.equal(run.start, 'snapshot');
    assert.match(run.stdout, /^image: .*in\.raw\nfile format: raw\nvirtual size: 1 MiB/);
    assert.deepEqual(postinstall(pkg), { status: 0, stderr: '' });
    assert.equal(statSync(snapshotFiles(bundle).blob).mtimeMs, made);
  });

  it('a blob it cannot make costs a warning and the code cache, not the install', () => {
    const pkg = installedCopy('unwritable');
    // The blob's path taken by a directory: the maker's rename fails.
    mkdirSync(snapshotFiles(join(pkg, 'dist', 'guest.cjs')).blob);
    const r = postinstall(pkg);
    assert.equal(r.status, 0);
    assert.match(r.stderr, /^instar: no guest startup snapshot \(.*\); guests start from the code cache\n$/);
    assert.equal(existsSync(snapshotFiles(join(pkg, 'dist', 'guest.cjs')).record), false);
    assert.equal(cliInfo(pkg).start, 'code cache');
  });

  it('without dist (a checkout not built yet) it does nothing, quietly; in a checkout it leaves the blob to the build', () => {
    const bare = join(scratch.dir, 'bare');
    mkdirSync(bare);
    writeFileSync(join(bare, 'package.json'), readFileSync(join(ROOT, 'package.json')));
    assert.deepEqual(postinstall(bare), { status: 0, stderr: '' });
    assert.deepEqual(spawnSync('ls', ['-A', bare], { encoding: 'utf8' }).stdout, 'package.json\n');
    const checkout = join(scratch.dir, 'checkout');
    for (const d of ['scripts', 'dist']) mkdirSync(join(checkout, d), { recursive: true });
    cpSync(join(ROOT, 'dist', 'guest.cjs'), join(checkout, 'dist', 'guest.cjs'));
    writeFileSync(join(checkout, 'scripts', 'build.mjs'), '');
    assert.equal(installGuestSnapshot(join(checkout, 'dist')), 'a source checkout: its build makes the blob');
    assert.equal(existsSync(snapshotFiles(join(checkout, 'dist', 'guest.cjs')).blob), false);
    rmSync(checkout, { recursive: true });
  });
});
