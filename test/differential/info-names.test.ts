// Names taken from an image (backing file, snapshot tags, bitmap names) that are not plain text:
// JSON must escape them exactly as qemu-img does; human output must not pass control characters
// to the terminal (qemu-img prints them raw, instar shows them as \xHH escapes).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageDir, assertSameOutput, SANDBOXED } from './harness.ts';
import { runInstar, runQemu } from '../helpers/oracles.ts';

const images = new ImageDir('info-names');
const HOSTILE = 'a\tb\u00e9\u{1F600}\u007f\u001b[31mred"\\x\nimage: forged';
const SNAPSHOT = 'tag\u001b]0;title\u0007 \u00fcml\u00e4ut';

before(() => {
  images.img('create', '-f', 'qcow2', 'named.qcow2', '1M');
  images.img('snapshot', '-c', SNAPSHOT, 'named.qcow2');
  images.img('bitmap', '--add', 'named.qcow2', 'bitmap\u001b[2J');
  // Last: with this backing file, qemu-img could no longer open the image to change it.
  images.img('rebase', '-u', '-b', HOSTILE, '-F', 'raw', 'named.qcow2');
});

after(() => images.remove());

test('JSON escapes names from the image exactly as qemu-img does', async () => {
  await assertSameOutput(images.dir, ['info', '--output=json', 'named.qcow2']);
});

test('human output shows control characters as escapes and printable text unchanged', async () => {
  const sandbox = SANDBOXED ? [] : ['--sandbox=none'];
  for (const version of ['7.2', '10.0'] as const) {
    const env = { TZ: 'UTC' };
    const qemu = runQemu(version, ['info', 'named.qcow2'], { cwd: images.dir, env });
    const ours = runInstar(['info', 'named.qcow2', '--qemu-version', version, ...sandbox], { cwd: images.dir, env });
    assert.equal(ours.status, 0, ours.stderr);
    // Only the line breaks of the layout itself remain as control characters.
    assert.doesNotMatch(ours.stdout, /[\x00-\x09\x0b-\x1f\x7f]/);
    assert.ok(ours.stdout.includes('backing file: a\\x09b\u00e9\u{1F600}\\x7f\\x1b[31mred"\\x\\x0aimage: forged\n'), ours.stdout);
    assert.ok(ours.stdout.includes('tag\\x1b]0;title\\x07 \u00fcml\u00e4ut'), ours.stdout);
    assert.ok(ours.stdout.includes('name: bitmap\\x1b[2J\n'), ours.stdout);
    // Apart from those escapes, the text is qemu-img's.
    const unescaped = ours.stdout.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    assert.equal(unescaped, qemu.stdout);
  }
});
