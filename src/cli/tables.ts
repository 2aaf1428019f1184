/**
 * qemu-img's option tables, per subcommand and per version: the optstring and the long options
 * (in declaration order, which glibc's ambiguity message follows) that qemu-img 7.2 and 10.0 pass
 * to getopt_long. They were read off the two oracle binaries by interposing getopt_long, so the
 * tables are what the binaries really accept (10.0's --help mentions a few names, such as
 * `convert --target-format`, that its table does not have).
 *
 * Version choice: tables are taken per profile, not as a union — a profile below 10.0 gets 7.2's
 * table (10.0 is where the long options and glibc-style diagnostics arrived), 10.0 and later get
 * 10.0's. Accepting the union would make error texts differ from either version.
 *
 * Long-option spec syntax: `name:hasArg[:val]`; val is the short letter the option aliases, or a
 * key for long-only options (defaults to the name). Identical val + hasArg means "same option"
 * for glibc's ambiguity check (e.g. convert's --image-opts and --source-image-opts).
 */
import type { LongOption } from './parse.ts';

export interface CommandTable {
  optstring: string;
  long: LongOption[];
}

interface CommandDef {
  /** Short letter → canonical key (10.0's long name where it has one). */
  keys: Record<string, string>;
  v7: [optstring: string, long: string];
  v10: [optstring: string, long: string];
}

// Tables that are the same in 7.2 and 10.0.
const BITMAP_LONG =
  'help:0:h object:1 image-opts:0 add:0 remove:0 clear:0 enable:0 disable:0 merge:1 granularity:1:g ' +
  'source-file:1:b source-format:1:F';
const MAP_LONG = 'help:0:h format:1:f output:1 object:1 image-opts:0 force-share:0:U start-offset:1:s max-length:1:l';

const DEFS: Record<string, CommandDef> = {
  amend: {
    keys: { h: 'help', o: 'options', f: 'format', t: 'cache', p: 'progress', q: 'quiet' },
    v7: [':ho:f:t:pq', 'help:0:h object:1 image-opts:0 force:0'],
    v10: ['ho:f:t:pq', 'help:0:h quiet:0:q progress:0:p object:1 format:1:f cache:1:t options:1:o image-opts:0 force:0'],
  },
  bench: {
    keys: {
      h: 'help', c: 'count', d: 'depth', f: 'format', n: 'native', i: 'aio', o: 'offset', q: 'quiet',
      s: 'buffer-size', S: 'step-size', t: 'cache', w: 'write', U: 'force-share',
    },
    v7: [':hc:d:f:ni:o:qs:S:t:wU', 'help:0:h flush-interval:1 image-opts:0 pattern:1 no-drain:0 force-share:0:U'],
    v10: [
      'hc:d:f:ni:o:qs:S:t:wU',
      'help:0:h format:1:f image-opts:0 cache:1:t count:1:c depth:1:d offset:1:o buffer-size:1:s step-size:1:S ' +
        'aio:1:i native:0:n write:0:w pattern:1 flush-interval:1 no-drain:0 force-share:0:U',
    ],
  },
  bitmap: {
    keys: { b: 'source-file', f: 'format', F: 'source-format', g: 'granularity', h: 'help' },
    v7: [':b:f:F:g:h', BITMAP_LONG],
    v10: ['b:f:F:g:h', BITMAP_LONG],
  },
  check: {
    keys: { h: 'help', f: 'format', r: 'repair', T: 'cache', q: 'quiet', U: 'force-share' },
    v7: [':hf:r:T:qU', 'help:0:h format:1:f repair:1:r output:1 object:1 image-opts:0 force-share:0:U'],
    v10: ['hf:r:T:qU', 'help:0:h quiet:0:q format:1:f cache:1:T repair:1:r output:1 object:1 image-opts:0 force-share:0:U'],
  },
  commit: {
    keys: { f: 'format', h: 'help', t: 'cache', b: 'base', d: 'drop', p: 'progress', q: 'quiet', r: 'rate' },
    v7: [':f:ht:b:dpqr:', 'help:0:h object:1 image-opts:0'],
    v10: [
      'f:ht:b:dpqr:',
      'help:0:h quiet:0:q object:1 format:1:f image-opts:0 cache:1:t drop:0:d base:1:b progress:0:p rate:1:r',
    ],
  },
  compare: {
    keys: { h: 'help', f: 'a-format', F: 'b-format', T: 'cache', p: 'progress', q: 'quiet', s: 'strict', U: 'force-share' },
    v7: [':hf:F:T:pqsU', 'help:0:h object:1 image-opts:0 force-share:0:U'],
    v10: [
      'hf:F:T:pqsU',
      'help:0:h quiet:0:q object:1 cache:1:T image-opts:0 a-format:1:f left-format:1:f b-format:1:F ' +
        'right-format:1:F force-share:0:U strict:0:s progress:0:p',
    ],
  },
  convert: {
    keys: {
      h: 'help', f: 'source-format', O: 'output-format', B: 'backing', C: 'copy-range-offloading', c: 'compress',
      F: 'backing-format', o: 'options', l: 'snapshot', S: 'sparse-size', p: 'progress', t: 'output-cache',
      T: 'source-cache', q: 'quiet', n: 'no-create', m: 'parallel', W: 'oob-writes', U: 'force-share', r: 'rate',
    },
    v7: [
      ':hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:',
      'help:0:h object:1 image-opts:0 force-share:0:U target-image-opts:0 salvage:0 target-is-zero:0 bitmaps:0 ' +
        'skip-broken-bitmaps:0',
    ],
    v10: [
      'hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:',
      'help:0:h quiet:0:q object:1 image-opts:0 source-image-opts:0:image-opts source-format:1:f source-cache:1:T ' +
        'snapshot:1:l sparse-size:1:S output-format:1:O options:1:o output-cache:1:t backing:1:B backing-format:1:F ' +
        'force-share:0:U target-image-opts:0 salvage:0 target-is-zero:0 bitmaps:0 skip-broken-bitmaps:0 rate:1:r ' +
        'parallel:1:m oob-writes:0:W copy-range-offloading:0:C',
    ],
  },
  create: {
    keys: { F: 'backing-format', b: 'backing', f: 'format', h: 'help', o: 'options', q: 'quiet', u: 'backing-unsafe' },
    v7: [':F:b:f:ho:qu', 'help:0:h object:1'],
    v10: [
      'F:b:f:ho:qu',
      'help:0:h quiet:0:q object:1 format:1:f backing:1:b backing-format:1:F backing-unsafe:0:u options:1:o',
    ],
  },
  dd: {
    keys: { h: 'help', f: 'format', O: 'output-format', U: 'force-share' },
    v7: [':hf:O:U', 'help:0:h object:1 image-opts:0 force-share:0:U'],
    v10: ['hf:O:U', 'help:0:h object:1 format:1:f output-format:1:O image-opts:0 force-share:0:U'],
  },
  info: {
    keys: { f: 'format', h: 'help', b: 'backing-chain', U: 'force-share' },
    v7: [':f:hU', 'help:0:h format:1:f output:1 backing-chain:0 object:1 image-opts:0 force-share:0:U'],
    v10: ['f:hbU', 'help:0:h format:1:f output:1 backing-chain:0:b object:1 image-opts:0 force-share:0:U'],
  },
  map: {
    keys: { f: 'format', s: 'start-offset', l: 'max-length', h: 'help', U: 'force-share' },
    v7: [':f:s:l:hU', MAP_LONG],
    v10: ['f:s:l:hU', MAP_LONG],
  },
  measure: {
    // 10.0 declares --size with val 's' but has no -s in its optstring: `-s` is refused there.
    keys: { h: 'help', f: 'format', O: 'target-format', o: 'options', l: 'snapshot', U: 'force-share', s: 'size' },
    v7: ['hf:O:o:l:U', 'help:0:h image-opts:0 object:1 output:1 size:1 force-share:0:U'],
    v10: [
      'hf:O:o:l:U',
      'help:0:h target-format:1:O format:1:f image-opts:0 options:1:o snapshot:1:l object:1 output:1 size:1:s ' +
        'force-share:0:U',
    ],
  },
  snapshot: {
    // 10.0 declares --apply/--create/--delete without an argument although -a/-c/-d take one.
    keys: { l: 'list', a: 'apply', c: 'create', d: 'delete', f: 'format', h: 'help', q: 'quiet', U: 'force-share' },
    v7: [':la:c:d:hqU', 'help:0:h object:1 image-opts:0 force-share:0:U'],
    v10: [
      'la:c:d:f:hqU',
      'help:0:h quiet:0:q object:1 format:1:f image-opts:0 force-share:0:U list:0:l apply:0:a create:0:c delete:0:d',
    ],
  },
  rebase: {
    keys: {
      h: 'help', f: 'format', F: 'backing-format', b: 'backing', u: 'backing-unsafe', p: 'progress', t: 'cache',
      T: 'backing-cache', q: 'quiet', U: 'force-share', c: 'compress',
    },
    v7: [':hf:F:b:upt:T:qU', 'help:0:h object:1 image-opts:0 force-share:0:U'],
    v10: [
      'hf:F:b:upt:T:qUc',
      'help:0:h quiet:0:q progress:0:p object:1 image-opts:0 force-share:0:U format:1:f cache:1:t compress:0:c ' +
        'backing:1:b backing-format:1:F backing-cache:1:T backing-unsafe:0:u',
    ],
  },
  resize: {
    // 10.0 hands positionals back in order ('-'), so a size like -1G needs `--` there.
    keys: { f: 'format', h: 'help', q: 'quiet' },
    v7: [':f:hq', 'help:0:h object:1 image-opts:0 preallocation:1 shrink:0'],
    v10: ['-f:hq', 'help:0:h quiet:0:q object:1 format:1:f image-opts:0 preallocation:1 shrink:0'],
  },
};

/**
 * Subcommands instar adds (not qemu-img's): parsed like the others, but absent from SUBCOMMANDS,
 * qemu-img's help and its "Command not found" list.
 */
const INSTAR_DEFS: Record<string, CommandDef> = {
  inspect: {
    keys: { f: 'format', h: 'help' },
    v7: [':f:h', 'help:0:h format:1:f output:1'],
    v10: ['f:h', 'help:0:h format:1:f output:1'],
  },
};

/** qemu-img's own options before the subcommand (`qemu-img [-h] [-V] [-T trace] command ...`). */
const MAIN: CommandDef = {
  keys: { h: 'help', V: 'version', T: 'trace' },
  v7: ['+:hVT:', 'help:0:h version:0:V trace:1:T'],
  v10: ['+hVT:', 'help:0:h version:0:V trace:1:T'],
};

/** Every qemu-img subcommand, in the order qemu-img's help lists them. */
export const SUBCOMMANDS = Object.keys(DEFS);

function parseLong(spec: string): LongOption[] {
  return spec.split(' ').map((item) => {
    const [name, hasArg, val] = item.split(':');
    return { name, hasArg: Number(hasArg) as 0 | 1, val: val ?? name };
  });
}

/** Whether a profile uses qemu-img 10.0's option tables and diagnostics (else 7.2's). */
export function usesModernCli(major: number): boolean {
  return major >= 10;
}

export interface ResolvedTable extends CommandTable {
  /** Maps what getopt returns (a short letter or a long-only val) to the canonical key. */
  keyOf(val: string): string;
}

function resolve(def: CommandDef, modern: boolean): ResolvedTable {
  const [optstring, long] = modern ? def.v10 : def.v7;
  return { optstring, long: parseLong(long), keyOf: (val) => (val.length === 1 ? def.keys[val] ?? val : val) };
}

export function commandTable(name: string, major: number): ResolvedTable | undefined {
  const def = Object.hasOwn(DEFS, name) ? DEFS[name] : Object.hasOwn(INSTAR_DEFS, name) ? INSTAR_DEFS[name] : undefined;
  return def && resolve(def, usesModernCli(major));
}

export function mainTable(major: number): ResolvedTable {
  return resolve(MAIN, usesModernCli(major));
}
