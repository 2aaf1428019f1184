/** A convert failure worded as qemu-img words it: printed as "<progname>: <line>" per line, exit 1. */
export class ConvertError extends Error {}

/** One error_report whose text has line breaks: only its first line follows "<progname>: ". */
export class ConvertErrorText extends ConvertError {}

/**
 * qemu-img reported an error and stopped with nothing written, yet exits 0 (its error path leaves
 * the status as it was, and prints 100% with -p): the message is printed, the status is 0.
 */
export class ConvertStopsWithSuccess extends ConvertError {}

/** qemu-img's convert failed without a message (exit 1): nothing is printed. */
export class ConvertQuietFailure extends ConvertError {}
