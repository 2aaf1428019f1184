// convert -n --bitmaps into an existing qcow2 image against qemu-img 7.2 and 10.0: after the copy
// each source bitmap is added (granularity, enabled state) and filled from the source; the
// target's own bitmaps record the copy's writes and keep their place. Failures end the convert
// with status 1 after the copy: a name the target has already (the bitmaps added before it
// stay), a target of another size (the bitmap that could not be filled is removed), a version 2
// target (refused before the copy, before the size check). Status, output and target bytes equal.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { sameInto } from './into-harness.ts';
import { buildSources } from './bitmaps-fixtures.ts';
import { everyPrefixOpens } from './into-crash.ts';

let s: Scratch;

before(() => {
  s = scratch();
  // src/data.qcow2 (4 MiB): bitmaps b, c (512-byte granularity, disabled) and d, data under them;
  // src/inuse.qcow2 (1 MiB): bitmap b in use (inconsistent), c fine.
  buildSources(s.dir);
  const q = (...args: string[]) => qemu(args, s.dir);
  q('create', '-q', '-f', 'qcow2', 'same.qcow2', '4M');
  q('create', '-q', '-f', 'qcow2', 'larger.qcow2', '8M');
  q('create', '-q', '-f', 'qcow2', 'smaller.qcow2', '1M');
  q('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '4M');
  q('create', '-q', '-f', 'qcow2', 'has-c.qcow2', '4M');
  q('bitmap', '--add', 'has-c.qcow2', 'c');
  // Its own enabled bitmap records the copy's writes (data where the source has zeros included).
  q('create', '-q', '-f', 'qcow2', 'own.qcow2', '4M');
  q('bitmap', '--add', 'own.qcow2', 'zz');
  qemu(['-f', 'qcow2', '-c', 'write -P 3 2M 64k', join(s.dir, 'own.qcow2')], undefined, '10.0', 'qemu-io');
  q('create', '-q', '-f', 'qcow2', 'one.qcow2', '1M');
});
after(() => s.cleanup());

const into = (target: string, ...args: string[]) => ['-n', '--bitmaps', ...args, '-O', 'qcow2', target];

test('convert -n --bitmaps into a qcow2 of the same size: the bitmaps added after the copy (sandboxed once)', async () => {
  await sameInto(s.dir, 'same', 'same.qcow2', into('same.qcow2', '../src/data.qcow2'), true);
  await sameInto(s.dir, 'own', 'own.qcow2', into('own.qcow2', '../src/data.qcow2'));
});

test('convert -n --bitmaps: a name the target has, a larger target, a version 2 or smaller target: qemu\'s words, status 1', async () => {
  await sameInto(s.dir, 'has-c', 'has-c.qcow2', into('has-c.qcow2', '../src/data.qcow2'));
  await sameInto(s.dir, 'larger', 'larger.qcow2', into('larger.qcow2', '../src/data.qcow2'));
  await sameInto(s.dir, 'v2', 'v2.qcow2', into('v2.qcow2', '../src/data.qcow2'));
  await sameInto(s.dir, 'smaller', 'smaller.qcow2', into('smaller.qcow2', '../src/data.qcow2'));
});

test('convert -n --bitmaps from a source with an inconsistent bitmap: refused, or skipped with a warning', async () => {
  await sameInto(s.dir, 'inuse', 'one.qcow2', into('one.qcow2', '../src/inuse.qcow2'));
  await sameInto(s.dir, 'inuse-skip', 'one.qcow2', into('one.qcow2', '--skip-broken-bitmaps', '../src/inuse.qcow2'));
  await sameInto(s.dir, 'two-sources', 'larger.qcow2', into('larger.qcow2', '../src/data.qcow2', '../src/data.qcow2'));
});

test('convert -n --bitmaps stopped after each prefix of its writes leaves an image qemu-img opens and checks', () => {
  const c = { source: join(s.dir, 'src', 'data.qcow2'), sourceFormat: 'qcow2', target: join(s.dir, 'own.qcow2'), format: 'qcow2', dir: s.dir, label: 'bitmaps', options: { bitmaps: true } };
  assert.ok(everyPrefixOpens(c, 200) > 5);
});
