// Injected into the guest bundle only (scripts/build.mjs): the guest may read no file, so the
// zstd decoder's WebAssembly travels inside the bundle (esbuild's binary loader). The package
// exports no subpath, hence the path into node_modules.
import bytes from '../../../node_modules/@bokuweb/zstd-wasm/dist/common/zstd.wasm';
import { provideZstdWasm } from './zstd.ts';

provideZstdWasm(bytes);
