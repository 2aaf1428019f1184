// The formats whose qemu driver writes compressed clusters (block_driver_can_compress): qemu-img
// refuses -c (convert, rebase) for any other with "Compression not supported for this file format".
export const COMPRESSING_FORMATS: ReadonlySet<string> = new Set(['qcow2', 'qcow', 'vmdk']);
