// qcow2's data-file rules are checked when qemu opens the data file: every command but info
// (BDRV_O_NO_IO) refuses such an image at open, before printing anything. Compared byte for
// byte (stdout, stderr, status) with both oracles on images built here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { qemu, tempDir } from './helpers.ts';

/** Header fields (qcow2 v3): incompatible and autoclear feature bits. */
const INCOMPATIBLE = 72;
const AUTOCLEAR = 88;

const images: [string, number, bigint, string][] = [
  ['data-file-raw without a data file', AUTOCLEAR, 2n, 'data-file-raw requires a data file'],
  ['the external data file bit without its name', INCOMPATIBLE, 4n, "'data-file' is required for this image"],
];

/** Each command line, given the image path and a name for an output file. */
const commands: [string, (img: string, out: string) => string[]][] = [
  ['info', (img) => ['info', img]],
  ['check', (img) => ['check', img]],
  ['map', (img) => ['map', '--output=json', img]],
  ['compare', (img) => ['compare', img, img]],
  ['convert', (img, out) => ['convert', '-O', 'raw', img, out]],
];

for (const [what, field, bit, message] of images) {
  test(`${what}: refused at open by every command but info, as qemu-img does`, (t) => {
    const dir = tempDir(t);
    const img = join(dir, 'img');
    qemu('10.0', ['create', '-q', '-f', 'qcow2', img, '1M']);
    qemu('10.0', ['-c', 'write -P 5 0 64k', img], 'qemu-io');
    const bytes = readFileSync(img);
    bytes.writeBigUInt64BE(bytes.readBigUInt64BE(field) | bit, field);
    writeFileSync(img, bytes);
    for (const v of VERSIONS) {
      for (const [name, args] of commands) {
        const q = runQemu(v, args(img, join(dir, `out-qemu-${v}.raw`)), { timeoutMs: 20_000 });
        const i = runInstar([...args(img, join(dir, `out-instar-${v}.raw`)), '--qemu-version', v]);
        const label = `${v} ${name}`;
        assert.equal(i.stdout, q.stdout, `${label} stdout`);
        assert.equal(i.stderr, q.stderr, `${label} stderr`);
        assert.equal(i.status, q.status, `${label} status`);
        if (name === 'info') assert.equal(q.status, 0, `${label}: info opens it`);
        else assert.equal(q.stderr, `qemu-img: Could not open '${img}': ${message}\n`, `${label}: refused at open`);
      }
    }
  });
}
