// instar's own help texts. qemu-img's help wording is not reproduced (its text is QEMU's);
// the command synopses follow the interface, which the option tables define exactly.

/** One line per command: what it does, in the order qemu-img lists its commands. */
export const COMMAND_SUMMARIES: Record<string, string> = {
  amend: 'change format-specific options of an existing image',
  bench: 'time a run of image reads or writes',
  bitmap: 'add, remove, clear, enable, disable or merge persistent dirty bitmaps',
  check: 'check an image for consistency and optionally repair it',
  commit: 'write an overlay\'s changes down into its backing image',
  compare: 'tell whether two images have the same guest-visible content',
  convert: 'copy an image into another, changing its format if asked',
  create: 'make a new image',
  dd: 'copy part of an image, dd style (if=, of=, bs=, count=, skip=)',
  info: 'show what an image is: format, sizes, backing file, format details',
  map: 'show how the image\'s guest offsets map to allocation and storage',
  measure: 'tell how large a file an image of a format would need',
  rebase: 'change the backing file of an image',
  resize: 'grow or shrink an image\'s virtual size',
  snapshot: 'list, create, apply or delete internal snapshots',
  inspect: 'instar only: judge whether an untrusted upload is safe to use',
};

/** Operands each command takes after its options. */
export const COMMAND_OPERANDS: Record<string, string> = {
  amend: '-o OPTIONS FILENAME',
  bench: 'FILENAME',
  bitmap: 'FILENAME BITMAP',
  check: 'FILENAME',
  commit: 'FILENAME',
  compare: 'FILENAME1 FILENAME2',
  convert: 'SOURCE [SOURCE2 ...] TARGET',
  create: 'FILENAME [SIZE]',
  dd: 'if=INPUT of=OUTPUT [bs=SIZE] [count=N] [skip=N]',
  info: 'FILENAME',
  map: 'FILENAME',
  measure: '--size SIZE | FILENAME',
  rebase: '-b BACKING FILENAME',
  resize: 'FILENAME [+|-]SIZE',
  snapshot: '-l | -c NAME | -a NAME | -d NAME FILENAME',
  inspect: 'FILENAME | -',
};

/** Short explanations of option keys (the canonical long names of the option tables). */
export const OPTION_HELP: Record<string, string> = {
  help: 'show this help',
  quiet: 'print nothing but errors',
  progress: 'show progress',
  object: 'define an object, e.g. secret,id=ID,data=...|file=...',
  'image-opts': 'FILENAME is an option string (driver=...,file.filename=...)',
  'source-image-opts': 'the source is an option string',
  'target-image-opts': 'the target is an option string',
  format: 'the image format (detected when absent)',
  output: 'human or json',
  'force-share': 'open with shared locks (read-only use)',
  cache: 'cache mode (accepted for compatibility)',
  'backing-chain': 'show every image of the backing chain',
  repair: 'repair leaks or all errors',
  'start-offset': 'first guest offset to report',
  'max-length': 'how many bytes to report',
  options: 'format-specific options, name=value,...',
  backing: 'backing file name',
  'backing-format': 'backing file format',
  'backing-unsafe': 'do not open the backing file',
  size: 'a virtual size instead of a source image',
};

export const INSTAR_OPTIONS_HELP = [
  '  --sandbox=auto|strict|none  where image bytes are parsed (default auto: every available layer)',
  '  --debug                     print the active sandbox layers',
  '  --qemu-version X.Y          qemu-img version whose output to reproduce (default: the installed one)',
  '  --allow-path DIR            let images name files below DIR too (repeatable)',
  '  --unsafe-quirks             restore qemu-img\'s unsafe behaviour (unknown files read as raw)',
  '  --ignore-quirks             drop harmless qemu-img output oddities',
].join('\n');
