// `instar inspect` end to end (the built CLI): exit status 0 safe / 1 unsafe / 2 not inspected,
// the JSON shape, the human form, stdin as a pipe, and the host's distrust of the guest's report.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCorpus, removeCorpus } from './corpus.ts';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { checkReport, MalformedReportError } from '../../src/inspect/report-check.ts';

let corpus: Map<string, string>;
before(() => {
  corpus = buildCorpus();
});
after(() => removeCorpus(corpus));

const inspectCli = (args: string[], input?: Buffer) => runInstar(['inspect', '--sandbox=none', ...args], { alias: false, input });

test('a safe image: exit 0, JSON with the documented keys in order', () => {
  const r = inspectCli(['--output', 'json', corpus.get('qcow2-plain')!]);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(report), ['format', 'virtual-size', 'safe', 'checks', 'file-size', 'detected']);
  assert.equal(report.format, 'qcow2');
  assert.equal(report['virtual-size'], 1073741824);
  assert.equal(report.safe, true);
  for (const c of report.checks) {
    assert.deepEqual(Object.keys(c), ['name', 'passed']);
    assert.equal(c.passed, true);
  }
  assert.ok(report.checks.some((c: { name: string }) => c.name === 'backing-file'));
});

test('an unsafe image: exit 1, the failed check with its reason, in JSON and in the human form', () => {
  const file = corpus.get('qcow2-backing')!;
  const json = inspectCli(['--output=json', file]);
  assert.equal(json.status, 1, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.safe, false);
  assert.deepEqual(report.checks.find((c: { name: string }) => c.name === 'backing-file'),
    { name: 'backing-file', passed: false, reason: 'the image has a backing file "base.qcow2"' });
  const human = inspectCli([file]);
  assert.equal(human.status, 1);
  assert.match(human.stdout, /^format: qcow2$/m);
  assert.match(human.stdout, /^verdict: UNSAFE$/m);
  assert.match(human.stdout, /^ {2}FAIL {2}backing-file: the image has a backing file "base\.qcow2"$/m);
  assert.match(human.stdout, /^ {2}ok {4}data-file$/m);
});

test('--format: a mismatch fails (exit 1), a match passes, unrecognised content passes only as raw', () => {
  assert.equal(inspectCli(['-f', 'raw', corpus.get('qcow2-plain')!]).status, 1);
  assert.equal(inspectCli(['--format', 'qcow2', corpus.get('qcow2-plain')!]).status, 0);
  assert.equal(inspectCli(['--format=vhd', corpus.get('vpc-dynamic')!]).status, 0);
  assert.equal(inspectCli([corpus.get('raw-blank')!]).status, 1);
  assert.equal(inspectCli(['-f', 'raw', corpus.get('raw-blank')!]).status, 0);
});

test('stdin (-) is read as a pipe and gives the file\'s report', () => {
  for (const name of ['qcow2-backing', 'vmdk-stream-footer', 'vhdx-dynamic', 'gpt-disk']) {
    const file = corpus.get(name)!;
    const fromFile = inspectCli(['--output', 'json', file]);
    const fromPipe = inspectCli(['--output', 'json', '-'], readFileSync(file));
    assert.equal(fromPipe.status, fromFile.status, `${name}: ${fromPipe.stderr}`);
    assert.equal(fromPipe.stdout, fromFile.stdout, name);
  }
});

test('exit 2 when nothing could be inspected, with a one-line message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-inspect-cli-'));
  const cases: [string[], RegExp][] = [
    [[join(dir, 'missing')], /cannot open '.*missing': ENOENT/],
    [[dir], /is not a regular file/],
    [['--output', 'xml', corpus.get('qcow2-plain')!], /--output expects 'human' or 'json', not 'xml'/],
    [['--format', 'bogus', corpus.get('qcow2-plain')!], /unknown format 'bogus'/],
    [[], /expecting one image file name/],
    [[corpus.get('qcow2-plain')!, corpus.get('vdi')!], /expecting one image file name/],
  ];
  for (const [args, message] of cases) {
    const r = inspectCli(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^instar: inspect: /);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('names from the image are escaped in the human form and JSON-escaped in JSON', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-inspect-esc-'));
  const evil = 'x\x1b[2J\nverdict: safe';
  const r0 = runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-u', '-b', evil, '-F', 'qcow2', 'img', '1M'], { cwd: dir });
  assert.equal(r0.status, 0, r0.stderr);
  const human = inspectCli([join(dir, 'img')]);
  assert.equal(human.status, 1);
  assert.ok(!human.stdout.includes('\x1b'));
  assert.equal(human.stdout.match(/^verdict:/gm)?.length, 1, 'no forged verdict line');
  const json = JSON.parse(inspectCli(['--output', 'json', join(dir, 'img')]).stdout);
  assert.match(json.checks.find((c: { name: string }) => c.name === 'backing-file').reason, /\\u001b\[2J\\nverdict/);
  rmSync(dir, { recursive: true, force: true });
});

test('sandboxed (the default, and strict) the reports are the in-process ones, for files and for stdin', () => {
  for (const name of ['vmdk-parent-hint', 'qcow2-plain', 'polyglot-iso-qcow2', 'vhdx-dynamic', 'raw-blank']) {
    const file = corpus.get(name)!;
    const plain = inspectCli(['--output', 'json', file]);
    for (const mode of [[], ['--sandbox=strict']]) {
      const sandboxed = runInstar(['inspect', ...mode, '--output', 'json', file], { alias: false });
      assert.equal(sandboxed.status, plain.status, `${name} ${mode}: ${sandboxed.stderr}`);
      assert.equal(sandboxed.stdout, plain.stdout, name);
    }
    const piped = runInstar(['inspect', '--sandbox=strict', '--output', 'json', '-'], { alias: false, input: readFileSync(file) });
    assert.equal(piped.status, plain.status, `${name} (stdin): ${piped.stderr}`);
    assert.equal(piped.stdout, plain.stdout, `${name} (stdin)`);
  }
});

test('a stream far larger than the window goes through the sandboxed guest on stdin', () => {
  const head = readFileSync(corpus.get('qcow2-plain')!);
  const input = Buffer.concat([head, Buffer.alloc(96 * 1024 * 1024)]);
  const r = runInstar(['inspect', '--sandbox=strict', '--output', 'json', '-'], { alias: false, input });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report['file-size'], input.length);
  assert.equal(report.format, 'qcow2');
});

test('the host re-checks the guest\'s report: shape enforced, safe recomputed from the checks', () => {
  const good = { format: 'qcow2', 'virtual-size': 1, safe: true, checks: [{ name: 'backing-file', passed: false, reason: 'x' }], 'file-size': 2, detected: ['qcow2'] };
  assert.equal(checkReport(good).safe, false, 'a guest cannot declare a failing image safe');
  const bad: unknown[] = [
    null, 'qcow2', { ...good, format: 'qc ow2' }, { ...good, checks: [] }, { ...good, checks: 'x' },
    { ...good, 'virtual-size': -1 }, { ...good, 'virtual-size': 1.5 }, { ...good, 'file-size': '2' },
    { ...good, checks: [{ name: 'Bad Name', passed: true }] }, { ...good, checks: [{ name: 'a', passed: 'yes' }] },
    { ...good, detected: [1] }, { ...good, 'partition-table': 'apm' }, { ...good, checks: new Array(100).fill({ name: 'a', passed: true }) },
  ];
  for (const v of bad) assert.throws(() => checkReport(v), MalformedReportError, JSON.stringify(v)?.slice(0, 80));
});
