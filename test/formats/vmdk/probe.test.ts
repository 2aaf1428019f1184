// The VMDK probe against qemu's detection: for each file, probe score 100 exactly when both
// oracles (no -f) call it vmdk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { probeVmdk } from '../../../src/formats/vmdk/probe.ts';
import { VERSIONS } from '../../helpers/oracles.ts';
import { sparseImage, streamImage, cowdImage } from './craft.ts';
import { oracleInfo, tempDir } from './helpers.ts';

const body = 'CID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "a.raw" 0\n';

const files: Record<string, Uint8Array> = {
  plain: Buffer.from('version=1\n' + body),
  crlf: Buffer.from('version=2\r\n' + body),
  comments: Buffer.from('# Disk DescriptorFile\n#another\nversion=3\n' + body),
  spaceLines: Buffer.from('   \n \r\nversion=1\n' + body),
  emptyLineFirst: Buffer.from('\nversion=1\n' + body),
  tabFirst: Buffer.from('\tversion=1\n' + body),
  version4: Buffer.from('version=4\n' + body),
  spacesThenText: Buffer.from('  x\nversion=1\n' + body),
  kdmv: sparseImage(),
  stream: streamImage({}),
  cowd: cowdImage({ granularity: 16, diskSectors: 2048, l1dirSize: 1 }),
  text: Buffer.from('hello world\n'.repeat(100)),
};

test('probe score matches qemu-img 7.2 and 10.0 format detection', () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'a.raw'), new Uint8Array(4096));
    for (const [name, bytes] of Object.entries(files)) {
      const path = join(dir, `${name}.img`);
      writeFileSync(path, bytes);
      const ours = probeVmdk(bytes.subarray(0, 2048)) === 100 ? 'vmdk' : 'raw';
      for (const v of VERSIONS) assert.equal(ours, oracleInfo(v, path).format, `${name}, qemu-img ${v}`);
    }
  } finally {
    cleanup();
  }
});
