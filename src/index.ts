// The public library API (grows with the commands).
export type { Image, NodeInfo, Extent, BlockDevice, Driver } from './formats/types.ts';
export { ImageError } from './formats/types.ts';
export { inspect, type InspectOptions } from './inspect/inspect.ts';
export type { InspectReport, CheckResult } from './inspect/types.ts';
