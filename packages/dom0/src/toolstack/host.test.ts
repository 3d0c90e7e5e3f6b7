import { describe, expect, it } from 'vitest';
import { createLogger, InvalidStateError, NoSuchDeviceError, NoSuchGuestError, RingvisorError, UnsupportedOperationError } from '@ringvisor/shared';
import { normalizeConfig } from './config.js';
import { Host, type GuestHandle } from './host.js';
import { HostRegistry } from './registry.js';
import { RuntimeLinks } from './runtime-links.js';

/** A host built but not started: no hardware, no guest runtime — its lookups work on what it knows. */
function idleHost(): Host {
  const config = normalizeConfig({ hosts: [{ name: 'h0', guests: [{ name: 'g1' }] }] }, 'test', { diskDir: '/nonexistent' });
  return new Host(config.hosts[0], { seed: 1, log: createLogger('test') });
}

/** What a caller gets for `run()`'s failure: its class and its stable code. */
function failure(run: () => unknown): RingvisorError {
  try {
    run();
  } catch (e) {
    return e as RingvisorError;
  }
  return expect.fail('expected a failure');
}

describe('Host lookups by name', () => {
  it('host.guest(name) throws NoSuchGuestError (RV_ERR_NO_SUCH_GUEST) for a guest it never launched', () => {
    const host = idleHost();
    const e = failure(() => host.guest('g1'));
    expect(e).toBeInstanceOf(NoSuchGuestError);
    expect(e.code).toBe('RV_ERR_NO_SUCH_GUEST');
    expect(e.message).toBe('no guest g1 on h0');
  });

  it('host.guest(name) returns the launched guest of that name, and only it', () => {
    const host = idleHost();
    const g1 = { config: { name: 'g1' } } as GuestHandle;
    const g2 = { config: { name: 'g2' } } as GuestHandle;
    host.guests.push(g1, g2);
    expect(host.guest('g2')).toBe(g2);
    expect(host.guest('g1')).toBe(g1);
    expect(() => host.guest('g3')).toThrow(NoSuchGuestError);
  });

  it('operations naming an unknown guest or domain reject with NoSuchGuestError, not a bare Error', async () => {
    const host = idleHost();
    await expect(host.killGuest('nope')).rejects.toMatchObject({ code: 'RV_ERR_NO_SUCH_GUEST', message: 'no guest nope on h0' });
    await expect(host.freezeGuest('nope', 100)).rejects.toMatchObject({ code: 'RV_ERR_NO_SUCH_GUEST', message: 'no running guest nope on h0' });
    await expect(host.restartBackend('nope', 'vbd51712')).rejects.toBeInstanceOf(NoSuchGuestError);
    await expect(host.resetVif('nope', 'vif0')).rejects.toMatchObject({ code: 'RV_ERR_NO_SUCH_GUEST', message: 'no guest nope on host h0' });
    await expect(host.reclaimFunction('nope', 'vif0')).rejects.toMatchObject({ code: 'RV_ERR_NO_SUCH_GUEST', message: 'no domain nope on h0' });
    await expect(host.restartGuest('nope')).rejects.toBeInstanceOf(NoSuchGuestError);
  });

  it('link faults in threads mode are an unsupported operation (RV_ERR_UNSUPPORTED)', () => {
    const host = idleHost();
    const e = failure(() => host.setLinkToxics('g1', { latencyMs: 10 }));
    expect(e).toBeInstanceOf(UnsupportedOperationError);
    expect(e.code).toBe('RV_ERR_UNSUPPORTED');
  });

  it('dom0 not listening yet is an invalid state (RV_ERR_INVALID_STATE)', () => {
    const e = failure(() => idleHost().wsUrl);
    expect(e).toBeInstanceOf(InvalidStateError);
    expect(e.code).toBe('RV_ERR_INVALID_STATE');
  });
});

describe('HostRegistry', () => {
  it('domainNamed throws NoSuchGuestError with the caller\'s wording; a link to a runtime that is not there is an invalid state', () => {
    const registry = new HostRegistry('h0');
    expect(() => registry.domainNamed('x')).toThrow(new NoSuchGuestError('no domain x on h0'));
    expect(() => registry.domainNamed('x', 'no guest x on host h0')).toThrow('no guest x on host h0');
    expect(registry.guestName(7)).toBe('guest7');
    const links = new RuntimeLinks('h0', true);
    expect(failure(() => links.reset('g1')).code).toBe('RV_ERR_INVALID_STATE');
  });

  it('NoSuchDeviceError carries its own code', () => {
    expect(new NoSuchDeviceError('x').code).toBe('RV_ERR_NO_SUCH_DEVICE');
  });
});
