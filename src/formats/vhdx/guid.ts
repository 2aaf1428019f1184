// The GUIDs VHDX names its regions and metadata items by, as they are stored on disk
// (Microsoft's mixed-endian layout: the first three fields little-endian).

function guid(text: string): Uint8Array {
  const hex = text.replace(/-/g, '');
  const b = Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

export const BAT_REGION = guid('2dc27766-f623-4200-9d64-115e9bfd4a08');
export const METADATA_REGION = guid('8b7ca206-4790-4b9a-b8fe-575f050f886e');
export const FILE_PARAMETERS = guid('caa16737-fa36-4d43-b3b6-33f0aa44e76b');
export const VIRTUAL_DISK_SIZE = guid('2fa54224-cd1b-4876-b211-5dbed83bf4b8');
export const PAGE83_DATA = guid('beca12ab-b2e6-4523-93ef-c309e000c746');
export const LOGICAL_SECTOR_SIZE = guid('8141bf1d-a96f-4709-ba47-f233a8faab5f');
export const PHYSICAL_SECTOR_SIZE = guid('cda348c7-445d-4471-9cc9-e9885251c556');
export const PARENT_LOCATOR = guid('a8d35f2d-b30b-454d-abf7-d3d84834ab0c');

export function guidEqual(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function guidIsZero(a: Uint8Array): boolean {
  return a.every((x) => x === 0);
}
