// -n: the target is used as it is (not created, not truncated). Zero runs of the source must
// then read as zeros, unless --target-is-zero says the target reads as zeros already; qemu makes
// them holes in a regular file (write-zeroes), and so does instar (the host punches the range),
// so the target's allocation is compared too. With -S 0 nothing is punched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { patternBytes, qemu, qemuIo, sha256, tempDir } from './helpers.ts';

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '4M']);
  qemuIo(join(dir, 'src.qcow2'), ['write -P 1 0 64k', 'write -z 1M 1M', 'write -P 2 3M 4k']);
});
after(() => cleanup());

function target(name: string, bytes: Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

const variants: [string, string[], () => Buffer][] = [
  ['over a larger target full of junk', ['-n'], () => patternBytes(6 * 1024 * 1024, 31)],
  ['over a target of exactly the size', ['-n'], () => patternBytes(4 * 1024 * 1024, 32)],
  ['--target-is-zero over zeros', ['-n', '--target-is-zero'], () => Buffer.alloc(5 * 1024 * 1024)],
  ['-S 0 over junk', ['-n', '-S', '0'], () => patternBytes(6 * 1024 * 1024, 33)],
  ['-S 64k over junk', ['-n', '-S', '64k'], () => patternBytes(6 * 1024 * 1024, 34)],
];

for (const [name, flags, content] of variants) {
  test(`convert -n ${name}: the same bytes as qemu-img`, () => {
    const bytes = content();
    const mine = target('mine.raw', bytes);
    const r = runInstar(['convert', ...flags, 'src.qcow2', mine], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(statSync(mine).size, bytes.length, '-n does not truncate');
    for (const v of VERSIONS) {
      const theirs = target(`q${v}.raw`, bytes);
      const q = runQemu(v, ['convert', ...flags, 'src.qcow2', theirs], { cwd: dir });
      assert.equal(q.status, 0, q.stderr);
      assert.equal(sha256(mine), sha256(theirs), `bytes differ from qemu-img ${v}`);
      assert.equal(statSync(mine).blocks, statSync(theirs).blocks, `allocated blocks differ from qemu-img ${v}`);
    }
  });
}
