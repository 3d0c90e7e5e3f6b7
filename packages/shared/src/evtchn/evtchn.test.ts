import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { EventChannelError, InvalidArgumentError } from '../errors.js';
import { EventChannelAuthority, EventChannelGate, MAX_DOMAINS, NR_EVENT_PORTS, createEventMemory } from './index.js';

const DOM0 = 0;
const GUEST = 3;
const OTHER = 4;

function setup() {
  const buf = createEventMemory();
  const auth = new EventChannelAuthority(buf);
  for (const d of [DOM0, GUEST, OTHER]) auth.createDomain(d);
  const gates = { dom0: new EventChannelGate(buf, DOM0), guest: new EventChannelGate(buf, GUEST), other: new EventChannelGate(buf, OTHER) };
  return { buf, auth, ...gates };
}

/** Guest offers a port to dom0, dom0 binds it: the usual frontend/backend pairing. */
function connect(auth: EventChannelAuthority) {
  const guestPort = auth.allocUnbound(GUEST, DOM0);
  const dom0Port = auth.bindInterdomain(DOM0, GUEST, guestPort);
  return { guestPort, dom0Port };
}

describe('event channel operations', () => {
  let env: ReturnType<typeof setup>;
  beforeEach(() => {
    env = setup();
  });

  it('alloc_unbound reserves a port offered to one remote domain; port 0 is never handed out', () => {
    const p = env.auth.allocUnbound(GUEST, DOM0);
    expect(p).toBe(1);
    expect(env.auth.status(GUEST, p)).toEqual({ port: p, state: 'unbound', remoteDomid: DOM0, remotePort: 0, pending: false, masked: false });
    expect(env.auth.allocUnbound(GUEST, DOM0)).toBe(2);
    expect(() => env.auth.status(GUEST, 0)).toThrow(EventChannelError);
    expect(() => env.auth.allocUnbound(GUEST, MAX_DOMAINS)).toThrow(InvalidArgumentError);
  });

  it('bind_interdomain connects both ends to each other', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    expect(env.auth.status(GUEST, guestPort)).toMatchObject({ state: 'interdomain', remoteDomid: DOM0, remotePort: dom0Port });
    expect(env.auth.status(DOM0, dom0Port)).toMatchObject({ state: 'interdomain', remoteDomid: GUEST, remotePort: guestPort });
  });

  it('binding a port not offered to you fails', () => {
    const offeredToOther = env.auth.allocUnbound(GUEST, OTHER);
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, offeredToOther)).toThrow(/not offered/);
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, offeredToOther)).toThrow(EventChannelError);
    // The offer stays intact for the domain it was meant for.
    expect(env.auth.status(GUEST, offeredToOther).state).toBe('unbound');
    expect(() => env.auth.bindInterdomain(OTHER, GUEST, offeredToOther)).not.toThrow();
  });

  it('binding a free or an already-bound port fails', () => {
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, 5)).toThrow(/not unbound/);
    const { guestPort } = connect(env.auth);
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, guestPort)).toThrow(/not unbound/);
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, 0)).toThrow(EventChannelError);
    expect(() => env.auth.bindInterdomain(DOM0, GUEST, NR_EVENT_PORTS)).toThrow(EventChannelError);
  });

  it('send delivers: sets pending in the receiver and raises its upcall', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    expect(env.guest.hasUpcall()).toBe(false);
    expect(env.dom0.send(dom0Port)).toBe('delivered');
    expect(env.auth.status(GUEST, guestPort).pending).toBe(true);
    expect(env.auth.status(DOM0, dom0Port).pending).toBe(false); // the sender's own bit is untouched
    expect(env.guest.hasUpcall()).toBe(true);
    expect(env.dom0.hasUpcall()).toBe(false);
    expect(env.dom0.counters).toMatchObject({ sent: 1, delivered: 1, coalesced: 0, masked: 0 });
  });

  it('a second send while pending coalesces', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    expect(env.dom0.send(dom0Port)).toBe('delivered');
    expect(env.dom0.send(dom0Port)).toBe('coalesced');
    expect(env.dom0.send(dom0Port)).toBe('coalesced');
    expect(env.dom0.counters).toMatchObject({ sent: 3, delivered: 1, coalesced: 2 });
    const calls: number[] = [];
    env.guest.on(guestPort, (p) => calls.push(p));
    expect(env.guest.dispatchPending()).toBe(1);
    expect(calls).toEqual([guestPort]);
    // Once dispatched the next send is a fresh event again.
    expect(env.dom0.send(dom0Port)).toBe('delivered');
  });

  it('dispatchPending calls handlers, clears pending and the upcall, and skips ports without handlers', () => {
    const a = connect(env.auth);
    const b = connect(env.auth);
    const calls: number[] = [];
    env.guest.on(a.guestPort, (p) => calls.push(p));
    env.dom0.send(a.dom0Port);
    env.dom0.send(b.dom0Port); // no handler registered for b
    expect(env.guest.dispatchPending()).toBe(2);
    expect(calls).toEqual([a.guestPort]);
    expect(env.auth.status(GUEST, a.guestPort).pending).toBe(false);
    expect(env.auth.status(GUEST, b.guestPort).pending).toBe(false);
    expect(env.guest.hasUpcall()).toBe(false);
    expect(env.guest.counters.received).toBe(2);
    expect(env.guest.dispatchPending()).toBe(0);
    expect(calls).toHaveLength(1);
    env.guest.off(a.guestPort);
    env.dom0.send(a.dom0Port);
    env.guest.dispatchPending();
    expect(calls).toHaveLength(1);
  });

  it('events flow both ways on one channel', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    const seen: string[] = [];
    env.dom0.on(dom0Port, () => seen.push('dom0'));
    env.guest.on(guestPort, () => seen.push('guest'));
    env.guest.send(guestPort);
    env.dom0.send(dom0Port);
    env.dom0.dispatchPending();
    env.guest.dispatchPending();
    expect(seen).toEqual(['dom0', 'guest']);
  });

  it('a masked send sets pending without an upcall; unmask re-raises it', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    const calls: number[] = [];
    env.guest.on(guestPort, (p) => calls.push(p));
    env.guest.mask(guestPort);
    expect(env.auth.status(GUEST, guestPort).masked).toBe(true);
    expect(env.dom0.send(dom0Port)).toBe('masked');
    expect(env.auth.status(GUEST, guestPort).pending).toBe(true);
    expect(env.guest.hasUpcall()).toBe(false);
    expect(env.guest.dispatchPending()).toBe(0); // masked ports are not delivered
    expect(calls).toEqual([]);
    expect(env.auth.status(GUEST, guestPort).pending).toBe(true); // … and not dropped either
    expect(env.dom0.send(dom0Port)).toBe('coalesced');
    env.guest.unmask(guestPort);
    expect(env.guest.hasUpcall()).toBe(true);
    expect(env.guest.dispatchPending()).toBe(1);
    expect(calls).toEqual([guestPort]);
    expect(env.dom0.counters).toMatchObject({ sent: 2, masked: 1, coalesced: 1, delivered: 0 });
  });

  it('unmask of a port with nothing pending raises no upcall', () => {
    const { guestPort } = connect(env.auth);
    env.guest.mask(guestPort);
    env.guest.unmask(guestPort);
    expect(env.guest.hasUpcall()).toBe(false);
  });

  it('masking one port does not hold back another', () => {
    const a = connect(env.auth);
    const b = connect(env.auth);
    env.guest.mask(a.guestPort);
    env.dom0.send(a.dom0Port);
    expect(env.dom0.send(b.dom0Port)).toBe('delivered');
    const calls: number[] = [];
    env.guest.on(a.guestPort, (p) => calls.push(p));
    env.guest.on(b.guestPort, (p) => calls.push(p));
    expect(env.guest.dispatchPending()).toBe(1);
    expect(calls).toEqual([b.guestPort]);
  });

  it('close leaves the peer unbound (re-bindable) and clears the closed port', () => {
    const { guestPort, dom0Port } = connect(env.auth);
    env.dom0.send(dom0Port);
    env.auth.close(GUEST, guestPort);
    expect(env.auth.status(GUEST, guestPort)).toMatchObject({ state: 'free', pending: false, masked: false });
    expect(env.auth.status(DOM0, dom0Port)).toMatchObject({ state: 'unbound', remoteDomid: GUEST, remotePort: 0 });
    expect(() => env.dom0.send(dom0Port)).toThrow(EventChannelError);
    expect(() => env.auth.close(GUEST, guestPort)).toThrow(/not open/);
    // The remaining end is an offer to the old peer: it can bind again.
    const again = env.auth.bindInterdomain(GUEST, DOM0, dom0Port);
    expect(env.guest.send(again)).toBe('delivered');
    expect(env.auth.status(DOM0, dom0Port).pending).toBe(true);
  });

  it('destroyDomain unbinds every peer of the dying domain', () => {
    const a = connect(env.auth);
    const b = connect(env.auth);
    env.auth.destroyDomain(GUEST);
    expect(env.auth.status(DOM0, a.dom0Port).state).toBe('unbound');
    expect(env.auth.status(DOM0, b.dom0Port).state).toBe('unbound');
    expect(env.auth.status(GUEST, a.guestPort).state).toBe('free');
  });

  it('sending on an unbound, free or invalid port fails', () => {
    const unbound = env.auth.allocUnbound(GUEST, DOM0);
    expect(() => env.guest.send(unbound)).toThrow(/not bound/);
    expect(() => env.guest.send(200)).toThrow(EventChannelError);
    expect(() => env.guest.send(0)).toThrow(EventChannelError);
    expect(() => env.guest.send(NR_EVENT_PORTS)).toThrow(EventChannelError);
    expect(() => env.guest.send(1.5)).toThrow(EventChannelError);
    expect(() => env.guest.mask(-1)).toThrow(EventChannelError);
    expect(env.guest.counters.sent).toBe(0);
  });

  it('a gate only acts on its own ports', () => {
    const { dom0Port } = connect(env.auth);
    // OTHER has no port with that number bound, so it cannot send on dom0's channel.
    expect(() => env.other.send(dom0Port)).toThrow(EventChannelError);
  });

  it('handles ports across bitmap words (31, 32, 33, 1023)', () => {
    for (let i = 1; i < NR_EVENT_PORTS - 1; i++) env.auth.allocUnbound(GUEST, OTHER); // fill ports 1..1022
    for (const p of [31, 32, 33]) env.auth.close(GUEST, p);
    const ports = [31, 32, 33, 1023].map(() => connect(env.auth));
    expect(ports.map((c) => c.guestPort)).toEqual([31, 32, 33, 1023]);
    expect(() => env.auth.allocUnbound(GUEST, DOM0)).toThrow(/no free/);
    const calls: number[] = [];
    for (const c of ports) env.guest.on(c.guestPort, (p) => calls.push(p));
    for (const c of ports) expect(env.dom0.send(c.dom0Port)).toBe('delivered');
    expect(env.guest.dispatchPending()).toBe(4);
    expect(calls).toEqual([31, 32, 33, 1023]);
    for (const c of ports) expect(env.auth.status(GUEST, c.guestPort).pending).toBe(false);
  });

  it('waitSync returns at once when an upcall is raised and times out otherwise', () => {
    const { dom0Port } = connect(env.auth);
    expect(env.guest.waitSync(5)).toBe(false);
    env.dom0.send(dom0Port);
    expect(env.guest.waitSync(5)).toBe(true);
  });

  it('the async upcall loop dispatches events sent after it started', async () => {
    const { guestPort, dom0Port } = connect(env.auth);
    const seen = new Promise<number>((resolve) => env.guest.on(guestPort, resolve));
    env.guest.start();
    try {
      await new Promise((r) => setTimeout(r, 5));
      env.dom0.send(dom0Port);
      await expect(seen).resolves.toBe(guestPort);
      expect(env.guest.counters.upcalls).toBeGreaterThanOrEqual(1);
    } finally {
      env.guest.stop();
    }
  });
});

type Op = { t: 'send'; ch: number } | { t: 'mask'; ch: number } | { t: 'unmask'; ch: number } | { t: 'dispatch' };

describe('event channel delivery property', () => {
  it('no event is lost, none is invented, and a deliverable event always has its upcall raised', () => {
    const opArb = (channels: number): fc.Arbitrary<Op> =>
      fc.oneof(
        { weight: 3, arbitrary: fc.record({ t: fc.constant('send' as const), ch: fc.nat({ max: channels - 1 }) }) },
        { weight: 1, arbitrary: fc.record({ t: fc.constant('mask' as const), ch: fc.nat({ max: channels - 1 }) }) },
        { weight: 1, arbitrary: fc.record({ t: fc.constant('unmask' as const), ch: fc.nat({ max: channels - 1 }) }) },
        { weight: 2, arbitrary: fc.constant({ t: 'dispatch' as const }) },
      );
    const scenario = fc.integer({ min: 1, max: 4 }).chain((channels) => fc.tuple(fc.constant(channels), fc.array(opArb(channels), { maxLength: 120, size: 'max' })));
    fc.assert(
      fc.property(scenario, ([channels, ops]) => {
        const { auth, dom0, guest } = setup();
        // Spread the channels over bitmap words: guest ports 1, 31, 32, 63.
        for (let i = 1; i < 64; i++) auth.allocUnbound(GUEST, OTHER);
        const wanted = [1, 31, 32, 63].slice(0, channels);
        for (const p of wanted) auth.close(GUEST, p);
        const chans = wanted.map(() => connect(auth));
        const sendTimes: number[][] = chans.map(() => []);
        const callTimes: number[][] = chans.map(() => []);
        const masked = chans.map(() => false);
        const pending = chans.map(() => false); // the model's own idea of each pending bit
        const byPort = new Map(chans.map((c, i) => [c.guestPort, i]));
        let now = 0;
        for (const c of chans) guest.on(c.guestPort, (p) => callTimes[byPort.get(p)!].push(now));

        const step = (op: Op): void => {
          now++;
          if (op.t === 'send') {
            const outcome = dom0.send(chans[op.ch].dom0Port);
            const want = pending[op.ch] ? 'coalesced' : masked[op.ch] ? 'masked' : 'delivered';
            if (outcome !== want) throw new Error(`send on channel ${op.ch} returned ${outcome}, expected ${want}`);
            pending[op.ch] = true;
            sendTimes[op.ch].push(now);
          } else if (op.t === 'mask') {
            guest.mask(chans[op.ch].guestPort);
            masked[op.ch] = true;
          } else if (op.t === 'unmask') {
            guest.unmask(chans[op.ch].guestPort);
            masked[op.ch] = false;
          } else {
            guest.dispatchPending();
            chans.forEach((_, i) => {
              if (!masked[i]) pending[i] = false;
            });
          }
          chans.forEach((c, i) => {
            const st = auth.status(GUEST, c.guestPort);
            if (st.pending !== pending[i] || st.masked !== masked[i])
              throw new Error(`channel ${i} (port ${c.guestPort}) reports pending ${st.pending} masked ${st.masked}, model ${pending[i]} ${masked[i]}`);
          });
          // A domain sleeping on its upcall word must be woken whenever something is deliverable.
          const deliverable = chans.some((_, i) => !masked[i] && pending[i]);
          if (deliverable && !guest.hasUpcall()) throw new Error(`deliverable event without an upcall after op ${now} (${op.t})`);
        };
        for (const op of ops) step(op);
        // Eventually every port is unmasked and the domain dispatches.
        chans.forEach((_, i) => step({ t: 'unmask', ch: i }));
        step({ t: 'dispatch' });

        chans.forEach((_, i) => {
          const sends = sendTimes[i];
          const calls = callTimes[i];
          // Not more handler calls than sends (coalescing may merge, never invent).
          expect(calls.length).toBeLessThanOrEqual(sends.length);
          // Every send is followed by a handler call (no lost event) …
          if (sends.length) expect(calls.length).toBeGreaterThan(0);
          if (sends.length) expect(calls[calls.length - 1]).toBeGreaterThan(sends[sends.length - 1]);
          // … and every handler call was caused by a send since the previous call.
          let prev = 0;
          for (const c of calls) {
            expect(sends.some((s) => s > prev && s < c)).toBe(true);
            prev = c;
          }
          expect(auth.status(GUEST, chans[i].guestPort).pending).toBe(false);
        });
        expect(guest.hasUpcall()).toBe(false);
      }),
      { numRuns: 300 },
    );
  });
});
