/**
 * The emulated mode (device models behind trapped registers, attached by emulated.ts): where the
 * models run, the hosted VMM's optimisations, and what an emulated PC holds.
 */
import { ConfigError } from '@ringvisor/shared';
import type { EmulationPlacement } from '../config.js';
import type { DeviceKind } from '../device-kinds.js';
import type { IoModeDescriptor, ModeConfigKey } from './mode-descriptor.js';

/** The model behind each kind an emulated PC has. */
const EMULATED_MODELS: Readonly<Partial<Record<DeviceKind, string>>> = { vbd: 'ata', vif: 'lance' };

const hostedVmmKey = (key: string): ModeConfigKey => ({
  key,
  refuse: (where) => `${where}: "${key}" is an optimisation of the hosted VMM for an emulated NIC (type: vif, mode: emulated, placement: hosted)`,
});

export const EMULATED_MODE: IoModeDescriptor = {
  mode: 'emulated',
  kinds: ['vbd', 'vif'],
  keys: [{ key: 'placement', refuse: (where) => `${where}: "placement" applies to mode: emulated only` }, hostedVmmKey('vmmIo'), hostedVmmKey('sendCombining')],
  complete(d) {
    const placement = (d.raw.placement as EmulationPlacement | undefined) ?? 'dom0';
    for (const k of ['vmmIo', 'sendCombining'])
      if (k in d.raw && (d.kind !== 'vif' || placement !== 'hosted')) throw new ConfigError(hostedVmmKey(k).refuse(d.where, d.mode));
    return { placement, ...(d.raw.vmmIo === true ? { vmmIo: true } : {}), ...(d.raw.sendCombining === true ? { sendCombining: true } : {}) };
  },
  checkGuest(devices, guestWhere) {
    const emulated = devices.filter((d) => d.mode === 'emulated');
    const placements = new Set(emulated.map((d) => ('placement' in d ? d.placement : undefined)));
    if (placements.size > 1) throw new ConfigError(`${guestWhere} mixes placements ${[...placements].join(' and ')}; one guest's emulated devices share one vCPU and one device-model placement`);
    const disks = emulated.filter((d) => d.type === 'vbd').length;
    if (disks > 2) throw new ConfigError(`${guestWhere} has ${disks} emulated vbds; an emulated PC has two ATA channels (use mode: pv for the rest)`);
  },
  // PIO moves a sector with 256 trapped accesses: an emulated disk's default workload is smaller.
  blockWorkloadDefaults: { blocks: 32, queueDepth: 1 },
  trapsToDeviceModel: true,
  deviceName: (kind, devid) => `${EMULATED_MODELS[kind]}${devid}`,
  // The vCPU's kicks of the model plus the interrupts the guest took.
  notifications: { sent: ['kicks', 'interrupts'], suppressed: ['kicksSuppressed'], backendsToo: false },
  copiedBy: 'models',
  // An emulated disk is one ATA channel: one command at a time.
  diskQueueLimit: { depth: 1, label: 'ATA' },
};
