// CLI-level differential cases shared by the vdi, qcow, parallels and qed suites: the built
// instar (`qemu-img` alias) against both oracles, byte for byte, for info and map.
import { test } from 'node:test';
import { closeSync, fsyncSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { assertSameOutput } from '../../differential/harness.ts';

/** info (human and json) and map (human and json) on every image; a few of them sandboxed. */
export function cliCases(dir: () => string, format: string, images: string[], opts: { chains?: string[]; sandboxed?: string[] } = {}): void {
  for (const file of images) {
    const sandboxed = opts.sandboxed?.includes(file) ? true : undefined;
    for (const args of [
      ['info', file],
      ['info', '--output=json', file],
      ['info', '-f', format, '--output=json', file],
      ['map', file],
      ['map', '--output=json', '-f', format, file],
    ]) {
      test(`${format} CLI: ${args.join(' ')}${sandboxed ? ' (sandboxed)' : ''}`, async () => await assertSameOutput(dir(), args, { sandboxed }));
    }
  }
  for (const file of opts.chains ?? []) {
    for (const output of ['human', 'json']) {
      test(`${format} CLI: info --backing-chain --output=${output} ${file}`, async () =>
        await assertSameOutput(dir(), ['info', '--backing-chain', `--output=${output}`, file], { sandboxed: true }));
    }
  }
}

/** Open errors: the whole stderr and exit status of `info` on a hostile image. */
export function cliErrorCases(dir: () => string, format: string, files: string[], sandboxed = true): void {
  for (const file of files) {
    test(`${format} CLI: info on hostile ${file}${sandboxed ? ' (sandboxed)' : ''}`, async () =>
      await assertSameOutput(dir(), ['info', '-f', format, file], { sandboxed }));
  }
}

/**
 * Flushes every file in the image directory: right after qemu writes them, ext4's delayed
 * allocation can still change st_blocks (actual-size, map's hole detection) between two runs.
 */
export function settle(dir: string): void {
  for (const name of readdirSync(dir)) {
    const fd = openSync(join(dir, name), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
