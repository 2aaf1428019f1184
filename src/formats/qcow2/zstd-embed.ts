// Injected into the guest bundle only (scripts/build.mjs): the guest may read no file, so the
// zstd decoder's WebAssembly travels inside the bundle, brotli-compressed and in base64. V8 scans
// every character of the bundle at each guest start: the plain 246 KiB module as base64 cost
// ~7 ms of every sandboxed op; packed it is 78 KiB, and it is unpacked only when a zstd cluster
// is met. The package exports no subpath, hence the path into node_modules.
import { brotliDecompressSync } from 'node:zlib';
import packed from '../../../node_modules/@bokuweb/zstd-wasm/dist/common/zstd.wasm';
import { provideZstdWasm } from './zstd.ts';

provideZstdWasm(() => new Uint8Array(brotliDecompressSync(Buffer.from(packed, 'base64'))));
