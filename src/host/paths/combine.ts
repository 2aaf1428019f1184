/** True when `name` starts with a qemu protocol prefix ("nbd:", "json:", "http:" …). */
export function hasProtocol(name: string): boolean {
  // qemu: a prefix of [A-Za-z0-9.+-] up to the first ':' that comes before any '/'.
  const colon = name.indexOf(':');
  if (colon <= 0) return false;
  const slash = name.indexOf('/');
  if (slash >= 0 && slash < colon) return false;
  return /^[A-Za-z0-9.+-]+$/.test(name.slice(0, colon)) || name.startsWith('json:');
}

/**
 * qemu's rule for a file named by an image (backing file, data file, extent): absolute names and
 * protocol names stand as they are, relative ones are relative to the referring image's directory
 * as it was spelled (no normalisation, so "dir/a.qcow2" + "b" gives "dir/b").
 */
export function combinePath(referrer: string, name: string): string {
  if (name.startsWith('/') || hasProtocol(name)) return name;
  const slash = referrer.lastIndexOf('/');
  return slash < 0 ? name : referrer.slice(0, slash + 1) + name;
}
