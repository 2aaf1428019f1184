// esbuild's binary loader turns an imported .wasm file into its bytes (scripts/build.mjs).
declare module '*.wasm' {
  const bytes: Uint8Array<ArrayBuffer>;
  export default bytes;
}
