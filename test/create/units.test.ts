// create's pure parts: the host's format table is the drivers' own create capabilities, and the
// qcow2 layout refuses what it cannot place instead of writing a wrong image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { drivers } from '../../src/formats/registry.ts';
import { CREATORS } from '../../src/host/commands/create-options.ts';
import { qcow2Create } from '../../src/formats/qcow2/create.ts';
import { ImageError } from '../../src/formats/types.ts';

test('the host create table holds exactly the drivers that have a create capability, the same objects', () => {
  const withCreate = drivers.filter((d) => d.create !== undefined);
  assert.deepEqual(withCreate.map((d) => d.name).sort(), Object.keys(CREATORS).sort());
  for (const d of withCreate) assert.equal(CREATORS[d.name], d.create, d.name);
});

test('qcow2: a refcount table that outgrows its cluster moves (as qemu grows it); sizes past 2^53 are refused in one line', () => {
  // 512-byte clusters with 64-bit refcounts: 64 clusters a block, 64 blocks a table = 4096 clusters.
  // (The bytes are checked against qemu-img in test/convert-image/qcow2.test.ts.)
  const options = new Map([['cluster_size', '512'], ['refcount_bits', '64'], ['preallocation', 'metadata']]);
  const header = qcow2Create.layout(qcow2Create.plan(options, 3n * 1024n * 1024n)).image.writes[0].bytes;
  assert.ok(Buffer.from(header).readBigUInt64BE(48) > 512n, 'the refcount table left cluster 1');
  const huge = new Map([['cluster_size', '2097152']]); // plans take normalized values
  assert.throws(() => qcow2Create.plan(huge, 2n ** 60n), (e: unknown) => e instanceof ImageError && /2\^53/.test(e.message));
});
