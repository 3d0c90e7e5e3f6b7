/**
 * A LanPort is one end of an Ethernet cable: whatever is plugged into it (a NIC, an uplink to
 * another switch, a test probe) sends frames with `send` and hears frames with `onFrame`.
 *
 * Contract: `send` never retains the caller's buffer beyond the call (the receiving side gets
 * its own copy), and every frame handed to an `onFrame` callback belongs to that port's
 * listeners alone — nothing is shared between ports.
 */
export interface LanPort {
  send(frame: Uint8Array): void;
  onFrame(cb: (frame: Uint8Array) => void): void;
  readonly name: string;
}

/**
 * Patch cable between two ports (e.g. a host's local segment and a port on a remote switch):
 * frames heard on one are sent out of the other, in both directions.
 */
export function connectLanPorts(a: LanPort, b: LanPort): void {
  a.onFrame((frame) => b.send(frame));
  b.onFrame((frame) => a.send(frame));
}
