// VMDK descriptors with no usable extent line (all skipped: not RW, size <= 0, an unknown type, an
// unquoted name): qemu opens them as 0-byte disks. map, compare and check must answer as both
// oracles do; info and convert abort in qemu (an assertion), where instar answers for a 0-byte disk.
// The path policy still holds: a usable line naming a forbidden file is refused.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../../differential/harness.ts';
import { VERSIONS, runInstar, runQemu } from '../../helpers/oracles.ts';

const head = 'version=1\nCID=9cb0c60b\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\n';
const DESCRIPTORS: Record<string, string> = {
  // The fuzzer's findings: a negative size, and a name with no opening quote.
  'negative-size.vmdk': 'RW -638 FLAT "data.raw" 0\n',
  'unquoted.vmdk': 'RW 4294967296 FLAT  data.raw" 0\n',
  // Skipped lines never name a file to open, not even a forbidden one.
  'skipped.vmdk': 'RDONLY 8 FLAT "/etc/passwd" 0\nRW 0 FLAT "/etc/passwd" 0\nRW 8 ZERO "data.raw"\n',
  'none.vmdk': '',
};

describe('vmdk descriptor without usable extents: a 0-byte disk, as in qemu', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('vmdk-no-extents');
    writeFileSync(dir.path('data.raw'), Buffer.alloc(65536, 0x5a));
    for (const [name, lines] of Object.entries(DESCRIPTORS)) writeFileSync(dir.path(name), head + lines + '\n# The Disk Data Base\n#DDB\n');
    writeFileSync(dir.path('forbidden.vmdk'), head + 'RW 0 FLAT "data.raw" 0\nRW 8 FLAT "/etc/passwd" 0\n');
  });
  after(() => dir.remove());

  for (const name of Object.keys(DESCRIPTORS)) {
    for (const sandboxed of [false, true]) {
      const how = sandboxed ? 'sandboxed' : 'in process';
      it(`${name} (${how}): map, map --output=json, compare, check`, async () => {
        // Guard: the oracles do open it (an empty map entry), so the case tests what it claims.
        const json = runQemu('7.2', ['map', '--output=json', '-f', 'vmdk', name], { cwd: dir.dir });
        assert.equal(json.stdout, '[{ "start": 0, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
        await assertSameOutput(dir.dir, ['map', '-f', 'vmdk', name], { sandboxed });
        await assertSameOutput(dir.dir, ['map', '--output=json', '-f', 'vmdk', name], { sandboxed });
        await assertSameOutput(dir.dir, ['compare', '-f', 'vmdk', '-F', 'vmdk', name, name], { sandboxed });
        await assertSameOutput(dir.dir, ['compare', '-f', 'vmdk', '-F', 'raw', name, 'data.raw'], { sandboxed });
        await assertSameOutput(dir.dir, ['check', '-f', 'vmdk', name], { sandboxed });
        await assertSameOutput(dir.dir, ['check', '--output=json', '-f', 'vmdk', name], { sandboxed });
      });
    }
  }

  it('info and convert: qemu aborts on an assertion; instar reports a 0-byte disk', () => {
    for (const v of VERSIONS) {
      const r = runQemu(v, ['info', '-f', 'vmdk', 'none.vmdk'], { cwd: dir.dir });
      assert.ok(r.signal !== null || r.status === 134, `qemu-img ${v} info no longer aborts: ${r.stdout}${r.stderr}`);
    }
    const info = runInstar(['info', '--output=json', '-f', 'vmdk', 'none.vmdk'], { cwd: dir.dir });
    assert.equal(info.status, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], 0);
    const convert = runInstar(['convert', '-f', 'vmdk', '-O', 'raw', 'none.vmdk', 'out.raw'], { cwd: dir.dir });
    assert.equal(convert.status, 0, convert.stderr);
  });

  it('a usable line naming a forbidden file is still refused by the path policy', () => {
    for (const args of [['map', '-f', 'vmdk', 'forbidden.vmdk'], ['compare', '-f', 'vmdk', '-F', 'vmdk', 'forbidden.vmdk', 'forbidden.vmdk']]) {
      const r = runInstar(args, { cwd: dir.dir });
      assert.notEqual(r.status, 0, args.join(' '));
      assert.match(r.stderr, /'\/etc\/passwd' is outside the allowed paths \(instar's path policy/);
    }
  });
});
