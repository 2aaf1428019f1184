// Random command lines for the mutating subcommands (resize, amend, snapshot, rebase, commit,
// bitmap, check -r), drawn from a seeded Rng and from what the image holds now (its size,
// snapshots, bitmaps, backing file: read from qemu's copy with info), plus qemu-io steps that
// write, zero, discard or kill qemu-io mid-way (leaving a dirty or leaky image) on both copies.
import type { Rng } from '../prng.ts';

/** What the top image looks like before a step (qemu-img info of the oracle's copy). */
export interface ImageState {
  file: string;
  format: string;
  virtualSize: number;
  clusterSize: number;
  compat?: string;
  snapshots: { id: string; name: string }[];
  bitmaps: string[];
  backing?: string;
  /** Other files of the case's directory a command may name (rebase targets, chain members). */
  others: { file: string; format: string }[];
}

export type Step =
  | { kind: 'qemu-img'; args: string[] }
  | { kind: 'qemu-io'; commands: string[]; kill: boolean }
  /** A refcount edited in a qcow2 file: one too many (a leak) or one too few (an error), for check -r. */
  | { kind: 'refcount'; delta: 1 | -1; pick: number };

const K = 1024;
const M = 1024 * K;

/** A size as qemu-img's command line takes it: bytes, or a K/M/G suffix, sometimes fractional. */
function sizeText(rng: Rng, bytes: number): string {
  if (bytes % M === 0 && rng.chance(0.5)) return `${bytes / M}M`;
  if (bytes % K === 0 && rng.chance(0.4)) return `${bytes / K}K`;
  if (bytes % (512 * K) === 0 && rng.chance(0.2)) return `${bytes / M}M`;
  return String(bytes);
}

function oddSize(rng: Rng, around: number): number {
  const unit = rng.pick([1, 512, 512, 4096, 65536, M]);
  const n = Math.max(1, Math.round((around * (0.25 + rng.next() / 2 ** 31)) / unit));
  return n * unit;
}

// instar refuses to probe raw (qemu's unsafe fallback, --unsafe-quirks): a raw top mostly gets -f.
const formatChance = (st: ImageState): number => (st.format === 'raw' ? 0.95 : 0.5);

function resize(rng: Rng, st: ImageState): string[] {
  const args = ['resize'];
  if (rng.chance(formatChance(st))) args.push('-f', rng.chance(0.9) ? st.format : rng.pick(['raw', 'qcow2', 'vmdk']));
  if (rng.chance(0.15)) args.push('-q');
  const shrink = rng.chance(0.3);
  if (shrink || rng.chance(0.1)) args.push('--shrink');
  let size: string;
  const form = rng.below(4);
  const delta = oddSize(rng, Math.max(st.virtualSize / 2, 4 * M));
  if (shrink) size = form < 2 ? `-${sizeText(rng, Math.min(delta, st.virtualSize + (rng.chance(0.1) ? 512 : 0)))}` : sizeText(rng, Math.max(512, st.virtualSize - delta));
  else size = form < 2 ? `+${sizeText(rng, delta)}` : sizeText(rng, st.virtualSize + delta);
  if (rng.chance(0.05)) size = rng.pick(['0', '+0', '1T', 'abc', '-0']);
  const grew = !shrink;
  if (rng.chance(0.25)) {
    const small = delta <= 8 * M;
    args.push(`--preallocation=${rng.pick(small && grew ? ['off', 'metadata', 'falloc', 'full'] : ['off', 'metadata', 'metadata'])}`);
  }
  args.push(st.file, size);
  return args;
}

function amendOption(rng: Rng, st: ImageState): string {
  switch (rng.below(13)) {
    case 0:
    case 1: return `compat=${rng.pick(['0.10', '1.1', 'v3', '1.1'])}`;
    case 2: return `lazy_refcounts=${rng.pick(['on', 'off'])}`;
    case 3:
    case 4: return `refcount_bits=${rng.pick([1, 2, 4, 8, 16, 32, 64, 3])}`;
    case 5: return `size=${sizeText(rng, rng.chance(0.5) ? st.virtualSize + oddSize(rng, 4 * M) : Math.max(512, st.virtualSize - oddSize(rng, st.virtualSize / 2)))}`;
    case 6: return rng.pick(['cluster_size=4096', 'preallocation=metadata', 'extended_l2=on', 'encrypt.format=luks', 'compression_type=zstd']);
    case 7: return `data_file=${rng.pick(['img.data', 'other.data'])}`;
    case 8: return `data_file_raw=${rng.pick(['on', 'off'])}`;
    case 9: {
      const target = rng.pick(st.others);
      return target ? `backing_file=${target.file}` : 'backing_file=base.qcow2';
    }
    case 10: return `backing_fmt=${rng.pick(['qcow2', 'raw', 'vmdk'])}`;
    case 11: return rng.pick(['encrypt.key-secret=s0', 'compat=0.10', 'cluster_size=65536']);
    default: return `lazy_refcounts=${rng.pick(['on', 'off'])}`;
  }
}

function amend(rng: Rng, st: ImageState): string[] {
  const args = ['amend'];
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  if (rng.chance(0.2)) args.push('-p');
  if (rng.chance(0.1)) args.push('-q');
  if (rng.chance(0.1)) args.push('--force');
  const options = Array.from({ length: 1 + rng.below(rng.chance(0.3) ? 3 : 1) }, () => amendOption(rng, st));
  args.push('-o', options.join(','), st.file);
  return args;
}

function snapshotName(rng: Rng, st: ImageState, existing: boolean): string {
  if (existing && st.snapshots.length > 0 && rng.chance(0.8)) {
    const s = rng.pick(st.snapshots);
    return rng.chance(0.3) ? s.id : s.name;
  }
  return rng.pick(['s1', 's2', 'snap', '1', '2', 'x y', 'long-name-of-a-snapshot']);
}

function snapshot(rng: Rng, st: ImageState): string[] {
  const action = rng.pick(['-c', '-c', '-c', '-a', '-d', '-d', '-l']);
  const args = ['snapshot'];
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  if (rng.chance(0.1)) args.push('-q');
  if (action === '-l') return [...args, '-l', st.file];
  return [...args, action, snapshotName(rng, st, action !== '-c'), st.file];
}

function rebase(rng: Rng, st: ImageState): string[] {
  const args = ['rebase'];
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  const unsafe = rng.chance(0.4);
  if (unsafe) args.push('-u');
  if (rng.chance(0.15)) args.push('-p');
  if (rng.chance(0.1)) args.push('-q');
  const target = rng.chance(0.2) ? undefined : rng.pick(st.others);
  if (!target) return [...args, '-b', '', st.file];
  args.push('-b', target.file);
  if (rng.chance(0.8)) args.push('-F', rng.chance(0.9) ? target.format : rng.pick(['raw', 'qcow2']));
  return [...args, st.file];
}

function commit(rng: Rng, st: ImageState): string[] {
  const args = ['commit'];
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  if (rng.chance(0.3)) args.push('-d');
  if (rng.chance(0.2)) args.push('-p');
  if (rng.chance(0.1)) args.push('-q');
  if (rng.chance(0.15)) args.push('-r', rng.pick(['1G', '100M', 'x', '0']));
  if (rng.chance(0.3)) {
    const chain = st.others.filter((o) => o.file !== 'alt.qcow2' && o.file !== 'alt.raw');
    args.push('-b', rng.pick([...chain.map((o) => o.file), st.file, 'nothere.qcow2']));
  }
  if (rng.chance(0.15)) args.push('-t', rng.pick(['none', 'writeback', 'unsafe']));
  return [...args, st.file];
}

function bitmapName(rng: Rng, st: ImageState, existing: boolean): string {
  if (existing && st.bitmaps.length > 0 && rng.chance(0.85)) return rng.pick(st.bitmaps);
  return rng.pick(['b0', 'b1', 'b2', 'dirty']);
}

function bitmap(rng: Rng, st: ImageState): string[] {
  const args = ['bitmap'];
  const actions = 1 + (rng.chance(0.25) ? rng.below(3) : 0);
  let adding = false;
  for (let i = 0; i < actions; i++) {
    const action = rng.pick(['--add', '--add', '--remove', '--clear', '--enable', '--disable', '--merge']);
    if (action === '--merge') {
      args.push('--merge', bitmapName(rng, st, true));
      if (rng.chance(0.4)) {
        const source = rng.pick(st.others);
        if (source) args.push('-b', source.file, ...(rng.chance(0.8) ? ['-F', source.format] : []));
      }
    } else args.push(action);
    if (action === '--add') adding = true;
  }
  if (adding && rng.chance(0.4)) args.push('-g', rng.pick(['512', '64k', '1M', '65536', '1000', '2G', '4G', '256']));
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  return [...args, st.file, bitmapName(rng, st, !adding)];
}

function check(rng: Rng, st: ImageState): string[] {
  const args = ['check', '-r', rng.pick(['leaks', 'all', 'all'])];
  if (rng.chance(formatChance(st))) args.push('-f', st.format);
  if (rng.chance(0.2)) args.push('--output=json');
  if (rng.chance(0.1)) args.push('-q');
  return [...args, st.file];
}

function guestWrites(rng: Rng, st: ImageState): string[] {
  const commands: string[] = [];
  const size = Math.max(st.virtualSize, 512);
  for (let n = 1 + rng.below(4); n > 0; n--) {
    const kind = rng.pick(['write', 'write', 'write -z', 'write -c', 'discard']);
    const align = kind === 'write -c' ? Math.max(st.clusterSize, 512) : rng.pick([512, 4096, 65536]);
    const length = Math.min(kind === 'write -c' ? align : align * (1 + rng.below(16)), size - (size % 512));
    if (length < 512 || size < length) continue;
    const offset = Math.floor(rng.below(size - length + 1) / align) * align;
    commands.push(kind === 'write' ? `write -P ${1 + rng.below(255)} ${offset} ${length}` : `${kind} ${offset} ${length}`);
  }
  return commands;
}

const MAKERS: [number, (rng: Rng, st: ImageState) => string[]][] = [
  [5, resize], [4, amend], [5, snapshot], [3, rebase], [2, commit], [5, bitmap], [2, check],
];

/** The next step of a sequence: a qemu-img command line, or guest writes on both copies. */
export function nextStep(rng: Rng, st: ImageState): Step {
  if (rng.chance(0.2)) return { kind: 'qemu-io', commands: guestWrites(rng, st), kill: rng.chance(0.25) };
  if (st.format === 'qcow2' && rng.chance(0.06)) return { kind: 'refcount', delta: rng.chance(0.6) ? 1 : -1, pick: rng.next() };
  const total = MAKERS.reduce((s, [w]) => s + w, 0);
  let r = rng.below(total);
  for (const [w, make] of MAKERS) {
    if (r < w) return { kind: 'qemu-img', args: make(rng, st) };
    r -= w;
  }
  return { kind: 'qemu-img', args: snapshot(rng, st) };
}
