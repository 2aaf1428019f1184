// The public library API: `import { info, convert, inspect } from 'instar'`.
export { info, map, compare, convert, check, measure, create, resize, InstarError, type CommonOptions, type ImageInfo, type ImageCheck, type MeasureInfo, type MapEntry, type ByteValue } from './api.ts';
export { inspect, type InspectOptions } from './inspect/inspect.ts';
export type { InspectReport, CheckResult } from './inspect/types.ts';
export type { Image, NodeInfo, Extent, BlockDevice, Driver, SnapshotInfo, FormatSpecific } from './formats/types.ts';
export { ImageError } from './formats/types.ts';
