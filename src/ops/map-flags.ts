// The flag bits of a map entry on the wire (MapEntry[3]): shared by the guest's map op and the
// host's renderer, in a file of its own so that the host does not bundle the op (and every
// format driver behind it) to read four constants.
export const FLAG = { present: 1, zero: 2, data: 4, compressed: 8 } as const;
