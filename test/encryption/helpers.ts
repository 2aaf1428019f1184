// Shared pieces of the encryption tests: encrypted images built by the oracles at test time
// (qemu-img 10.0 creates them; 7.2's LUKS creation fails at random here, FACTS.md), the
// oracles' decrypted output, and instar's in-process decrypted read.
import { openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { ImageDir } from '../differential/harness.ts';
import { execFile } from 'node:child_process';
import { oracle, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { findDriver } from '../../src/formats/registry.ts';
import { patternBytes } from '../convert/helpers.ts';

export const PASS = 'pass';
export const SECRET = `secret,id=s0,data=${PASS}`;

export const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** Runs an oracle asynchronously in the image directory, retrying (7.2 and 10.0 fail at random creating LUKS). */
export async function qemuAsync(images: ImageDir, args: string[], version: OracleVersion = '10.0', tool: 'qemu-img' | 'qemu-io' = 'qemu-img', retries = 4): Promise<void> {
  let last = '';
  for (let n = 0; n <= retries; n++) {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(oracle(version, tool), args, { cwd: images.dir, timeout: 120_000 }, (e, _out, stderr) => resolve({ code: e ? 1 : 0, stderr }));
    });
    if (r.code === 0) return;
    last = r.stderr;
  }
  throw new Error(`${tool} ${version} ${args.join(' ')} failed: ${last}`);
}

/**
 * LUKS images of `size` bytes holding seeded content, by name → -o creation options, built at
 * once (qemu-img spends ~10 s of wall time per image measuring PBKDF2 speed).
 */
export async function makeLuks(images: ImageDir, specs: Record<string, string>, size = 4 * 1024 * 1024, seed = 1): Promise<void> {
  await Promise.all(Object.entries(specs).map(([name, options]) => {
    writeFileSync(images.path(`${name}.src`), patternBytes(size, seed));
    return qemuAsync(images, ['convert', '--object', SECRET, '-f', 'raw', `${name}.src`, '-O', 'luks', '-o', `key-secret=s0,iter-time=10,${options}`, name]);
  }));
}

/** qemu-img convert's decrypted raw output of an image opened with --image-opts `opts`. */
export function oracleDecrypted(images: ImageDir, version: OracleVersion, imageOpts: string): Buffer {
  const out = `oracle-${version}-${Math.random().toString(36).slice(2)}.raw`;
  images.qemu(['convert', '--object', SECRET, '--image-opts', imageOpts, '-O', 'raw', out], { version });
  return readFileSync(images.path(out));
}

/** instar's in-process read of the whole disk, 1 MiB at a time (an unaligned start on purpose once). */
export function instarDecrypted(path: string, format: string, key: string | undefined = PASS): Buffer {
  const fd = openSync(path, 'r');
  try {
    const image = findDriver(format)!.open(new FdDevice(fd, false), { writable: false, key: key === undefined ? undefined : Buffer.from(key), keyRequired: true });
    const buf = Buffer.alloc(image.virtualSize);
    image.read(buf.subarray(0, 1000), 0);
    image.read(buf.subarray(1000, 1 << 20), 1000);
    for (let at = 1 << 20; at < buf.length; at += 1 << 20) image.read(buf.subarray(at, at + (1 << 20)), at);
    return buf;
  } finally {
    closeSync(fd);
  }
}

export { ImageDir, runQemu };
