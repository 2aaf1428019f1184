// The public library API (grows with the commands).
export type { Image, NodeInfo, Extent, BlockDevice, Driver } from './formats/types.ts';
export { ImageError } from './formats/types.ts';
