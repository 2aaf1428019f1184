// `create -f file`: raw's plan; the options are the protocol's own (size, nocow, preallocation,
// extent_size_hint), which raw only inherits from the protocol below it.
import type { CreateCapability } from '../types.ts';
import { FILE_PROTOCOL_CREATE_OPTIONS, rawCreate } from '../raw/create.ts';

export const fileCreate: CreateCapability = { ...rawCreate, options: FILE_PROTOCOL_CREATE_OPTIONS };
