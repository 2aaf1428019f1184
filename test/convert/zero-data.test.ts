// convert over data that a hole makes read as zeros (qemu's BDRV_BLOCK_DATA|ZERO, e.g. a flat VMDK
// extent file with holes): qemu's convert takes the ZERO bit first, so it neither reads such runs
// nor counts them for -p. A flat extent whose start offset wraps to -512 (a descriptor offset
// past int64 saturates, and qemu's shift by 9 wraps) therefore converts in qemu, without EIO.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { qemu, qemuIo, sha256, tempDir } from './helpers.ts';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

const descriptor = (extent: string) => `# Disk DescriptorFile\nversion=1\nCID=b1f0efa0\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\n${extent}\n`;

/** convert -p -O raw by both oracles and instar (sandboxed and not): same status, stderr, bytes. */
function sameConvert(source: string): void {
  const out = (who: string) => join(dir, `out-${who}.raw`);
  const theirs = VERSIONS.map((v) => {
    const r = runQemu(v, ['convert', '-p', '-f', 'vmdk', '-O', 'raw', source, out(v)], { cwd: dir });
    assert.equal(r.status, 0, `qemu-img ${v}: ${r.stderr}`);
    return { stdout: r.stdout, hash: sha256(out(v)) };
  });
  assert.equal(theirs[0].hash, theirs[1].hash);
  assert.equal(theirs[0].stdout, theirs[1].stdout);
  for (const sandbox of ['--sandbox=none', '--sandbox=auto']) {
    const r = runInstar(['convert', '-p', '-f', 'vmdk', '-O', 'raw', source, out('instar'), sandbox], { cwd: dir });
    assert.equal(r.status, 0, `instar ${sandbox}: ${r.stderr}`);
    assert.equal(r.stdout, theirs[0].stdout, `progress lines (${sandbox})`);
    assert.equal(sha256(out('instar')), theirs[0].hash, sandbox);
  }
}

test('a flat extent starting at byte -512 converts to zeros, as in qemu (no read, no EIO)', () => {
  writeFileSync(join(dir, 'wrap-flat'), Buffer.alloc(65536, 0x5a));
  writeFileSync(join(dir, 'wrap.vmdk'), descriptor('RW 8 FLAT "wrap-flat" 18446744073709552000'));
  // Guard: both oracles map it as data that reads as zeros, at offset -512.
  const map = runQemu('7.2', ['map', '--output=json', '-f', 'vmdk', 'wrap.vmdk'], { cwd: dir });
  assert.match(map.stdout, /"zero": true, "data": true, "offset": -512/);
  sameConvert('wrap.vmdk');
});

test('holes in a flat extent file are not counted as copied: -p prints what qemu prints', () => {
  qemu(['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', join(dir, 'holes.vmdk'), '16M']);
  // The extent file is all hole but for two islands of data.
  truncateSync(join(dir, 'holes-flat.vmdk'), 16 * 1024 * 1024);
  qemuIo(join(dir, 'holes.vmdk'), ['write -P 7 1M 64k', 'write -P 9 12M 3M'], 'vmdk');
  const map = runQemu('7.2', ['map', '--output=json', 'holes.vmdk'], { cwd: dir });
  assert.match(map.stdout, /"zero": true, "data": true/);
  sameConvert('holes.vmdk');
});
