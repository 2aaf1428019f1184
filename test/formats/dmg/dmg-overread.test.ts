// A dmg raw chunk that claims more sectors than it stores: qemu sizes its chunk buffer by the
// stored length and copies the other sectors from past that buffer (heap bytes), so even
// `qemu-img compare X X` finds a mismatch. instar reads zeros there. This is a kept difference
// (a fuzz finding, dmg-rsrc2 case 490 of campaign 7303): the differential fuzzer's classifier
// explains it by the rule 'qemu-self-mismatch', tested here on real oracle runs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { ImageDir } from '../../differential/harness.ts';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { explain, type CommandRun } from '../../fuzz/diff-classify.ts';
import type { ToolResult } from '../../fuzz/diff-tools.ts';
import { buildDmg, mishBlock, sectors, UDRW } from './build.ts';

const images = new ImageDir('dmg-overread');
const stored = sectors(4, 1);

before(() => {
  // 4 sectors stored, 32772 claimed, 12 in the disk.
  writeFileSync(images.path('overread.dmg'), buildDmg(stored, [mishBlock(0, [{ type: UDRW, sector: 0, sectorCount: 32772, offset: 0, length: stored.length }])], 12));
  writeFileSync(images.path('whole.dmg'), buildDmg(sectors(12, 2), [mishBlock(0, [{ type: UDRW, sector: 0, sectorCount: 12, offset: 0, length: 12 * 512 }])], 12));
});
after(() => images.remove());

const tool = (r: { stdout: string; stderr: string; status: number | null }): ToolResult => ({ ...r, signal: null, timedOut: false, ms: 0 });

function compareRun(file: string, version: (typeof VERSIONS)[number]): CommandRun {
  const args = ['compare', '-f', 'dmg', '-F', 'dmg', file, file];
  const qemu = runQemu(version, args, { cwd: images.dir });
  const instar = runInstar([...args, '--qemu-version', version, '--sandbox=none'], { cwd: images.dir });
  return { command: 'compare', format: 'dmg', unsafeQuirks: false, qemu: tool(qemu), instar: tool(instar) };
}

test('dmg raw chunk past its stored bytes: qemu compares the image unequal to itself, instar reads zeros; the classifier explains it', () => {
  for (const v of VERSIONS) {
    const run = compareRun('overread.dmg', v);
    assert.equal(run.qemu.stdout, 'Content mismatch at offset 2048!\n', `qemu ${v}`);
    assert.equal(run.qemu.status, 1);
    assert.equal(run.instar.stdout, 'Images are identical.\n');
    assert.equal(run.instar.status, 0);
    assert.equal(explain(run)?.name, 'qemu-self-mismatch');
  }
  const out = runInstar(['convert', '-f', 'dmg', '-O', 'raw', 'overread.dmg', 'overread.raw', '--sandbox=none'], { cwd: images.dir });
  assert.equal(out.status, 0, out.stderr);
  assert.deepEqual(readFileSync(images.path('overread.raw')), Buffer.concat([stored, Buffer.alloc(8 * 512)]));
});

test('qemu-self-mismatch explains nothing else: agreeing runs, or instar finding a mismatch too', () => {
  const agreed = compareRun('whole.dmg', '10.0');
  assert.equal(agreed.qemu.stdout, 'Images are identical.\n');
  assert.equal(explain(agreed), undefined);
  const mismatch = tool({ stdout: 'Content mismatch at offset 2048!\n', stderr: '', status: 1 });
  assert.equal(explain({ ...agreed, qemu: mismatch, instar: mismatch }), undefined);
  assert.equal(explain({ ...agreed, command: 'convert', qemu: mismatch }), undefined);
});
