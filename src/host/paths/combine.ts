// qemu's rules for turning a name found inside an image into the name it opens (block.c:
// path_has_protocol, path_combine, bdrv_get_full_backing_filename_from_filename; measured against
// qemu-img 7.2 and 10.0). No normalisation happens here: qemu keeps names as spelled.

/** Which kind of file an image names; each kind has its own combining rule in qemu. */
export type ReferenceRole = 'backing' | 'data-file' | 'extent';

/**
 * True when qemu would read `name` as "<protocol>:...": the first ':' comes before any '/'.
 * qemu accepts any characters before the colon ("a b:c" and ":x" count), so this does too.
 */
export function hasProtocol(name: string): boolean {
  const colon = name.indexOf(':');
  if (colon < 0) return false;
  const slash = name.indexOf('/');
  return slash < 0 || colon < slash;
}

/**
 * qemu's path_combine: an absolute `name` stands as it is; otherwise it replaces everything after
 * the last '/' of `base` (and after a leading "<protocol>:" of `base`, so "file:a" + "b" = "file:b").
 */
export function pathCombine(base: string, name: string): string {
  if (name.startsWith('/')) return name;
  let keep = 0;
  if (hasProtocol(base)) keep = base.indexOf(':') + 1;
  const slash = base.lastIndexOf('/');
  if (slash + 1 > keep) keep = slash + 1;
  return base.slice(0, keep) + name;
}

/**
 * qemu's rule for a backing file name: absolute names and protocol names stand as they are,
 * relative ones are relative to the referring image's directory as it was spelled
 * ("dir/a.qcow2" + "b" gives "dir/b").
 */
export function combinePath(referrer: string, name: string): string {
  if (name.startsWith('/') || hasProtocol(name)) return name;
  return pathCombine(referrer, name);
}

/**
 * The name qemu opens for a file of the given role named by `referrer`:
 * - backing: combinePath (relative to the referrer's directory);
 * - extent (VMDK descriptors): path_combine, which does not look for a protocol in the name;
 * - data-file (qcow2 external data file): the name as it is, so a relative one is relative to
 *   the current directory, not to the image (measured: qemu-io 7.2 and 10.0 open "dat.raw" in the
 *   cwd for an image "d/x.qcow2" whose data file is "dat.raw").
 */
export function referencedPath(referrer: string, name: string, role: ReferenceRole): string {
  switch (role) {
    case 'backing': return combinePath(referrer, name);
    case 'extent': return pathCombine(referrer, name);
    case 'data-file': return name;
  }
}
