// parallels through the built CLI against both oracles: info, map, hostile headers.
import { after, before } from 'node:test';
import { readFileSync, writeFileSync } from 'node:fs';
import { ImageDir } from '../../differential/harness.ts';
import { cliCases, cliErrorCases, settle } from '../qcow/cli-cases.ts';
import { writeSource } from '../qcow/legacy-helpers.ts';

const images = new ImageDir('parallels-cli');

before(() => {
  writeSource(images.path('src.raw'), 3 * 1024 * 1024 + 512, 81);
  images.img('convert', '-f', 'raw', '-O', 'parallels', 'src.raw', 'converted.hds');
  images.img('convert', '-f', 'raw', '-O', 'parallels', '-o', 'cluster_size=64k', 'src.raw', 'small-clusters.hds');
  images.img('create', '-f', 'parallels', 'written.hds', '8M');
  images.io('-c', 'write -P 0x5a 3M 70k', 'written.hds');
  const h = readFileSync(images.path('written.hds')).subarray(0, 4096);
  writeFileSync(images.path('zero-tracks.hds'), Buffer.from(h).fill(0, 28, 32));
  const catalog = Buffer.from(h);
  catalog.writeUInt32LE(0x7fffffff, 32);
  writeFileSync(images.path('catalog.hds'), catalog);
  settle(images.dir);
});

after(() => images.remove());

cliCases(() => images.dir, 'parallels', ['converted.hds', 'small-clusters.hds', 'written.hds'], { sandboxed: ['written.hds'] });
cliErrorCases(() => images.dir, 'parallels', ['zero-tracks.hds', 'catalog.hds']);
