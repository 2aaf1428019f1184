// The trusted side's list of driver names must name exactly the drivers the guest has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DRIVER_NAMES } from '../../src/formats/names.ts';
import { drivers } from '../../src/formats/registry.ts';

test('DRIVER_NAMES equals the registry, in order', () => {
  assert.deepEqual([...DRIVER_NAMES], drivers.map((d) => d.name));
});
