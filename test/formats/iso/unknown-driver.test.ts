// qemu has no "iso" driver: naming it (-f iso, --image-opts driver=iso, -O iso) gets qemu's own
// refusal, word for word and with qemu's exit status, on both oracles; detection still says iso.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../../differential/harness.ts';
import { runInstar } from '../../helpers/oracles.ts';
import { iso9660 } from './build.ts';

describe('iso: a name instar detects, not a driver qemu has', () => {
  let images: ImageDir;
  before(() => {
    images = new ImageDir('iso-driver');
    writeFileSync(images.path('cd.iso'), iso9660(600));
  });
  after(() => images.remove());

  it('-f iso, --image-opts driver=iso and -O iso are refused as both oracles refuse them', async () => {
    for (const args of [
      ['info', '-f', 'iso', 'cd.iso'],
      ['info', '--image-opts', 'driver=iso,file.filename=cd.iso'],
      ['map', '-f', 'iso', 'cd.iso'],
      ['compare', '-f', 'iso', 'cd.iso', 'cd.iso'],
      ['convert', '-f', 'iso', 'cd.iso', '-O', 'raw', 'out.raw'],
      ['convert', '-f', 'raw', 'cd.iso', '-O', 'iso', 'out.iso'],
    ]) {
      await assertSameOutput(images.dir, args);
    }
  });

  it('detection still reports iso', () => {
    const r = runInstar(['info', 'cd.iso'], { cwd: images.dir });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^file format: iso$/m);
  });
});
