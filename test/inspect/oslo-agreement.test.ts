// instar's inspector against oslo.utils' recorded verdicts (oslo-verdicts.ts) on the corpus built
// here at test time: the same safe/unsafe verdict, the same format (under oslo's names), the same
// virtual size where oslo computes a real one, and a failing instar check for every oslo failure.
// The only disagreements allowed are STRICTER_THAN_OSLO's, and those must be instar refusing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { buildCorpus, removeCorpus } from './corpus.ts';
import { OSLO_VERDICTS, STRICTER_THAN_OSLO } from './oslo-verdicts.ts';
import { inspect } from '../../src/inspect/inspect.ts';
import type { InspectReport } from '../../src/inspect/types.ts';

let corpus: Map<string, string>;
const reports = new Map<string, InspectReport>();

before(async () => {
  corpus = buildCorpus();
  for (const [name, path] of corpus) reports.set(name, await inspect(path));
});
after(() => removeCorpus(corpus));

/** The name oslo.utils gives what instar found. */
function osloName(r: InspectReport, detected = r.detected[0]): string {
  if (detected === undefined) return 'raw';
  if (detected === 'raw:mbr' || detected === 'raw:gpt') return 'gpt';
  if (detected === 'vpc:fixed') return 'raw'; // oslo looks for the VHD cookie at offset 0 only
  if (detected === 'vpc') return 'vhd';
  if (detected === 'qcow') return 'qcow2'; // oslo's qcow2 inspector matches the v1 magic too
  if (['parallels', 'bochs', 'cloop', 'dmg'].includes(detected)) return 'raw'; // unknown to oslo
  return detected;
}

/** instar checks that answer each oslo check. */
const OSLO_CHECKS: Record<string, string[]> = {
  backing_file: ['backing-file'],
  data_file: ['data-file'],
  unknown_features: ['qcow2-features', 'allowed-format'],
  footer: ['vmdk-footer'],
  // oslo's descriptor check also fails when its header parse gave up before reaching the descriptor.
  descriptor: ['vmdk-header', 'vmdk-descriptor', 'vmdk-create-type', 'vmdk-extents'],
  banned: ['allowed-format'],
  mbr: ['mbr'],
};

/** Formats whose oslo virtual size is the image's (raw-like ones report bytes read so far). */
const SIZED = ['qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso'];

test('the corpus has at least 25 images, every one with a recorded oslo verdict', () => {
  assert.ok(corpus.size >= 25);
  assert.deepEqual([...corpus.keys()].sort(), Object.keys(OSLO_VERDICTS).sort());
});

for (const [name, oslo] of Object.entries(OSLO_VERDICTS)) {
  test(`agrees with oslo.utils: ${name}`, () => {
    const r = reports.get(name)!;
    const failed = r.checks.filter((c) => !c.passed).map((c) => c.name);
    if (name in STRICTER_THAN_OSLO) {
      assert.equal(oslo.safe, true, 'a listed difference must be one oslo passes');
      assert.equal(r.safe, false, `instar must refuse: ${STRICTER_THAN_OSLO[name]}`);
    } else {
      assert.equal(r.safe, oslo.safe, `verdict (instar failed: ${failed.join(', ') || 'nothing'})`);
    }
    if ('multiple' in oslo) {
      assert.ok(failed.includes('single-format'));
      assert.deepEqual([...new Set(r.detected.map((d) => osloName(r, d)))].sort(), oslo.multiple);
      return;
    }
    assert.equal(osloName(r), oslo.format, 'format');
    if (SIZED.includes(oslo.format) && oslo.virtualSize > 0) assert.equal(r['virtual-size'], oslo.virtualSize, 'virtual size');
    for (const f of oslo.failures ?? []) {
      assert.ok(OSLO_CHECKS[f].some((c) => failed.includes(c)), `oslo failed ${f}; instar failed only ${failed.join(', ')}`);
    }
  });
}

test('content oslo calls raw passes once declared raw', async () => {
  for (const name of ['raw-blank', 'fat-boot-record']) {
    const r = await inspect(corpus.get(name)!, { expectedFormat: 'raw' });
    assert.equal(r.safe, true, name);
  }
});

test('a declared format that is not the content fails expected-format', async () => {
  const cases: [string, string, boolean][] = [
    ['qcow2-plain', 'raw', false],
    ['qcow2-plain', 'qcow2', true],
    ['vpc-dynamic', 'vhd', true],
    ['gpt-disk', 'gpt', true],
    ['gpt-disk', 'raw', true],
    ['mbr-disk', 'gpt', false],
    ['iso', 'raw', false],
    ['vmdk-monolithic-sparse', 'vmdk', true],
  ];
  for (const [name, expectedFormat, ok] of cases) {
    const r = await inspect(corpus.get(name)!, { expectedFormat });
    const c = r.checks.find((x) => x.name === 'expected-format');
    assert.equal(c?.passed, ok, `${name} as ${expectedFormat}`);
    assert.equal(r.safe, ok, `${name} as ${expectedFormat}`);
  }
});
