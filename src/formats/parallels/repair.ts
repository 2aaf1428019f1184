// check -r for parallels (qemu's parallels_co_check in fix mode, then what its close writes),
// planned from the read-only check's lines:
//  - -r all: "image was not closed correctly" and BAT entries outside the image are repaired (the
//    entry cleared); -r leaks reports them as errors;
//  - both modes: space leaked at the end of the file is cut off (the file truncated);
//  - -r all, qemu 8.1+: a wrong data_off is set to the smallest one qemu accepts;
//  - the close of the writable image clears the in-use mark in the header, whatever was found
//    (after the second check, which under -r leaks still reports it), and (8.1+) sets the file's
//    length to the data's end, which grows a file that ends before the data_off qemu repairs.
// instar refuses (writing nothing) what qemu repairs otherwise or not at all: qemu 10.0's
// duplicate clusters (copied elsewhere), BAT entries reaching past the file under qemu 7.2 (its
// close grows the file to them) or under 10.0's -r leaks (qemu aborts), and images with a format
// extension (bitmaps qemu would rewrite).
import { addLine, emptyReport, type CheckLine, type RepairPlanner } from '../check-types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { parseParallelsHeader } from './driver.ts';
import { minDataOff } from './open-check.ts';

const INUSE_OFFSET = 44;
const DATA_OFF_OFFSET = 48;
const BAT_OFFSET = 64;
const SECTOR = 512;

const refused = (why: string) => ({ refused: `instar cannot repair this parallels image (${why}); nothing was written` });

export const repairParallels: RepairPlanner = (_image, dev, report, mode, ctx) => {
  // Without a context (a direct call, as tests make) the newest behaviour.
  const major = ctx?.qemuMajor ?? 10;
  const raw = readAt(dev, 0, BAT_OFFSET);
  const h = parseParallelsHeader(raw);
  if (h.extOffset !== 0n) return refused('it has a format extension');
  if (report.omitted) return refused('the check reported too many lines');
  const out = { ...emptyReport(), ...report, lines: [] as CheckLine[], corruptions: 0, leaks: 0 };
  const steps: RepairStep[] = [];
  const all = mode === 'all';
  let dataOff: number | undefined;
  let outside = false;
  for (const line of report.lines) {
    if (typeof line !== 'string') return refused('its check reported an unexpected line');
    let m: RegExpMatchArray | null;
    if (line === 'ERROR image was not closed correctly') {
      addLine(out, all ? 'Repairing image was not closed correctly' : line);
      out[all ? 'corruptions-fixed' : 'corruptions']++;
    } else if ((m = /^ERROR cluster (\d+) is outside image$/.exec(line))) {
      if (major < 8) return refused('a BAT entry points past the end of the file, which qemu 7.2 grows the file to');
      if (!all) return refused('a BAT entry points past the end of the file, on which qemu aborts under -r leaks');
      addLine(out, line.replace(/^ERROR/, 'Repairing'));
      out['corruptions-fixed']++;
      outside = true;
      steps.push({ kind: 'write', pos: BAT_OFFSET + 4 * Number(m[1]), bytes: Buffer.alloc(4) });
    } else if ((m = /^ERROR space leaked at the end of the image (\d+)$/.exec(line))) {
      addLine(out, line.replace(/^ERROR/, 'Repairing'));
      out['leaks-fixed'] += report.leaks;
      steps.push({ kind: 'barrier' }, { kind: 'truncate', size: report['image-end-offset'] });
    } else if (all && line === 'ERROR data_off field has incorrect value') {
      addLine(out, 'Repairing data_off field has incorrect value');
      out['corruptions-fixed']++;
      dataOff = minDataOff(h, raw.toString('latin1', 0, 16) === 'WithoutFreeSpace');
    } else if (!all && /^ERROR (duplicate offset in BAT entry \d+|data_off field has incorrect value)$/.test(line)) {
      // -r leaks leaves qemu 10.0's duplicate and data_off errors as they are.
      addLine(out, line);
      out.corruptions++;
    } else return refused('qemu 10.0 repairs duplicate clusters by moving data, which instar does not');
  }
  if (major < 8) {
    // qemu 7.2's open sets data_end past every cluster the BAT names; its close truncates there.
    // ... and starts it at data_off, so a data_off past the file's end grows the file to it too.
    if (raw.readUInt32LE(DATA_OFF_OFFSET) * SECTOR > Math.ceil(dev.size / SECTOR) * SECTOR) return refused('its data_off points past the end of the file, which qemu 7.2 grows the file to');
    const bat = readAt(dev, BAT_OFFSET, 4 * h.batEntries);
    const cluster = h.tracks * SECTOR;
    for (let i = 0; i < h.batEntries; i++) {
      const off = bat.readUInt32LE(4 * i) * h.offMultiplier * SECTOR;
      if (off !== 0 && off + cluster > Math.ceil(dev.size / SECTOR) * SECTOR) return refused('a BAT entry reaches past the end of the file, which qemu 7.2 grows the file to');
    }
  }
  if (major >= 8) {
    // qemu's open wrote its header over a file this short and its close cuts the file at the
    // data's end: the file grows to it (zeros), before the data_off that points there.
    const end = report['image-end-offset'];
    if (end > dev.size) {
      if (outside) return refused('qemu grows the file to a BAT entry it cleared');
      steps.push({ kind: 'barrier' }, { kind: 'truncate', size: end });
    }
  }
  if (dataOff !== undefined) {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(dataOff);
    steps.push({ kind: 'barrier' }, { kind: 'write', pos: DATA_OFF_OFFSET, bytes });
  }
  steps.push({ kind: 'barrier' });
  Object.assign(report, out);
  if (raw.readUInt32LE(INUSE_OFFSET) === 0) return { steps };
  const clean: RepairStep[] = [{ kind: 'write', pos: INUSE_OFFSET, bytes: Buffer.alloc(4) }, { kind: 'barrier' }];
  // -r all repairs the mark in memory (the second check sees it clean); -r leaks leaves it to the
  // close, after the second check, which still reports it.
  return all ? { steps: [...steps, ...clean] } : { steps, close: () => clean };
};
