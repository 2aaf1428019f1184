// Human `qemu-img info` (block/qapi.c bdrv_node_info_dump / bdrv_image_info_specific_dump and the
// child-node walk of qemu-img.c), rendered from the same QDict tree the JSON output prints, so the
// two outputs cannot disagree about a value.
import type { Profile } from './profile.ts';
import { formatNumber, isQDict, qdictEntries, type QDictValue, type QValue } from './qobject.ts';
import { sizeToStr } from './size.ts';
import { snapshotHeader, snapshotLine } from './snapshot-table.ts';
import { escapeForTerminal } from './terminal.ts';

const str = (v: QValue | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: QValue | undefined): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);

/** One scalar of the format-specific dump: strings as they are (escaped), numbers, booleans. */
function scalar(v: QValue): string {
  if (typeof v === 'string') return escapeForTerminal(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null) return '';
  return formatNumber(v as number | bigint);
}

const isComposite = (v: QValue) => Array.isArray(v) || isQDict(v);

/** dump_qdict: "key: value" with dashes in keys shown as spaces; containers on their own lines. */
function dumpDict(dict: QDictValue, level: number, out: string[]): void {
  for (const [key, value] of qdictEntries(dict)) {
    const label = escapeForTerminal(key.replace(/-/g, ' '));
    const pad = '    '.repeat(level);
    if (isComposite(value)) {
      out.push(`${pad}${label}:\n`);
      dumpValue(value, level + 1, out);
    } else {
      out.push(`${pad}${label}: ${scalar(value)}\n`);
    }
  }
}

/** dump_qlist: "[i]: value" per element. */
function dumpList(list: QValue[], level: number, out: string[]): void {
  const pad = '    '.repeat(level);
  list.forEach((value, i) => {
    if (isComposite(value)) {
      out.push(`${pad}[${i}]:\n`);
      dumpValue(value, level + 1, out);
    } else {
      out.push(`${pad}[${i}]: ${scalar(value)}\n`);
    }
  });
}

function dumpValue(value: QValue, level: number, out: string[]): void {
  if (Array.isArray(value)) dumpList(value, level, out);
  else if (isQDict(value)) dumpDict(value, level, out);
}

function formatSpecific(info: QDictValue, level: number, profile: Profile, out: string[]): void {
  const spec = info['format-specific'];
  if (!isQDict(spec)) return;
  const data = spec.data;
  // Since 8.0 (with the child-node output) a union branch without data prints no heading at all.
  if (profile.childNodes && isQDict(data) && qdictEntries(data).length === 0) return;
  out.push(`${'    '.repeat(level)}Format specific information:\n`);
  if (data !== undefined && isComposite(data)) dumpValue(data, level + 1, out);
}

function snapshots(info: QDictValue, level: number, profile: Profile, out: string[]): void {
  const list = info.snapshots;
  if (!Array.isArray(list)) return;
  const pad = '    '.repeat(level);
  out.push(`${pad}Snapshot list:\n`, `${pad}${snapshotHeader(profile)}\n`);
  for (const sn of list) {
    if (!isQDict(sn)) continue;
    const row = {
      id: str(sn.id) ?? '',
      name: str(sn.name) ?? '',
      vmStateSize: num(sn['vm-state-size']) ?? 0,
      dateSec: num(sn['date-sec']) ?? 0,
      vmClockSec: num(sn['vm-clock-sec']) ?? 0,
      vmClockNsec: num(sn['vm-clock-nsec']) ?? 0,
      icount: num(sn.icount),
    };
    out.push(`${pad}${snapshotLine(row, profile)}\n`);
  }
}

/** bdrv_node_info_dump for one node; `protocol` nodes (children without children) use file wording. */
function nodeInfo(info: QDictValue, level: number, protocol: boolean, profile: Profile, out: string[]): void {
  const pad = '    '.repeat(level);
  const virtualSize = num(info['virtual-size']) ?? 0;
  const actual = num(info['actual-size']);
  const diskSize = actual === undefined ? 'unavailable' : sizeToStr(actual);
  const filename = escapeForTerminal(str(info.filename) ?? '');
  const format = escapeForTerminal(str(info.format) ?? '');
  const size = `${sizeToStr(virtualSize)} (${formatNumber(virtualSize)} bytes)`;
  if (protocol) {
    out.push(`${pad}filename: ${filename}\n`, `${pad}protocol type: ${format}\n`, `${pad}file length: ${size}\n`);
  } else {
    out.push(`${pad}image: ${filename}\n`, `${pad}file format: ${format}\n`, `${pad}virtual size: ${size}\n`);
  }
  out.push(`${pad}disk size: ${diskSize}\n`);
  if (info.encrypted === true) out.push(`${pad}encrypted: yes\n`);
  const clusterSize = num(info['cluster-size']);
  if (clusterSize !== undefined) out.push(`${pad}cluster_size: ${formatNumber(clusterSize)}\n`);
  if (info['dirty-flag'] === true) out.push(`${pad}cleanly shut down: no\n`);
  const backing = str(info['backing-filename']);
  if (backing !== undefined) {
    const full = str(info['full-backing-filename']);
    let line = `${pad}backing file: ${escapeForTerminal(backing)}`;
    if (full === undefined) line += ' (cannot determine actual path)';
    else if (full !== backing) line += ` (actual path: ${escapeForTerminal(full)})`;
    out.push(`${line}\n`);
    const backingFormat = str(info['backing-filename-format']);
    if (backingFormat !== undefined) out.push(`${pad}backing file format: ${escapeForTerminal(backingFormat)}\n`);
  }
  snapshots(info, level, profile, out);
  formatSpecific(info, level, profile, out);
}

/** A node and, recursively, its children ("Child node '/file':" …), as qemu-img 8.0+ prints them. */
function graphInfo(info: QDictValue, level: number, path: string, profile: Profile, out: string[]): void {
  const children = Array.isArray(info.children) ? info.children : [];
  nodeInfo(info, level, level > 0 && children.length === 0, profile, out);
  for (const child of children) {
    if (!isQDict(child) || !isQDict(child.info)) continue;
    const name = escapeForTerminal(str(child.name) ?? '');
    out.push(`${'    '.repeat(level)}Child node '${path}/${name}':\n`);
    graphInfo(child.info, level + 1, `${path}/${name}`, profile, out);
  }
}

/** Human `info` of one image. */
export function renderHumanInfo(info: QDictValue, profile: Profile): string {
  const out: string[] = [];
  graphInfo(info, 0, '', profile, out);
  return out.join('');
}

/** Human `info --backing-chain`: the images, separated by a blank line. */
export function renderHumanChain(infos: QDictValue[], profile: Profile): string {
  return infos.map((i) => renderHumanInfo(i, profile)).join('\n');
}
