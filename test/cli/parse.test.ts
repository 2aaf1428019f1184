// Unit tests of the getopt_long engine and of qemu-img's command-line driver on top of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Getopt, type GetoptResult, type LongOption } from '../../src/cli/parse.ts';
import { parseCommandLine, programName, type ParseOutcome } from '../../src/cli/command-line.ts';
import { commandTable, SUBCOMMANDS } from '../../src/cli/tables.ts';
import { EXTRA_ARGUMENT } from '../../src/cli/types.ts';

function drain(g: Getopt): GetoptResult[] {
  const out: GetoptResult[] = [];
  for (let i = 0; i < 100; i++) {
    const r = g.next();
    out.push(r);
    if (r.type === 'end' || r.type === 'error') return out;
  }
  throw new Error('getopt did not terminate');
}

function parse(args: string[], major = 10, posixlyCorrect = false): ParseOutcome {
  return parseCommandLine(args, { progname: 'qemu-img', major, posixlyCorrect });
}

function run(args: string[], major = 10) {
  const r = parse(args, major);
  assert.equal(r.kind, 'run', JSON.stringify(r));
  if (r.kind !== 'run') throw new Error('unreachable');
  return r;
}

/** The argument error's text; after options, the command reports it where the options' checks end. */
function failText(args: string[], major = 10): string {
  const r = parse(args, major);
  if (r.kind === 'run' && r.command.stop?.kind === 'fail') return r.command.stop.stderr;
  assert.equal(r.kind, 'fail', JSON.stringify(r));
  return r.kind === 'fail' ? r.stderr : '';
}

test('an error after options stops the command there; before any option it fails at once', () => {
  const stopped = parse(['convert', '-S', '7', '--zzz', 'a', 'b'], 10);
  assert.equal(stopped.kind, 'run');
  if (stopped.kind !== 'run') return;
  assert.deepEqual(stopped.command.sequence, [['sparse-size', '7']]);
  assert.equal(stopped.command.stop?.kind, 'fail');
  assert.equal(parse(['convert', '--zzz', '-S', '7'], 10).kind, 'fail');
  const help = parse(['check', '-r', 'x', '-h'], 10);
  assert.deepEqual(help.kind === 'run' ? help.command.stop : undefined, { kind: 'command-help' });
  const help7 = parse(['check', '-r', 'x', '-h'], 7);
  assert.deepEqual(help7.kind === 'run' ? help7.command.stop : undefined, { kind: 'main-help', stderr: undefined });
});

test('unambiguous abbreviations, = or separate values', () => {
  for (const major of [7, 10]) {
    const a = run(['info', '--out=json', '--back', 'x.img'], major).command;
    assert.deepEqual(a.options.get('output'), ['json']);
    assert.deepEqual(a.options.get('backing-chain'), ['']);
    assert.deepEqual(a.args, ['x.img']);
    const b = run(['info', '--output', 'json', '--form', 'qcow2', 'x.img'], major).command;
    assert.deepEqual(b.options.get('output'), ['json']);
    assert.deepEqual(b.options.get('format'), ['qcow2']);
  }
});

test('an exact name wins over longer names it prefixes', () => {
  const long: LongOption[] = [
    { name: 'output', hasArg: 1, val: 'output' },
    { name: 'output-format', hasArg: 1, val: 'O' },
  ];
  const r = drain(new Getopt(['p', '--output=json'], { optstring: 'O:', long }));
  assert.deepEqual(r[0], { type: 'option', val: 'output', arg: 'json', long: long[0] });
});

test('glibc treats options with the same has_arg and val as one (no ambiguity)', () => {
  const long: LongOption[] = [
    { name: 'image-opts', hasArg: 0, val: 'image-opts' },
    { name: 'image-optsx', hasArg: 0, val: 'image-opts' },
    { name: 'zeta', hasArg: 0, val: 'z' },
  ];
  const ok = drain(new Getopt(['p', '--image'], { optstring: '', long }));
  assert.equal(ok[0].type, 'option');
  // A third, different match makes it ambiguous; the identical one is not listed.
  const long2: LongOption[] = [...long, { name: 'image-size', hasArg: 1, val: 'S' }];
  const bad = drain(new Getopt(['p', '--image'], { optstring: '', long: long2 }));
  assert.deepEqual(bad[0], {
    type: 'error', code: '?',
    message: "p: option '--image' is ambiguous; possibilities: '--image-opts' '--image-size'\n",
  });
});

test('clustered short options and attached values', () => {
  const c = run(['convert', '-pq', '-Oraw', '-fqcow2', '-o', 'a=1', '-o', 'b=2', 'in', 'out'], 7).command;
  assert.deepEqual(c.options.get('progress'), ['']);
  assert.deepEqual(c.options.get('quiet'), ['']);
  assert.deepEqual(c.options.get('output-format'), ['raw']);
  assert.deepEqual(c.options.get('source-format'), ['qcow2']);
  assert.deepEqual(c.options.get('options'), ['a=1', 'b=2']);
  assert.deepEqual(c.args, ['in', 'out']);
  assert.deepEqual(c.sequence?.map(([k]) => k), ['progress', 'quiet', 'output-format', 'source-format', 'options', 'options']);
  // A value may itself look like an option.
  const d = run(['convert', '-o', '--zzz', 'in', 'out']).command;
  assert.deepEqual(d.options.get('options'), ['--zzz']);
});

test('options after positionals (GNU permutation), `--` ends options', () => {
  const a = run(['info', 'x.img', '-f', 'raw', '--output=json']).command;
  assert.deepEqual(a.args, ['x.img']);
  assert.deepEqual(a.options.get('format'), ['raw']);
  const b = run(['info', '-U', '--', '--zzz', '-f']).command;
  assert.deepEqual(b.args, ['--zzz', '-f']);
  assert.deepEqual(b.options.get('force-share'), ['']);
  const c = run(['info', '-']).command;
  assert.deepEqual(c.args, ['-']);
});

test('POSIXLY_CORRECT stops at the first positional', () => {
  const r = parse(['info', 'x', '--zzz'], 10, true);
  assert.equal(r.kind, 'run');
  if (r.kind === 'run') assert.deepEqual(r.command.args, ['x', '--zzz']);
});

test('dd operands stay positionals', () => {
  const c = run(['dd', '-O', 'qcow2', 'if=a', 'bs=1M', 'of=b', 'count=3', 'skip=1']).command;
  assert.deepEqual(c.args, ['if=a', 'bs=1M', 'of=b', 'count=3', 'skip=1']);
  assert.deepEqual(c.options.get('output-format'), ['qcow2']);
});

test('10.0 error texts are glibc\'s, with argv[0] = "PROG COMMAND"', () => {
  assert.equal(failText(['info', '--bogus', 'x']), "qemu-img info: unrecognized option '--bogus'\nTry 'qemu-img info --help' for more info\n");
  assert.equal(failText(['info', '-f']), "qemu-img info: option requires an argument -- 'f'\nTry 'qemu-img info --help' for more info\n");
  assert.equal(failText(['info', '-Z', 'x']), "qemu-img info: invalid option -- 'Z'\nTry 'qemu-img info --help' for more info\n");
  assert.equal(failText(['info', '--out']), "qemu-img info: option '--output' requires an argument\nTry 'qemu-img info --help' for more info\n");
  assert.equal(failText(['info', '--back=1', 'x']), "qemu-img info: option '--backing-chain' doesn't allow an argument\nTry 'qemu-img info --help' for more info\n");
  assert.equal(
    failText(['convert', '--o', 'x']),
    "qemu-img convert: option '--o' is ambiguous; possibilities: '--object' '--output-format' '--options' '--output-cache' '--oob-writes'\n" +
      "Try 'qemu-img convert --help' for more info\n",
  );
  assert.equal(failText(['--zzz']), "qemu-img: unrecognized option '--zzz'\nTry 'qemu-img --help' for more info\n");
  assert.equal(failText([]), "qemu-img: Not enough arguments\nTry 'qemu-img --help' for more info\n");
  assert.equal(failText(['foo']), "qemu-img: Command not found: foo\nTry 'qemu-img --help' for more info\n");
});

test('7.2 error texts name argv[optind - 1], wherever glibc left optind', () => {
  const tail = "\nTry 'qemu-img --help' for more information\n";
  assert.equal(failText(['info', '--bogus', 'x'], 7), "qemu-img: unrecognized option '--bogus'" + tail);
  assert.equal(failText(['info', '-f'], 7), "qemu-img: missing argument for option '-f'" + tail);
  assert.equal(failText(['info', '-Uf'], 7), "qemu-img: missing argument for option '-Uf'" + tail);
  assert.equal(failText(['info', '--f', 'x'], 7), "qemu-img: unrecognized option '--f'" + tail); // ambiguous
  // The bad letter is not the last of its element: optind still points past the previous one.
  assert.equal(failText(['info', '-zU', 'x'], 7), "qemu-img: unrecognized option 'info'" + tail);
  assert.equal(failText(['info', 'x', '-zU'], 7), "qemu-img: unrecognized option 'x'" + tail);
  assert.equal(failText(['-zq'], 7), "qemu-img: unrecognized option 'qemu-img'" + tail);
  assert.equal(failText(['resize', 'x'], 7), 'qemu-img: Not enough arguments' + tail);
});

test('7.2 measure lets glibc speak, then prints the help', () => {
  const r = parse(['measure', '--zzz'], 7);
  assert.deepEqual(r.kind === 'main-help' && r.stderr, "measure: unrecognized option '--zzz'\n");
});

test('help requests', () => {
  assert.equal(parse(['info', '-h'], 10).kind, 'command-help');
  assert.equal(parse(['info', '--hel'], 7).kind, 'main-help');
  assert.equal(parse(['--help', 'info'], 10).kind, 'main-help');
  assert.equal(parse(['-V'], 7).kind, 'version');
  // First come, first served: an error before -h wins.
  assert.equal(parse(['info', '--bogus', '-h'], 10).kind, 'fail');
});

test('resize sizes: 7.2 takes the last argument, 10.0 a -N right after the file name', () => {
  assert.deepEqual(run(['resize', '-q', 'x', '-1G'], 7).command.args, ['x', '-1G']);
  assert.deepEqual(run(['resize', 'x', '-1G', '--shrink'], 10).command.args, ['x', '-1G']);
  assert.deepEqual(run(['resize', 'x', '--', '-1G'], 10).command.args, ['x', '-1G']);
  assert.match(failText(['resize', 'x', '-q', '-1G'], 10), /invalid option -- '1'/);
  // A third positional ends the loop (resize reports it after the options before it).
  const extra = run(['resize', '--shrink', 'a', 'b', 'c', '--zz'], 10).command;
  assert.deepEqual(extra.args, ['a', 'b']);
  assert.deepEqual(extra.sequence, [['shrink', ''], ['', 'a'], ['', 'b'], [EXTRA_ARGUMENT, 'c']]);
});

test("instar's options: exact names anywhere, never in abbreviations", () => {
  const r = run(['--debug', 'info', '--sandbox=none', 'x', '--allow-path', '/a', '--allow-path=/b', '--qemu-version', '7.2', '--unsafe-quirks', '--ignore-quirks']);
  assert.deepEqual(r.command.args, ['x']);
  assert.deepEqual(r.globals, { debug: true, sandbox: 'none', allowPaths: ['/a', '/b'], qemuVersion: '7.2', unsafeQuirks: true, ignoreQuirks: true });
  assert.equal(r.command.options.size, 0);
  // bitmap's --d is --disable (instar's --debug does not count), --debu is nobody's.
  assert.deepEqual(run(['bitmap', '--d', 'x', 'b']).command.options.get('disable'), ['']);
  assert.match(failText(['info', '--debu', 'x']), /unrecognized option '--debu'/);
  assert.match(failText(['info', '--debug=1', 'x']), /option '--debug' doesn't allow an argument/);
  assert.match(failText(['info', 'x', '--sandbox']), /option '--sandbox' requires an argument/);
});

test('every subcommand has a table for both generations, and keys are consistent', () => {
  assert.equal(SUBCOMMANDS.length, 15);
  for (const name of SUBCOMMANDS) {
    for (const major of [7, 10]) {
      const t = commandTable(name, major);
      assert.ok(t, `${name} ${major}`);
      for (const o of t.long) assert.ok(!t.keyOf(o.val).match(/^.$/), `${name} ${major} --${o.name} has no key`);
      for (const c of t.optstring.replace(/[:+-]/g, '')) assert.ok(t.keyOf(c).length > 1, `${name} ${major} -${c} has no key`);
    }
  }
  assert.equal(commandTable('__proto__', 10), undefined);
});

test('program name', () => {
  assert.equal(programName('/x/dist/cli.js'), 'instar');
  assert.equal(programName('/x/dist/alias/qemu-img'), 'qemu-img');
  assert.equal(programName('/usr/bin/instar'), 'instar');
});
