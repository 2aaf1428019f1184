import { ImageError, type BlockDevice } from './types.ts';
import { drivers } from './registry.ts';

export interface DetectOptions {
  unsafeQuirks: boolean;
}

/** Picks the format by probe score; unknown content is refused unless unsafe quirks allow raw. */
export function detectFormat(dev: BlockDevice, opts: DetectOptions): string {
  const head = new Uint8Array(Math.min(dev.size, 2048));
  dev.read(head, 0);
  let best = { name: '', score: 0 };
  for (const d of drivers) {
    if (d.name === 'raw') continue;
    const score = d.probe(head);
    if (score > best.score) best = { name: d.name, score };
  }
  if (best.score > 0) return best.name;
  if (opts.unsafeQuirks) return 'raw';
  throw new ImageError('Could not determine image format');
}
