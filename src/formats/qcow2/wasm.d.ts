// The guest build turns an imported .wasm file into a string: its bytes, brotli-compressed, in
// base64 (scripts/build.mjs, packedWasm).
declare module '*.wasm' {
  const packed: string;
  export default packed;
}
