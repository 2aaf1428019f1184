// vdi through the built CLI against both oracles: info, map, hostile headers.
import { after, before } from 'node:test';
import { readFileSync, writeFileSync } from 'node:fs';
import { ImageDir } from '../../differential/harness.ts';
import { cliCases, cliErrorCases, settle } from '../qcow/cli-cases.ts';
import { writeSource } from '../qcow/legacy-helpers.ts';

const images = new ImageDir('vdi-cli');

before(() => {
  writeSource(images.path('src.raw'), 3 * 1024 * 1024 + 512, 71);
  images.img('convert', '-f', 'raw', '-O', 'vdi', 'src.raw', 'dynamic.vdi');
  images.img('convert', '-f', 'raw', '-O', 'vdi', '-o', 'static=on', 'src.raw', 'static.vdi');
  images.img('create', '-f', 'vdi', 'written.vdi', '8M');
  images.io('-c', 'write -P 0x5a 3M 70k', '-c', 'write -z 5M 64k', 'written.vdi');
  const h = readFileSync(images.path('written.vdi')).subarray(0, 4096);
  writeFileSync(images.path('version.vdi'), Buffer.from(h).fill(3, 0x44, 0x45));
  const parent = Buffer.from(h);
  parent[0x1b8] = 1;
  writeFileSync(images.path('parent.vdi'), parent);
  settle(images.dir);
});

after(() => images.remove());

cliCases(() => images.dir, 'vdi', ['dynamic.vdi', 'static.vdi', 'written.vdi'], { sandboxed: ['static.vdi'] });
cliErrorCases(() => images.dir, 'vdi', ['version.vdi', 'parent.vdi']);
