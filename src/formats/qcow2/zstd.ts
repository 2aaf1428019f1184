// zstd frames decoded by the reference C decoder compiled to WebAssembly (@bokuweb/zstd-wasm,
// pinned: its export names are fixed by its build). The glue of that package starts the module
// asynchronously and reads the .wasm file from disk; instead the module is instantiated here,
// synchronously, the first time a zstd cluster is met (so starting a guest costs nothing), from
// bytes embedded (packed) in the guest bundle (zstd-embed.ts) or, outside the sandbox, read from the
// package beside this code.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

interface ZstdExports {
  memory: WebAssembly.Memory;
  isError(code: number): number;
  createDCtx(): number;
  decompressUsingDict(dctx: number, dst: number, dstCapacity: number, src: number, srcSize: number, dict: number, dictSize: number): number;
  malloc(size: number): number;
  free(ptr: number): void;
  /** ZSTD_compress(dst, dstCapacity, src, srcSize, level) (the writer's -c). */
  compress?(dst: number, dstCapacity: number, src: number, srcSize: number, level: number): number;
}

let embedded: (() => Uint8Array<ArrayBuffer>) | undefined;
let zstd: ZstdExports | undefined;
let dctx = 0;
/** One input and one output area in WASM memory, grown when a bigger cluster needs it. */
let area = { ptr: 0, size: 0 };

/** Called by the guest bundle's injected module with a way to unpack the embedded .wasm. */
export function provideZstdWasm(unpack: () => Uint8Array<ArrayBuffer>): void {
  embedded = unpack;
}

function wasmBytes(): Uint8Array<ArrayBuffer> {
  if (embedded) return embedded();
  const main = createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');
  return readFileSync(join(dirname(main), 'zstd.wasm'));
}

function instantiate(): ZstdExports {
  // Set once instantiated; the heap-growth import needs it.
  const mem: { memory?: WebAssembly.Memory } = {};
  const fail = () => {
    throw new Error('zstd: the WebAssembly module aborted');
  };
  // The five imports of the emscripten build: exit, keepalive, abort, timers, heap growth.
  const imports = {
    a: {
      a: fail,
      b: () => {},
      c: fail,
      d: () => 0,
      e: (requested: number) => {
        const grow = Math.ceil(((requested >>> 0) - mem.memory!.buffer.byteLength) / 65536);
        try {
          mem.memory!.grow(grow);
          return 1;
        } catch {
          return 0; // malloc then fails cleanly: the --data limit of the sandbox, for example
        }
      },
    },
  };
  const instance = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes()), imports);
  const x = instance.exports as Record<string, unknown>;
  if (!(x.f instanceof WebAssembly.Memory) || !['g', 'h', 'n', 'q', 's', 't'].every((k) => typeof x[k] === 'function')) {
    throw new Error('zstd: unexpected WebAssembly exports (was @bokuweb/zstd-wasm upgraded?)');
  }
  mem.memory = x.f;
  (x.g as () => void)(); // static constructors
  const fn = (k: string) => x[k] as (...args: number[]) => number;
  return {
    memory: x.f,
    isError: fn('h'),
    createDCtx: fn('n'),
    decompressUsingDict: fn('q'),
    malloc: fn('s'),
    free: fn('t') as (ptr: number) => void,
    compress: typeof x.m === 'function' ? fn('m') : undefined,
  };
}

/**
 * Decodes exactly one frame (`frame`, its whole compressed length) into at most `capacity`
 * bytes of `out` from `outAt`; returns how many bytes it produced, or -1 for any error,
 * including more output than `capacity`.
 */
export function decodeFrame(frame: Uint8Array, out: Uint8Array, outAt: number, capacity: number): number {
  zstd ??= instantiate();
  const z = zstd;
  if (dctx === 0) dctx = z.createDCtx();
  if (dctx === 0) return -1;
  const need = frame.length + capacity;
  if (area.size < need) {
    if (area.ptr) z.free(area.ptr);
    area = { ptr: z.malloc(need), size: need };
    if (area.ptr === 0) {
      area = { ptr: 0, size: 0 };
      return -1;
    }
  }
  const src = area.ptr;
  const dst = area.ptr + frame.length;
  new Uint8Array(z.memory.buffer, src, frame.length).set(frame);
  const n = z.decompressUsingDict(dctx, dst, capacity, src, frame.length, 0, 0);
  if (z.isError(n)) return -1;
  const produced = n >>> 0;
  if (produced > capacity) return -1;
  out.set(new Uint8Array(z.memory.buffer, dst, produced), outAt);
  return produced;
}

/**
 * One zstd frame of `data` at `level` (qemu's ZSTD_CLEVEL_DEFAULT is 3), or undefined when it would
 * not be shorter than `limit` bytes (qemu then writes the cluster uncompressed) or zstd fails.
 */
export function encodeFrame(data: Uint8Array, limit: number, level = 3): Uint8Array | undefined {
  zstd ??= instantiate();
  const z = zstd;
  if (!z.compress) return undefined;
  const need = data.length + limit;
  if (area.size < need) {
    if (area.ptr) z.free(area.ptr);
    area = { ptr: z.malloc(need), size: need };
    if (area.ptr === 0) {
      area = { ptr: 0, size: 0 };
      return undefined;
    }
  }
  const src = area.ptr;
  const dst = area.ptr + data.length;
  new Uint8Array(z.memory.buffer, src, data.length).set(data);
  const n = z.compress(dst, limit, src, data.length, level);
  if (z.isError(n)) return undefined;
  return new Uint8Array(z.memory.buffer, dst, n >>> 0).slice();
}
