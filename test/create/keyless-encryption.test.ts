// An encrypted create without its secret (create, convert -O and dd -O luks; qcow2's
// encrypt.format=luks): qemu-img 7.2 and 10.0 print their message and exit 1, and delete the
// output file even when it was there before the command (their LUKS create removes its file when
// it fails after the file stage). instar prints the same and exits alike, but refuses before it
// opens anything: a file that was there stays as it was (a deliberate difference, README.md).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { instarRun, qemuRun, tempDir } from '../dd/helpers.ts';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = tempDir('instar-keyless-'));
  writeFileSync(join(dir, 'in.raw'), Buffer.alloc(1024 * 1024, 7));
});
after(() => cleanup());

/** The command lines, given the file names to use; `sandboxed`: also run through the built CLI's sandbox. */
const CASES: { args: (x: string, input: string) => string[]; sandboxed?: boolean }[] = [
  { args: (x) => ['create', '-f', 'luks', x, '1M'], sandboxed: true },
  { args: (x) => ['create', '-f', 'luks', '--object', 'secret,id=s0,data=p', '-o', 'key-secret=s1', x, '1M'] },
  { args: (x) => ['create', '-f', 'qcow2', '-o', 'encrypt.format=luks', x, '1M'] },
  { args: (x, input) => ['convert', '-f', 'raw', '-O', 'luks', input, x], sandboxed: true },
  { args: (x, input) => ['dd', '-f', 'raw', '-O', 'luks', `if=${input}`, `of=${x}`] },
];

const OLD = Buffer.from('a file that was here before\n');

test('encrypted create without its secret: qemu\'s output and status; a file already there stays (qemu deletes it)', async () => {
  const target = join(dir, 'x.img');
  for (const version of VERSIONS) {
    for (const c of CASES) {
      const args = c.args(target, join(dir, 'in.raw'));
      const label = `${version}: ${args.join(' ')}`;
      writeFileSync(target, OLD);
      const q = qemuRun(version, args);
      assert.equal(q.status, 1, `${label}: ${q.stderr}`);
      assert.match(q.stderr, /key-secret' is required for cipher|No secret with id 's1'/, label);
      assert.equal(existsSync(target), false, `${label}: qemu deleted the file that was there`);
      writeFileSync(target, OLD);
      for (const sandboxed of c.sandboxed ? [false, true] : [false]) {
        const i = await instarRun(version, args, { sandboxed });
        assert.equal(i.stderr, q.stderr, label);
        assert.equal(i.stdout, q.stdout, label);
        assert.equal(i.status, q.status, label);
        assert.deepEqual(readFileSync(target), OLD, `${label}: instar left the file as it was`);
      }
    }
  }
});

test('encrypted create without its secret and no file there: neither leaves one', async () => {
  const target = join(dir, 'x.img');
  for (const version of VERSIONS) {
    const args = ['create', '-f', 'luks', target, '1M'];
    const q = qemuRun(version, args);
    assert.equal(existsSync(target), false, version);
    const i = await instarRun(version, args);
    assert.equal(i.stderr, q.stderr, version);
    assert.equal(i.status, 1, version);
    assert.equal(existsSync(target), false, version);
  }
});
