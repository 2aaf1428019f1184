// qemu's BDRV_MAX_LENGTH is INT64_MAX aligned down to 1 GiB (2^63 - 2^30): a read at or past it
// fails before any I/O. A dynamic VHD whose block table sits between that and the older,
// request-aligned limit (2^63 - 2^19) is refused with "Error reading pagetable" by both oracles;
// instar used the older limit and read on (found while fixing dmg's size check).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vpcDriver } from '../../../src/formats/vpc/driver.ts';
import { VERSIONS } from '../../helpers/oracles.ts';
import { ctxFor, oracleOpenError, ourOpenError, qemuOk, tempDir } from './image-helpers.ts';

test('vpc: a block table offset just below the old limit is past BDRV_MAX_LENGTH (both oracles)', () => {
  const { dir, cleanup } = tempDir('vpc-maxlen');
  try {
    const base = join(dir, 'a.vhd');
    qemuOk('10.0', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', base, '1M']);
    for (const [name, offset] of [['past-max.vhd', (1n << 63n) - (1n << 29n)], ['at-max.vhd', (1n << 63n) - (1n << 30n)]] as const) {
      const bytes = readFileSync(base);
      // The dynamic header follows the footer copy at 512; its table offset is at +16.
      bytes.writeBigUInt64BE(offset, 512 + 16);
      const img = join(dir, name);
      writeFileSync(img, bytes);
      for (const v of VERSIONS) {
        const expected = oracleOpenError(v, img, 'vpc');
        assert.equal(expected, `qemu-img: Could not open '${img}': Error reading pagetable`);
        assert.equal(ourOpenError(vpcDriver, bytes, ctxFor(v), img, name), expected);
      }
    }
  } finally {
    cleanup();
  }
});
