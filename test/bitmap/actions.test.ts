// qemu-img bitmap, differential against qemu-img 7.2 and 10.0: every action alone and combined,
// on images with and without bitmap data, several cluster sizes, in-use bitmaps, version 2 and
// raw images, merges within the image and from a -b source; the messages, the exit status and
// the resulting files must be byte-identical. Most cases run in-process; a few through the CLI
// and the real sandbox.
import { after, before, test } from 'node:test';
import { VERSIONS } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { compareBitmap, Workspace } from './harness.ts';
import { buildFixtures, type Fixtures } from './fixtures.ts';

const ws = new Workspace();
let files: Fixtures;
before(() => { files = buildFixtures(ws); });
after(() => ws.remove());

/** [image, bitmap args] (the image name comes last but one, as qemu-img takes it). */
const CASES: [string, string[]][] = [
  ['plain.qcow2', ['--add', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '-g', '512', '--disable', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '-g', '2G', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '--remove', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '--add', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--remove', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '-g', '1000', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '-g', '4G', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', '-g', '4294971392', 'plain.qcow2', 'b']],
  ['plain.qcow2', ['--add', 'plain.qcow2', '']],
  ['plain.qcow2', ['--add', 'plain.qcow2', 'x'.repeat(1024)]],
  ['plain.qcow2', ['--add', 'plain.qcow2', 'é'.repeat(511)]],
  ['data.qcow2', ['--add', 'data.qcow2', 'e']],
  ['data.qcow2', ['--add', 'data.qcow2', 'c']],
  ['data.qcow2', ['--remove', 'data.qcow2', 'b']],
  ['data.qcow2', ['--remove', 'data.qcow2', 'zz']],
  ['data.qcow2', ['--clear', 'data.qcow2', 'b']],
  ['data.qcow2', ['--enable', 'data.qcow2', 'c']],
  ['data.qcow2', ['--disable', 'data.qcow2', 'b']],
  ['data.qcow2', ['--merge', 'c', 'data.qcow2', 'd']],
  ['data.qcow2', ['--merge', 'b', 'data.qcow2', 'c']],
  ['data.qcow2', ['--merge', 'b', 'data.qcow2', 'd']],
  ['data.qcow2', ['--merge', 'zz', 'data.qcow2', 'c']],
  ['data.qcow2', ['--merge', 'c', '--remove', '--add', '-g', '1k', 'data.qcow2', 'b']],
  ['data.qcow2', ['--clear', '--merge', 'b', 'data.qcow2', 'b']],
  ['data.qcow2', ['-b', 'src.qcow2', '--merge', 's', 'data.qcow2', 'c']],
  ['data.qcow2', ['-b', 'src.qcow2', '-F', 'qcow2', '--merge', 's', 'data.qcow2', 'd']],
  ['data.qcow2', ['-b', 'src.qcow2', '--merge', 'zz', 'data.qcow2', 'd']],
  ['data.qcow2', ['-b', 'other.qcow2', '--merge', 's', 'data.qcow2', 'd']],
  ['data.qcow2', ['-b', 'missing.qcow2', '--merge', 's', 'data.qcow2', 'd']],
  ['data.qcow2', ['-b', 'srcover.qcow2', '--merge', 's', 'data.qcow2', 'b']],
  ['data.qcow2', ['-b', 'src.qcow2', '-F', 'vmdk', '--merge', 's', 'data.qcow2', 'b']],
  ['data.qcow2', ['-b', 'src.qcow2', '-F', 'raw', '--merge', 's', 'data.qcow2', 'b']],
  ['data.qcow2', ['-b', 'data.qcow2', '--merge', 'b', 'data.qcow2', 'd']],
  ['small.qcow2', ['--add', 'small.qcow2', 'e']],
  ['small.qcow2', ['--merge', 'b', 'small.qcow2', 'c']],
  ['small.qcow2', ['--merge', 'c', '--disable', 'small.qcow2', 'b']],
  ['small.qcow2', ['--remove', 'small.qcow2', 'b']],
  ['big.qcow2', ['--add', 'big.qcow2', 'e']],
  ['big.qcow2', ['--clear', 'big.qcow2', 'b']],
  ['edge.qcow2', ['--add', '-g', '512', 'edge.qcow2', 'c']],
  ['edge.qcow2', ['--merge', 'b', '--disable', 'edge.qcow2', 'b']],
  ['edge.qcow2', ['--remove', 'edge.qcow2', 'b']],
  ['overlay.qcow2', ['--add', 'overlay.qcow2', 'c']],
  ['overlay.qcow2', ['--remove', 'overlay.qcow2', 'b']],
  ['stale.qcow2', ['--add', 'stale.qcow2', 'c']],
  ['stale.qcow2', ['--remove', 'stale.qcow2', 'b']],
  ['inuse.qcow2', ['--clear', 'inuse.qcow2', 'b']],
  ['inuse.qcow2', ['--enable', 'inuse.qcow2', 'b']],
  ['inuse.qcow2', ['--merge', 'b', 'inuse.qcow2', 'c']],
  ['inuse.qcow2', ['--merge', 'c', 'inuse.qcow2', 'b']],
  ['inuse.qcow2', ['--remove', 'inuse.qcow2', 'b']],
  ['inuse.qcow2', ['--add', 'inuse.qcow2', 'b']],
  ['v2.qcow2', ['--add', 'v2.qcow2', 'b']],
  ['v2.qcow2', ['--disable', 'v2.qcow2', 'b']],
  ['orphan.qcow2', ['--add', 'orphan.qcow2', 'b']],
  ['mistyped.qcow2', ['--add', 'mistyped.qcow2', 'b']],
  ['data.qcow2', ['-b', 'orphan.qcow2', '--merge', 's', 'data.qcow2', 'b']],
  ['disk.raw', ['-f', 'raw', '--add', 'disk.raw', 'b']],
  ['disk.raw', ['-f', 'raw', '--add', '-g', '100', 'disk.raw', 'b']],
  ['disk.raw', ['-f', 'raw', '--clear', 'disk.raw', 'b']],
];

/** Option errors, before any image is opened. */
const USAGE: string[][] = [
  ['plain.qcow2', 'b'],
  ['--add', 'plain.qcow2'],
  ['--add', 'plain.qcow2', 'b', 'c'],
  ['-g', '4096', '--remove', 'plain.qcow2', 'b'],
  ['-g', '-1', '--add', 'plain.qcow2', 'b'],
  ['-g', '1x', '--add', 'plain.qcow2', 'b'],
  ['-F', 'qcow2', '--add', 'plain.qcow2', 'b'],
  ['-b', 'src.qcow2', '--add', 'plain.qcow2', 'b'],
  ['-f', 'vmdk', '--add', 'plain.qcow2', 'b'],
];

const pick = (image: string, args: string[]): Fixtures => {
  const out: Fixtures = { [image]: files[image] };
  if (image === 'overlay.qcow2' || image === 'mistyped.qcow2') out['base.qcow2'] = files['base.qcow2'];
  const b = args.indexOf('-b');
  if (b >= 0 && files[args[b + 1]]) out[args[b + 1]] = files[args[b + 1]];
  return out;
};

for (const [vi, version] of VERSIONS.entries()) {
  test(`bitmap actions match qemu-img ${version} byte for byte`, async () => {
    for (const [image, args] of CASES) await compareBitmap(ws, version, pick(image, args), args);
  });

  test(`bitmap option errors match qemu-img ${version}`, async () => {
    for (const args of USAGE) await compareBitmap(ws, version, { 'plain.qcow2': files['plain.qcow2'], 'src.qcow2': files['src.qcow2'] }, args);
  });

  test(`bitmap through the CLI and the real sandbox matches qemu-img ${version}`, async () => {
    // The guest only carries each result across: the short tier sends each case through it under
    // one release (7.2 the first and last, 10.0 the second) and runs it in-process under the
    // other; the long tier sends all three through it under both.
    const guest = (k: number) => LONG || k % 2 === vi;
    await compareBitmap(ws, version, pick('data.qcow2', []), ['--add', '-g', '8k', 'data.qcow2', 'e'], { sandboxed: guest(0) });
    await compareBitmap(ws, version, pick('data.qcow2', ['-b', 'src.qcow2']), ['-b', 'src.qcow2', '--merge', 's', 'data.qcow2', 'b'], { sandboxed: guest(1) });
    await compareBitmap(ws, version, pick('inuse.qcow2', []), ['--clear', 'inuse.qcow2', 'b'], { sandboxed: guest(2) });
  });
}
