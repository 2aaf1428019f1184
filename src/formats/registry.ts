import type { Driver } from './types.ts';
import { rawDriver } from './raw/driver.ts';
import { vmdkDriver } from './vmdk/driver.ts';
import { vpcDriver } from './vpc/driver.ts';

/** Every format driver. Adding a format = adding its folder and one line here. */
export const drivers: Driver[] = [rawDriver, vmdkDriver, vpcDriver];

export function findDriver(name: string): Driver | undefined {
  return drivers.find((d) => d.name === name);
}
