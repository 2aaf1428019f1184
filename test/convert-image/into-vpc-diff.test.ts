// convert -n into a differencing VHD against qemu-img 7.2 and 10.0. qemu's vpc driver has no
// backing files: it reads and writes a differencing disk as a dynamic one and never opens its
// parent, so instar must do the same, byte for byte (blocks written in place or allocated at the
// end of the used area, locator data after the BAT overwritten as qemu overwrites it), leave the
// parent file alone, and leave an image qemu opens after every prefix of its writes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { sameInto, sourceDisk } from './into-harness.ts';
import { everyPrefixOpens } from './into-crash.ts';
import { utf16, vhd } from '../adversarial/craft/vhd.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;

const sum = (b: Uint8Array) => ~b.reduce((n, x) => n + x, 0) >>> 0;

/** A qemu-made dynamic VHD turned differencing: footer type 4 (both copies), a parent name. */
function differencing(from: string, to: string): void {
  const f = readFileSync(at(from));
  const dyn = f.subarray(512, 1536);
  utf16('parent.vhd').swap16().copy(dyn, 64);
  dyn.writeUInt32BE(0, 36);
  dyn.writeUInt32BE(sum(dyn), 36);
  for (const pos of [0, f.length - 512]) {
    const footer = f.subarray(pos, pos + 512);
    footer.writeUInt32BE(4, 60);
    footer.writeUInt32BE(0, 64);
    footer.writeUInt32BE(sum(footer), 64);
  }
  writeFileSync(at(to), f);
}

before(() => {
  s = scratch();
  const disk = sourceDisk(9);
  writeFileSync(at('src.raw'), disk);
  writeFileSync(at('small.raw'), disk.subarray(0, 1000 * 1024));
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  // The parent the differencing disks name: it must never be written.
  qemu(['create', '-q', '-f', 'vpc', at('parent.vhd'), '5M']);
  qemu(['-f', 'vpc', '-c', 'write -P 0x77 0 5M', at('parent.vhd')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vpc', at('dyn-empty.vhd'), '4M']);
  differencing('dyn-empty.vhd', 'empty.vhd');
  // Blocks 2 and 0 there already, in that order.
  qemu(['create', '-q', '-f', 'vpc', '-o', 'force_size=on', at('dyn-part.vhd'), '6M']);
  qemu(['-f', 'vpc', '-c', 'write -P 0x33 4M 4k', '-c', 'write -P 0x44 100k 4k', at('dyn-part.vhd')], undefined, '10.0', 'qemu-io');
  differencing('dyn-part.vhd', 'part.vhd');
  // Hand-made, as other tools lay it out: the parent's locator data right after the BAT.
  writeFileSync(at('located.vhd'), vhd({ parentName: 'parent.vhd', currentSize: 4n * BigInt(MiB), maxTableEntries: 2, locators: [{ code: 'W2ru', data: utf16('.\\parent.vhd') }] }));
});
after(() => s.cleanup());

test('convert -n into a differencing VHD (sandboxed): written as a dynamic one, its parent untouched', async () => {
  const parent = readFileSync(at('parent.vhd'));
  for (const name of ['empty.vhd', 'part.vhd']) {
    const runs = await sameInto(s.dir, name, name, ['-n', '-O', 'vpc', '-f', 'qcow2', '../src.qcow2', name], true);
    assert.ok(runs.every((r) => r.result.status === 0 && !r.target.equals(readFileSync(at(name)))), `${name}: not written`);
  }
  assert.ok(readFileSync(at('parent.vhd')).equals(parent), 'the parent was written');
});

test('convert -n into a differencing VHD: a raw source, -S 0, --target-is-zero, --target-image-opts, locator data after the BAT', async () => {
  await sameInto(s.dir, 'raw', 'part.vhd', ['-n', '-O', 'vpc', '-f', 'raw', '../src.raw', 'part.vhd']);
  await sameInto(s.dir, 'S0', 'part.vhd', ['-n', '-O', 'vpc', '-S', '0', '-f', 'raw', '../src.raw', 'part.vhd']);
  await sameInto(s.dir, 'is-zero', 'part.vhd', ['-n', '-O', 'vpc', '--target-is-zero', '-f', 'qcow2', '../src.qcow2', 'part.vhd']);
  await sameInto(s.dir, 'opts', 'part.vhd', ['-n', '-p', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=vpc,file.filename=part.vhd']);
  const [located] = await sameInto(s.dir, 'located', 'located.vhd', ['-n', '-O', 'vpc', '-f', 'raw', '../small.raw', 'located.vhd']);
  assert.equal(located.result.status, 0, located.result.stderr);
});

test('convert -n into a differencing VHD smaller than the source: qemu\'s message, nothing written', async () => {
  const [ours] = await sameInto(s.dir, 'smaller', 'located.vhd', ['-n', '-O', 'vpc', '-f', 'raw', '../src.raw', 'located.vhd']);
  assert.equal(ours.result.status, 1);
  assert.ok(ours.target.equals(readFileSync(at('located.vhd'))), 'the target was written');
});

test('convert -n into a differencing VHD stopped after each prefix of its writes leaves an image qemu-img opens and checks', () => {
  const k = everyPrefixOpens({ source: at('src.raw'), target: at('part.vhd'), format: 'vpc', dir: s.dir, label: 'diff' });
  assert.ok(k > 3, `${k} writes`);
});
