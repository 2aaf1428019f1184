// qed through the built CLI against both oracles: info, map, backing chains, hostile headers.
import { after, before } from 'node:test';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../../differential/harness.ts';
import { cliCases, cliErrorCases, settle } from '../qcow/cli-cases.ts';
import { writeSource } from '../qcow/legacy-helpers.ts';

const images = new ImageDir('qed-cli');

before(() => {
  writeSource(images.path('src.raw'), 3 * 1024 * 1024 + 512, 51);
  images.img('convert', '-f', 'raw', '-O', 'qed', '-o', 'cluster_size=16k', 'src.raw', 'base.qed');
  images.img('create', '-f', 'qed', '-b', 'base.qed', '-F', 'qed', 'top.qed', '5M');
  images.io('-c', 'write -P 0x5a 1000k 70k', '-c', 'write -z 64k 128k', 'top.qed');
  images.img('create', '-f', 'qed', '-b', 'src.raw', '-F', 'raw', 'over-raw.qed');
  images.io('-c', 'write -P 0x11 1536k 100k', 'over-raw.qed');
  const bad = Buffer.alloc(3 * 4096);
  bad.writeUInt32LE(0x00444551, 0);
  bad.writeUInt32LE(4096, 4);
  bad.writeUInt32LE(3, 8); // table size not a power of two
  writeFileSync(images.path('bad-table.qed'), bad);
  bad.writeUInt32LE(2, 8);
  bad.writeUInt32LE(1, 12);
  bad.writeBigUInt64LE(4097n, 40); // L1 not cluster-aligned
  bad.writeBigUInt64LE(1n << 20n, 48);
  writeFileSync(images.path('bad-l1.qed'), bad);
  settle(images.dir);
});

after(() => images.remove());

cliCases(() => images.dir, 'qed', ['base.qed', 'top.qed', 'over-raw.qed'], { chains: ['top.qed', 'over-raw.qed'], sandboxed: ['top.qed'] });
cliErrorCases(() => images.dir, 'qed', ['bad-table.qed', 'bad-l1.qed']);
