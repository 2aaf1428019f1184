// dd's operands against both oracles: every value of bs=, count= and skip= that qemu's parsers of
// each version take or refuse differently (suffixes, hex, octal, fractions, signs, white space,
// int and int64 bounds), and malformed operand lists. stdout, stderr and exit status compared, and
// the output file byte for byte when one is made. In-process: many cases, milliseconds each.
import { test, before, after } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { sameDd, tempDir } from './helpers.ts';
import { prng } from '../helpers/xorshift.ts';

let dir: string;
let cleanup: () => void;
let input: string;
before(() => {
  ({ dir, cleanup } = tempDir('instar-dd-operands-'));
  input = join(dir, 'in.raw');
  // 8 KiB + 100 bytes: a size that is no multiple of a sector, as qemu's raw driver rounds it up.
  const next = prng(7);
  const bytes = Buffer.alloc(8 * 1024 + 100);
  for (let i = 0; i + 4 <= bytes.length; i += 4) bytes.writeUInt32LE(next(), i);
  writeFileSync(input, bytes);
});
after(() => cleanup());

/** Runs `dd args` with both; compares messages, status and the output file. */
const same = (version: (typeof VERSIONS)[number], args: string[], label: string) => sameDd(version, args, join(dir, 'out.raw'), label);

const VALUES = ['0', '3', '0x10', '0X10', '010', '08', '0x', '1.5', '1.k', '.5k', '1e3', '+5', ' 12', ' -0', '-0', '-1', '1K', '12b', '1kb',
  '0x1k', '7E', '8E', '9223372036854775807', '9223372036854775808', '18446744073709551616', '2147483647', '2147483648', '1 ', '', 'abc'];

for (const version of VERSIONS) {
  for (const operand of ['bs', 'count', 'skip']) {
    test(`${version}: ${operand}= values`, async () => {
      // bs= itself with count=2 (a large bs copies little); skip and count in sectors of the 17-sector input.
      const rest = operand === 'bs' ? ['count=2'] : ['bs=512'];
      for (const value of VALUES) {
        await same(version, ['-f', 'raw', `if=${input}`, `of=${join(dir, 'out.raw')}`, ...rest, `${operand}=${value}`], `${operand}=${JSON.stringify(value)}`);
      }
    });
  }

  test(`${version}: operand lists`, async () => {
    const of = `of=${join(dir, 'out.raw')}`;
    const inf = `if=${input}`;
    const lists: string[][] = [
      [], [inf], [of], ['foo=1', inf, of], [inf, of, 'foo'], [inf, of, '=x'], [inf, of, 'IF=x'], [inf, of, 'bs=abc', 'foo'],
      ['bs=0', 'foo=1'], [inf, `if=${join(dir, 'missing.raw')}`, of], [`if=${join(dir, 'missing.raw')}`, of, 'count=abc'],
      [inf, of, 'bs=1k', 'skip=3', 'count=7'], [inf, of, 'bs=1k', 'skip=8', 'count=7'], [inf, of, 'bs=1k', 'skip=9'],
      [inf, of, 'bs=1k', 'skip=8'], [inf, of, 'bs=512', 'skip=17'], [inf, of, 'bs=512', 'skip=18'], [inf, of, 'bs=2', 'skip=4611686018427387904'],
      [inf, of, 'count=4611686018427387904', 'bs=3'], [inf, of, 'bs=33', 'skip=5', 'count=99'], [inf, of, 'bs=1000000'],
    ];
    for (const list of lists) await same(version, ['-f', 'raw', ...list], list.join(' '));
  });
}
