/** Helpers several fault kinds share: selector checks, cluster lookups, waiting. */
import { ConfigError } from '@ringvisor/shared';
import { directDeviceName, vifDeviceName, type Host } from '../../toolstack/host.js';
import type { FaultSelector, GenGuest, GenScenario, KindSpec } from './kind.js';

/** Refuses a fault whose selector lacks `key`, quoting what its kind needs. */
export function need(f: KindSpec, key: keyof FaultSelector, where: string, description: string): void {
  if (!f.who[key]) throw new ConfigError(`${where}: ${f.what.kind} needs who.${key} (${description})`);
}

/** A kind acting on a PV device's backend: who.domain and who.device, a PV device. */
export function checkPvBackendTarget(f: KindSpec, where: string, description: string): void {
  need(f, 'domain', where, description);
  need(f, 'device', where, description);
  if (f.who.device && !/^(vbd|vif)\d+$/.test(f.who.device))
    throw new ConfigError(`${where}: ${f.what.kind} acts on a PV device's backend or ring (vbd<devid> | vif<devid>); ${f.who.device} is emulated (try device.hostile)`);
}

/** A kind acting on a guest's blkfront ring: who.domain and a vbd. */
export function checkVbdRingTarget(f: KindSpec, where: string, description: string): void {
  need(f, 'domain', where, description);
  need(f, 'device', where, description);
  if (!f.who.device!.startsWith('vbd')) throw new ConfigError(`${where}: ${f.what.kind} is implemented for vbd rings (blkfront)`);
}

/** A kind acting on a direct device (an assigned function): who.domain and a vif or vbd. */
export function checkDirectTarget(f: KindSpec, where: string, description: string): void {
  need(f, 'domain', where, description);
  need(f, 'device', where, description);
  if (!/^(vif|vbd)\d+$/.test(f.who.device!)) throw new ConfigError(`${where}: ${f.what.kind} acts on a direct device (vif<devid> | vbd<devid> with mode: direct), not ${f.who.device}`);
}

/** The domain id of the guest `who.domain` names, on a host that has it. */
export function domidOf(host: Host, spec: KindSpec): number {
  return host.guests.find((g) => g.config.name === spec.who.domain)!.domain.domid;
}

/**
 * The channels of the devices a guest drives itself — its direct functions and SV-IO VIFs (all,
 * or the one `device` names): the guest's end (the device's interrupts) and the hardware's (its
 * doorbells).
 */
export function ownChannels(host: Host, domid: number, device: string | undefined): Array<{ guestPort: number; hwPort: number }> {
  return [
    ...host.functionsOf(domid).filter((f) => !device || directDeviceName(f) === device),
    ...host.vifsOf(domid).filter((v) => !device || vifDeviceName(v) === device),
  ].map((c) => ({ guestPort: c.port, hwPort: c.hwPort }));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `f` every 20 ms until it yields a value, or undefined after `ms`. */
export async function waitFor<T>(f: () => Promise<T | undefined>, ms: number): Promise<T | undefined> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined || performance.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A guest's (first) PV vbd by name, if it has one. */
export function vbdName(g: GenGuest): string | undefined {
  return g.vbd ? `vbd${g.vbd.devid}` : undefined;
}

/** One of the guest's PV devices, vif or vbd at random (a backend to act on). */
export function pvDevice(s: GenScenario): string {
  const vbd = vbdName(s.g);
  return s.next() < 0.5 && s.g.vif ? `vif${s.g.vif.devid}` : (vbd ?? `vif${s.g.vif!.devid}`);
}

/** Guests with a PV device. */
export const hasPv = (g: GenGuest): boolean => Boolean(g.vbd || g.vif);
