// Hostile images whose danger is a file they name: backing files, qcow2 external data files
// (CVE-2024-32498), VMDK extents (CVE-2022-47951), VHD/VHDX parent locators, backing loops.
import { join } from 'node:path';
import type { CraftContext, HostileCase } from './case.ts';
import { qemuMade } from './case.ts';
import { qcow2 } from './craft/qcow2.ts';
import { descriptor, flatDescriptor, withEmbeddedDescriptor } from './craft/vmdk.ts';
import { utf16, vhd, vhdxWithParent } from './craft/vhd.ts';
import { opens, refused, UNSAFE, type Expectations } from './outcomes.ts';

const OUTSIDE = /outside the allowed paths/;
const PROTOCOL = /names the protocol/;
/** Any refusal of a named file by the path policy. */
const POLICY = /instar's path policy/;
const LOOP = /infinite loop|loop/i;

const JSON_PASSWD = 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}';
const JSON_NBD = 'json:{"driver":"raw","file":{"driver":"nbd","host":"127.0.0.1","port":"10809"}}';

/** Backing names and the one file each must never touch. */
function hostileNames(ctx: CraftContext, depthToRoot: number): { name: string; value: string; target: string; reason: RegExp }[] {
  const up = '../'.repeat(depthToRoot + 4);
  return [
    { name: 'etc-passwd', value: '/etc/passwd', target: '/etc/passwd', reason: OUTSIDE },
    { name: 'etc-shadow', value: '/etc/shadow', target: '/etc/shadow', reason: OUTSIDE },
    { name: 'dotdot-passwd', value: `${up}etc/passwd`, target: '/etc/passwd', reason: OUTSIDE },
    { name: 'dotdot-inside-out', value: `./a/../../${'../'.repeat(depthToRoot)}etc/shadow`, target: '/etc/shadow', reason: POLICY },
    { name: 'proc-environ', value: '/proc/self/environ', target: '/proc/self/environ', reason: OUTSIDE },
    { name: 'proc-pid-mem', value: '/proc/1/mem', target: '/proc/1/mem', reason: OUTSIDE },
    { name: 'dev-zero', value: '/dev/zero', target: '/dev/zero', reason: OUTSIDE },
    { name: 'dev-stdin', value: '/dev/stdin', target: '/dev/stdin', reason: OUTSIDE },
    { name: 'outside-file', value: join(ctx.outside, 'secret.raw'), target: join(ctx.outside, 'secret.raw'), reason: OUTSIDE },
    { name: 'symlink-out', value: 'link-out', target: join(ctx.outside, 'secret.raw'), reason: /symbolic link/ },
    { name: 'symlink-chain', value: 'link-a', target: '/etc/shadow', reason: /symbolic link/ },
    { name: 'symlink-dir', value: 'etcdir/passwd', target: '/etc/passwd', reason: /symbolic link/ },
    { name: 'json-file', value: JSON_PASSWD, target: '/etc/passwd', reason: PROTOCOL },
    { name: 'json-nbd', value: JSON_NBD, target: '/etc/passwd', reason: PROTOCOL },
    { name: 'nbd-url', value: 'nbd://127.0.0.1:10809/x', target: '/etc/passwd', reason: PROTOCOL },
    { name: 'nbd-unix', value: 'nbd+unix:///x?socket=/run/x.sock', target: '/run/x.sock', reason: PROTOCOL },
    { name: 'http-url', value: 'http://127.0.0.1:1/disk.qcow2', target: '/etc/passwd', reason: PROTOCOL },
    { name: 'https-url', value: 'https://127.0.0.1:1/disk.qcow2', target: '/etc/passwd', reason: PROTOCOL },
    { name: 'file-url', value: 'file:/etc/passwd', target: '/etc/passwd', reason: PROTOCOL },
    { name: 'file-url-slashes', value: 'file:///etc/shadow', target: '/etc/shadow', reason: PROTOCOL },
    { name: 'ssh-url', value: 'ssh://root@127.0.0.1/etc/shadow', target: '/etc/shadow', reason: PROTOCOL },
  ];
}

/** Symlinks every case directory has, pointing out of it. */
function links(ctx: CraftContext): HostileCase['files'] {
  return {
    'link-out': { symlink: join(ctx.outside, 'secret.raw') },
    'link-a': { symlink: 'link-b' },
    'link-b': { symlink: '/etc/shadow' },
    etcdir: { symlink: '/etc' },
  };
}

const chainOf = (names: string[]): Buffer[] => names.map((next) => qcow2({ backing: next, backingFormat: 'qcow2' }));

export function referenceCases(ctx: CraftContext, caseDepth: number): HostileCase[] {
  const cases: HostileCase[] = [];
  const hostile = hostileNames(ctx, caseDepth);
  const inspectUnsafe = UNSAFE;

  for (const h of hostile) {
    cases.push({
      name: `backing-${h.name}`, category: 'backing file',
      files: { ...links(ctx), top: qcow2({ backing: h.value, backingFormat: 'raw' }) },
      targets: [h.target], expect: refused(h.reason, inspectUnsafe),
    });
  }
  for (const h of hostile.filter((x) => ['etc-passwd', 'symlink-out', 'json-file'].includes(x.name))) {
    cases.push({
      name: `backing-v2-${h.name}`, category: 'backing file',
      files: { ...links(ctx), top: qcow2({ version: 2, backing: h.value }) },
      targets: [h.target], expect: refused(h.reason, inspectUnsafe),
    });
  }
  cases.push({
    name: 'backing-name-terminal-escapes', category: 'backing file',
    files: { top: qcow2({ backing: '/etc/passwd\x1b[2J\x1b]0;pwned\x07', backingFormat: 'raw' }) },
    targets: ['/etc/passwd'], expect: refused(/contains control characters/, inspectUnsafe),
  });
  cases.push({
    name: 'backing-name-nul', category: 'backing file',
    files: { top: qcow2({ backing: Buffer.from('base.raw\0/etc/passwd', 'latin1'), backingFormat: 'raw' }) },
    targets: ['/etc/passwd'], expect: refused(undefined, inspectUnsafe),
  });
  cases.push({
    name: 'backing-format-host-device', category: 'backing file',
    files: { top: qcow2({ backing: '/dev/sda', backingFormat: 'host_device' }) },
    targets: ['/dev/sda'], expect: refused(undefined, inspectUnsafe),
  });

  // qcow2 external data files (CVE-2024-32498): qemu opens them read-write with the image.
  for (const h of hostile.filter((x) => ['etc-passwd', 'etc-shadow', 'dotdot-passwd', 'dev-zero', 'symlink-out', 'json-file', 'nbd-url', 'outside-file'].includes(x.name))) {
    cases.push({
      name: `data-file-${h.name}`, category: 'qcow2 data file',
      files: { ...links(ctx), top: qcow2({ dataFile: h.value }) },
      targets: [h.target], expect: dataFile(h.reason),
    });
  }
  cases.push({
    name: 'data-file-raw-etc-passwd', category: 'qcow2 data file',
    files: { top: qcow2({ dataFile: '/etc/passwd', autoclear: 2n }) },
    targets: ['/etc/passwd'], expect: dataFile(OUTSIDE),
  });

  // VMDK descriptors naming extents outside (CVE-2022-47951) or via protocols.
  for (const h of hostile.filter((x) => ['etc-passwd', 'etc-shadow', 'dotdot-passwd', 'proc-environ', 'dev-zero', 'symlink-out', 'json-file', 'symlink-dir'].includes(x.name))) {
    cases.push({
      name: `vmdk-extent-${h.name}`, category: 'vmdk extent',
      files: { ...links(ctx), top: flatDescriptor(h.value) },
      // qemu's extent-line parser already rejects a quoted json: name (its quotes end the name).
      targets: [h.target], expect: refused(h.name === 'json-file' ? /Invalid extent line/ : h.reason, inspectUnsafe),
    });
  }
  cases.push({
    name: 'vmdk-extent-second-of-two', category: 'vmdk extent',
    files: { 'ok-flat.raw': Buffer.alloc(1048576), top: descriptor({ extents: [{ sectors: 2048, type: 'FLAT', file: 'ok-flat.raw' }, { sectors: 2048, type: 'FLAT', file: '/etc/shadow' }] }) },
    targets: ['/etc/shadow'], expect: refused(OUTSIDE, inspectUnsafe),
  });
  cases.push({
    name: 'vmdk-extent-sparse-type', category: 'vmdk extent',
    files: { top: descriptor({ createType: 'monolithicSparse', extents: [{ sectors: 2048, type: 'SPARSE', file: '/etc/passwd' }] }) },
    targets: ['/etc/passwd'], expect: refused(/Unsupported image type 'monolithicSparse'/, inspectUnsafe),
  });
  cases.push({
    name: 'vmdk-extent-vmfs', category: 'vmdk extent',
    files: { top: descriptor({ createType: 'vmfs', extents: [{ sectors: 2048, type: 'VMFS', file: '/dev/sda' }] }) },
    targets: ['/dev/sda'], expect: refused(undefined, inspectUnsafe),
  });
  cases.push({
    name: 'vmdk-parent-hint-passwd', category: 'vmdk extent',
    files: { 'flat.raw': Buffer.alloc(1048576), top: descriptor({ parentCID: '87654321', parentHint: '/etc/passwd', extents: [{ sectors: 2048, type: 'FLAT', file: 'flat.raw' }] }) },
    targets: ['/etc/passwd'], expect: refused(undefined, inspectUnsafe),
  });
  cases.push({
    name: 'vmdk-embedded-descriptor-extent', category: 'vmdk extent',
    files: { top: withEmbeddedDescriptor(qemuMade('vmdk', '1M'), descriptor({ createType: 'monolithicSparse', extents: [{ sectors: 2048, type: 'SPARSE', file: '/etc/passwd' }] })) },
    // A sparse image's own embedded descriptor does not name files: its extent is itself.
    targets: ['/etc/passwd'], expect: opens(undefined, UNSAFE),
  });

  // VHD: a differencing disk's parent is named three ways; qemu never opens it (no vpc backing).
  const vhdCase = (name: string, locators: Parameters<typeof vhd>[0]['locators'], parentName = '', target = '/etc/passwd'): HostileCase => ({
    name: `vhd-parent-${name}`, category: 'vhd/vhdx parent locator',
    files: { top: vhd({ parentName, locators }) }, targets: [target], expect: differencingVhd,
  });
  cases.push(vhdCase('name-absolute', [], '/etc/passwd'));
  cases.push(vhdCase('w2ku-volume', [{ code: 'W2ku', data: utf16('C:\\Windows\\System32\\config\\SAM') }]));
  cases.push(vhdCase('w2ru-dotdot', [{ code: 'W2ru', data: utf16('..\\..\\..\\..\\etc\\passwd') }], 'passwd'));
  cases.push(vhdCase('unc', [{ code: 'W2ku', data: utf16('\\\\127.0.0.1\\share\\parent.vhd') }]));
  cases.push(vhdCase('volume-guid', [{ code: 'W2ku', data: utf16('\\\\?\\Volume{12345678-1234-1234-1234-123456789abc}\\p.vhd') }]));
  cases.push(vhdCase('macx-url', [{ code: 'MacX', data: Buffer.from('file:///etc/passwd') }]));
  cases.push(vhdCase('overlong', [{ code: 'W2ku', data: utf16('A'.repeat(40000)), length: 0xfffffff0 }]));
  cases.push(vhdCase('past-eof', [{ code: 'W2ku', data: utf16('x'), offset: 1n << 62n }]));
  cases.push(vhdCase('conflicting', [{ code: 'W2ku', data: utf16('C:\\a.vhd') }, { code: 'W2ru', data: utf16('..\\..\\etc\\shadow') }, { code: 'MacX', data: Buffer.from('file:///etc/passwd') }], 'b.vhd', '/etc/shadow'));

  // VHDX differencing disks (qemu refuses them; instar too).
  const vhdxBase = qemuMade('vhdx', '1M');
  const vhdxCase = (name: string, pairs: [string, string][]): HostileCase => ({
    name: `vhdx-parent-${name}`, category: 'vhd/vhdx parent locator',
    files: { top: vhdxWithParent(vhdxBase, pairs) }, targets: ['/etc/passwd'], expect: refused(undefined, inspectUnsafe),
  });
  const linkage: [string, string] = ['parent_linkage', '{12345678-1234-1234-1234-123456789abc}'];
  cases.push(vhdxCase('absolute', [linkage, ['absolute_win32_path', 'C:\\etc\\passwd']]));
  cases.push(vhdxCase('relative', [linkage, ['relative_path', '..\\..\\..\\etc\\passwd']]));
  cases.push(vhdxCase('unc', [linkage, ['absolute_win32_path', '\\\\127.0.0.1\\share\\p.vhdx']]));
  cases.push(vhdxCase('volume', [linkage, ['volume_path', '\\\\?\\Volume{12345678-1234-1234-1234-123456789abc}\\p.vhdx']]));
  cases.push(vhdxCase('overlong', [linkage, ['relative_path', 'A'.repeat(30000)]]));
  cases.push(vhdxCase('conflicting', [linkage, ['relative_path', 'a.vhdx'], ['relative_path', '/etc/passwd'], ['absolute_win32_path', 'C:\\b.vhdx']]));

  // Backing loops and depth.
  const loop: Expectations = refused(LOOP, inspectUnsafe);
  cases.push({ name: 'loop-self', category: 'backing loop', files: { top: qcow2({ backing: 'top', backingFormat: 'qcow2' }) }, targets: [], expect: loop });
  cases.push({ name: 'loop-self-dotslash', category: 'backing loop', files: { top: qcow2({ backing: './top', backingFormat: 'qcow2' }) }, targets: [], expect: loop });
  cases.push({ name: 'loop-a-b-a', category: 'backing loop', files: Object.fromEntries(chainOf(['b', 'top']).map((b, i) => [['top', 'b'][i], b])), targets: [], expect: loop });
  cases.push({ name: 'loop-a-b-c-a', category: 'backing loop', files: Object.fromEntries(chainOf(['b', 'c', 'top']).map((b, i) => [['top', 'b', 'c'][i], b])), targets: [], expect: loop });
  cases.push({ name: 'loop-via-symlink', category: 'backing loop', files: { top: qcow2({ backing: 'alias', backingFormat: 'qcow2' }), alias: { symlink: 'top' } }, targets: [], expect: loop });
  const deep = (levels: number): HostileCase['files'] => {
    const files: HostileCase['files'] = {};
    for (let i = 0; i < levels; i++) files[i === 0 ? 'top' : `l${i}`] = i === levels - 1 ? qcow2() : qcow2({ backing: `l${i + 1}`, backingFormat: 'qcow2' });
    return files;
  };
  cases.push({
    name: 'chain-depth-17', category: 'backing loop', files: deep(18), targets: [], expect: refused(/longer than 16 files/, inspectUnsafe),
  });
  return cases;
}

/**
 * An external data file: `info` reports the name without opening it (it reads no data); the
 * commands that read data refuse it through the path policy. inspect: UNSAFE.
 */
function dataFile(reason: RegExp): Expectations {
  return { ...refused(reason, UNSAFE), info: { exit: 0, stdout: /data file: / } };
}

/** qemu reads a differencing VHD as a dynamic disk and never opens its parent; instar does the same, and inspect calls it UNSAFE. */
const differencingVhd: Expectations = opens(/file format: vpc/, UNSAFE);
