import type { Driver } from './types.ts';
import { rawDriver } from './raw/driver.ts';
import { fileDriver } from './file/driver.ts';
import { qcow2Driver } from './qcow2/driver.ts';
import { vmdkDriver } from './vmdk/driver.ts';
import { vpcDriver } from './vpc/driver.ts';
import { vhdxDriver } from './vhdx/driver.ts';
import { vdiDriver } from './vdi/driver.ts';
import { qcowDriver } from './qcow/driver.ts';
import { parallelsDriver } from './parallels/driver.ts';
import { qedDriver } from './qed/driver.ts';
import { luksDriver } from './luks/driver.ts';
import { bochsDriver } from './bochs/driver.ts';
import { cloopDriver } from './cloop/driver.ts';
import { dmgDriver } from './dmg/driver.ts';
import { isoDriver } from './iso/driver.ts';
import { probeOnlyDrivers } from './probe-only.ts';

/** Every format driver. Adding a format = adding its folder and one line here. */
const fullDrivers: Driver[] = [rawDriver, fileDriver, qcow2Driver, vmdkDriver, vpcDriver, vhdxDriver, vdiDriver, qcowDriver, parallelsDriver, qedDriver, luksDriver, bochsDriver, cloopDriver, dmgDriver, isoDriver];

/** Full drivers, then detect-only stand-ins for the formats that have none yet. */
export const drivers: Driver[] = [
  ...fullDrivers,
  ...probeOnlyDrivers.filter((p) => !fullDrivers.some((d) => d.name === p.name)),
];

export function findDriver(name: string): Driver | undefined {
  return drivers.find((d) => d.name === name);
}
