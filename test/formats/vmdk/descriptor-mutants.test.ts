// Descriptor text mutants: a valid monolithicFlat descriptor with tokens qemu's parser cares
// about inserted or overwritten (access words, types, quotes, numbers past int64, CID keys, NUL,
// CR, an over-long name). For each, the driver must refuse with the oracles' words or report the
// same info. Seeded; mutants on which the oracles crash or disagree give no verdict. qemu opens
// some absurd sizes and only fails later ("Can't get image size"); we refuse those at open.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageError } from '../../../src/formats/types.ts';
import { VERSIONS, oracle } from '../../helpers/oracles.ts';
import { infoDifferences, openAsHost, tempDir } from './helpers.ts';

function lcg(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648), s / 2147483648);
}
const TOKENS = ['RW', 'RDONLY', ' ', '\n', '\r\n', '"', '0', '-1', '99999999999999999999', 'FLAT', 'SPARSE', 'VMFS', 'ZERO', 'a.raw', 'CID=', 'parentCID=', 'parentFileNameHint="', 'createType="', 'monolithicFlat', 'vmfs', '\0', '#', '0x', 'ffffffff', '=', '\t', 'x'.repeat(600)];
const MUTANTS = 300;
const BASE = 'version=1\nCID=12ab\nparentCID=ffffffff\ncreateType="monolithicFlat"\n# Extent\nRW 2048 FLAT "a.raw" 0\nRW 100 FLAT "a.raw" 5\n';

test(`vmdk descriptor mutants (${MUTANTS}): same refusal or same info as both oracles`, () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 1));
    const rnd = lcg(99);
    const mism: string[] = [];
    for (let i = 0; i < MUTANTS; i++) {
      let s = BASE;
      for (let j = 1 + Math.floor(rnd() * 3); j > 0; j--) {
        const pos = Math.floor(rnd() * s.length);
        const tok = TOKENS[Math.floor(rnd() * TOKENS.length)];
        const del = Math.floor(rnd() * 4);
        s = s.slice(0, pos) + tok + s.slice(pos + del);
      }
      const path = join(dir, 'd.vmdk');
      writeFileSync(path, s, 'latin1');
      const rs = VERSIONS.map((v) => spawnSync(oracle(v), ['info', '-f', 'vmdk', '--output=json', path], { encoding: 'utf8', timeout: 20000 }));
      if (rs.some((r) => r.status === null || r.status > 1) || rs[0].status !== rs[1].status) continue;
      let ours: ImageError | undefined;
      let info;
      try {
        const o = openAsHost(path, false);
        info = o.image.info();
        o.close();
      } catch (e) {
        if (!(e instanceof ImageError)) throw e;
        ours = e;
      }
      const said = rs[0].stderr.trimEnd().replace(`qemu-img: Could not open '${path}': `, '');
      if (rs[0].status === 1 && said.startsWith("qemu-img: Can't get image size") && ours) continue;
      if (rs[0].status === 1) {
        if (!ours) mism.push(`${i} ${JSON.stringify(s)}: qemu: ${said}; we opened`);
        else if (ours.message.trimEnd() !== said) mism.push(`${i} ${JSON.stringify(s)}: qemu: ${said}; we: ${ours.message}`);
      } else if (ours) mism.push(`${i} ${JSON.stringify(s)}: qemu opened; we: ${ours.message}`);
      else {
        const d = infoDifferences(info!, JSON.parse(rs[0].stdout));
        if (d.length) mism.push(`${i} ${JSON.stringify(s)}: ${d.join('; ')}`);
      }
    }
    assert.deepEqual(mism, []);
  } finally {
    cleanup();
  }
});
