/** A convert failure worded as qemu-img words it: printed as "<progname>: <line>" per line, exit 1. */
export class ConvertError extends Error {}

/** One error_report whose text has line breaks: only its first line follows "<progname>: ". */
export class ConvertErrorText extends ConvertError {}

/** qemu-img's convert failed without a message (exit 1): nothing is printed. */
export class ConvertQuietFailure extends ConvertError {}
