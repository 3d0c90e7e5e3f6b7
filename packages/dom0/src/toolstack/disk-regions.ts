/** Each guest disk's region of the physical disk, handed out in order and kept across reboots. */
import { ConfigError } from '@ringvisor/shared';

export interface DiskRegion {
  start: number;
  sectors: number;
}

export class DiskRegions {
  private nextSector = 0;
  /** By "guest/devid": a guest that comes back finds its data where it left it. */
  private readonly regions = new Map<string, DiskRegion>();

  /** `diskSectors` is read at each allocation: the disk's size is known once the hardware attached it. */
  constructor(private readonly diskSectors: () => number) {}

  /** A guest disk's region of the physical disk, kept across reboots (its data is there when it comes back). */
  regionOf(guest: string, devid: number, sizeMiB: number): DiskRegion {
    const sectors = sizeMiB * 2048;
    const key = `${guest}/${devid}`;
    let region = this.regions.get(key);
    if (!region) {
      if (this.nextSector + sectors > this.diskSectors()) throw new ConfigError(`physical disk too small for ${guest}'s disk ${devid}`);
      region = { start: this.nextSector, sectors };
      this.nextSector += sectors;
      this.regions.set(key, region);
    }
    return region;
  }
}
