// `map` against both oracles, byte for byte: every corpus image in both output forms, ranges
// (--start-offset/--max-length), option errors, and a few runs in the default sandbox.
import { after, before, describe, test } from 'node:test';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';
import { buildCorpus } from './images.ts';
import { LONG } from '../helpers/long.ts';

const images = new ImageDir('map');
let corpus: { file: string; format: string }[] = [];

before(() => {
  corpus = buildCorpus(images);
});
after(() => images.remove());

const same = (args: string[], sandboxed = false) => assertSameOutput(images.dir, ['map', ...args], { sandboxed });

describe('map corpus', { concurrency: 2 }, () => {
  test('corpus has at least 40 images', () => {
    if (corpus.length < 40) throw new Error(`only ${corpus.length} images`);
  });
  test('every image, human and json', { concurrency: 4 }, async (t) => {
    // Short tier: every image in JSON (every field of every entry); human output (those entries
    // merged, data at an offset only) for every other image in corpus order, which takes in every
    // format and each kind qemu refuses (compressed qcow2, streamOptimized vmdk, vhdx). Long tier: all.
    await Promise.all(corpus.flatMap(({ file, format }, i) =>
      (LONG || i % 2 === 1 ? ['human', 'json'] : ['json']).map((output) => t.test(`${file} ${output}`, () => same(['-f', format, `--output=${output}`, file])))));
  });
});

const RANGED = ['data.qcow2', 'four.qcow2', 'holes.raw', 'sparse.vmdk', 'sub.qcow2', 'ext.qcow2'];
const RANGES = [['-s', '1000', '-l', '3M'], ['--start-offset=1M'], ['--max-length=0'], ['-s', '100M'], ['-s', '0.5M', '-l', '1.5M'], ['-l', '9E']];

describe('map ranges', { concurrency: 2 }, () => {
  for (const [i, file] of RANGED.entries()) {
    test(file, { concurrency: 4 }, async (t) => {
      const format = corpus.find((c) => c.file === file)!.format;
      // JSON shows every field of every entry; human output once per file for its merging. Short
      // tier: each file every other range (alternating by file: each range on three files, one parser).
      const ranges = LONG ? RANGES : RANGES.filter((_, k) => (k + i) % 2 === 0);
      const runs = [...ranges.map((range) => ['--output=json', ...range]), ['--output=human', ...RANGES[0]]];
      await Promise.all(runs.map((args) => t.test(args.join(' '), () => same(['-f', format, ...args, file]))));
    });
  }
});

const BAD = [
  ['-s', '-1'], ['-s', 'abc'], ['-s', '1x'], ['-l', '-1'], ['-l', '18446744073709551615'], ['-s', '8E'], ['-s', '1.5'],
  ['-s', '.5k'], ['-s', '0x10'], ['-s', '0x1k'], ['-s', '-0'], ['-s', ' 5'], ['-s', '5 '], ['-s', ''], ['-l', '1.5b'],
  ['--output=xml'], ['-s', 'x', '--output=yy'], ['--output=yy', '-s', 'x'],
];

describe('map option errors', { concurrency: 6 }, () => {
  for (const args of BAD) test(args.join(' '), () => same([...args, '-f', 'qcow2', 'data.qcow2']));
  test('no file', () => same(['-f', 'qcow2']));
  test('two files', () => same(['data.qcow2', 'top.qcow2']));
  test('missing file', () => same(['nothere.qcow2']));
  test('unknown format', () => same(['-f', 'nosuch', 'data.qcow2']));
  test('wrong format', () => same(['-f', 'vpc', 'data.qcow2']));
  test('image-opts', () => same(['--image-opts', 'driver=qcow2,file.filename=top.qcow2']));
  test('image-opts and -f', () => same(['--image-opts', '-f', 'qcow2', 'driver=qcow2,file.filename=top.qcow2']));
  test('image-opts with an option the format lacks', () => same(['--image-opts', 'driver=qcow2,file.filename=top.qcow2,foo=bar']));
  test('missing backing file', () => same(['dangling.qcow2']));
  test('missing data file', () => same(['no-data.qcow2']));
  test('missing vmdk extent', () => same(['--output=json', 'no-extent.vmdk']));
  test('-U and --object are accepted', () => same(['-U', '--object', 'secret,id=s0,data=x', '--output=json', 'top.qcow2']));
});

describe('map in the default sandbox', { concurrency: 3 }, () => {
  for (const file of ['four.qcow2', 'ext.qcow2', 'split.vmdk', 'many.qcow2']) {
    test(file, async () => {
      await same(['--output=json', file], true);
      // Short tier: human output through the guest for the image with the most entries (streamed); long tier: each.
      if (LONG || file === 'many.qcow2') await same([file], true);
    });
  }
});

// qemu asks the file system (SEEK_DATA) and sees zero-allocated blocks of a raw file as data, and
// the unwritten clusters of a metadata-preallocated qcow2 as DATA|ZERO; so does instar, whose host
// asks lseek through koffi (host/data-runs.ts). These were documented differences until then.
test('raw zero-allocated blocks: data, as qemu sees them', async () => {
  await assertSameOutput(images.dir, ['map', '-f', 'raw', '--output=json', 'zeroed.raw']);
});

test('qcow2 metadata preallocation: unwritten clusters are data reading as zeros', async () => {
  await assertSameOutput(images.dir, ['map', '--output=json', 'prealloc-meta.qcow2']);
});
