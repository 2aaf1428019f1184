/** A convert failure worded as qemu-img words it: printed as "<progname>: <line>" per line, exit 1. */
export class ConvertError extends Error {}
