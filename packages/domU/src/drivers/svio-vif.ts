/**
 * What the three SV-IO drivers share as guest devices: finding the VIF the toolstack created for
 * a boot-spec device, re-plugging a re-created VIF, and the hostile-driver attacks on a VIF.
 */
import { InvalidArgumentError, NoSuchDeviceError, type DeviceKind, type SvioVifSpec } from '@ringvisor/shared';
import type { GuestDevice, GuestDeviceContext } from './guest-device.js';
import type { OpenVif } from '../kernel/svio.js';
import { VIF_ATTACKS, attackVif, type HostileVifDriver, type VifAttack } from '../kernel/svio-misbehave.js';

/** The VIF created for our `kind` device `devid` (the boot spec's own entry, updated on re-plug). */
export function vifFor(ctx: GuestDeviceContext, kind: DeviceKind, devid: number, name: string): SvioVifSpec {
  const v = ctx.spec.svio?.vifs.find((y) => y.kind === kind && y.devid === devid);
  if (!v) throw new NoSuchDeviceError(`svio ${name}: no VIF was created for it`);
  return v;
}

/** The hooks every SV-IO device has: re-plug onto a re-created VIF, and attacks on its VIF. */
export function svioHooks(ctx: GuestDeviceContext, known: SvioVifSpec, driver: HostileVifDriver & { reattach(vif: OpenVif): void }): Pick<GuestDevice, 'plugVif' | 'attack'> {
  return {
    // Open the new VIF — over the direct link when there is no shared memory with the
    // hardware — and let the driver start over on it (block: resubmit what the old VIF never answered).
    plugVif: async (v, hwUrl) => {
      if (!v.page) await ctx.hardwareAt(hwUrl);
      if (!v.page && !ctx.hasDirectLink()) throw new NoSuchDeviceError(`guest.svio.plug: VIF ${v.vif} has no page and there is no direct link to the hardware`);
      const vif = await ctx.openVif(v);
      Object.assign(known, v);
      driver.reattach(vif);
    },
    attack: (attack, count, seed) => {
      if (!VIF_ATTACKS.includes(attack as VifAttack)) throw new InvalidArgumentError(`guest.attack: unknown attack ${attack} for an SV-IO device (one of ${VIF_ATTACKS.join(', ')})`);
      return attackVif(driver, attack as VifAttack, count, seed, ctx.kernel.memory.frames);
    },
  };
}
