/**
 * A hostile guest against the real backends, the real hardware simulator (a worker thread with a
 * real disk image) and real shared memory. Every bad input gets an error status or gets the
 * guest's ring stopped; the well-behaved guest beside it keeps getting correct service, and
 * what dom0 holds for the hostile guest stays bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  NETIF_RSP_ERROR,
  NETIF_RSP_OKAY,
  createLogger,
} from '@ringvisor/shared';
import { subscribeTrace } from '@ringvisor/shared';
import { Host } from '../src/toolstack/host.js';
import { normalizeConfig } from '../src/toolstack/config.js';
import { NETBACK_RX_QUEUE_LIMIT } from '../src/backends/net/device.js';
import { RawBlkFront, RawGuest, RawNetFront, until } from './support/raw-frontend.js';

for (const mode of ['shared', 'linked'] as const) describe(`${mode === 'shared' ? 'threads (shared memory)' : 'ws data path (no shared memory)'}`, () => {
  let dir: string;
  let host: Host;
  let evil: RawGuest;
  let good: RawGuest;
  let evilBlk: RawBlkFront;
  let goodBlk: RawBlkFront;
  let evilNet: RawNetFront;
  let goodNet: RawNetFront;

  const guestConfig = (name: string) =>
    normalizeConfig({ hosts: [{ guests: [{ name, memoryMiB: 8, devices: [{ type: 'vbd', sizeMiB: 4 }, { type: 'vif' }], workloads: {} }] }] }).hosts[0].guests[0];

  /** A good-guest write then read-back of one page at `sector`, checking the bytes. */
  async function goodRoundTrip(id: number, sector: number): Promise<void> {
    const pattern = (id * 7919) & 0xff;
    const w = good.grantFrame(true, (p) => p.fill(pattern));
    expect((await goodBlk.request(goodBlk.rw(BLKIF_OP_WRITE, id, sector, w.gref))).status).toBe(BLKIF_RSP_OKAY);
    const r = good.grantFrame(false);
    expect((await goodBlk.request(goodBlk.rw(BLKIF_OP_READ, id + 1, sector, r.gref))).status).toBe(BLKIF_RSP_OKAY);
    expect(good.page(r.pfn).every((b) => b === pattern)).toBe(true);
    good.grants.endAccess(w.gref);
    good.grants.endAccess(r.gref);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rv-hostile-'));
    const config = normalizeConfig({ hosts: [{ disk: { path: join(dir, 'disk.img'), sizeMiB: 16 }, guests: [] }] }).hosts[0];
    host = new Host(config, { seed: 1, log: createLogger('test'), linkedGuests: mode === 'linked' });
    await host.start();
    const e = await host.createDomainWithDevices(guestConfig('evil'));
    const g = await host.createDomainWithDevices(guestConfig('good'));
    evil = new RawGuest(host.hv, e.domain, mode);
    good = new RawGuest(host.hv, g.domain, mode);
    evilBlk = new RawBlkFront(evil, 51712);
    goodBlk = new RawBlkFront(good, 51712);
    evilNet = new RawNetFront(evil, 0);
    goodNet = new RawNetFront(good, 0);
    await Promise.all([evilBlk.connect(), goodBlk.connect(), evilNet.connect(), goodNet.connect()]);
  });

  afterAll(async () => {
    evil?.close();
    good?.close();
    await host?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('hostile blkif requests get protocol errors', () => {
    it('nr_segments > 11 → BLKIF_RSP_ERROR', async () => {
      const { gref } = evil.grantFrame(false);
      const req = evilBlk.rw(BLKIF_OP_READ, 101, 0, gref);
      req.nrSegments = 12;
      expect((await evilBlk.request(req)).status).toBe(BLKIF_RSP_ERROR);
    });

    it('a sector range past the end of the vbd → BLKIF_RSP_ERROR', async () => {
      const { gref } = evil.grantFrame(true);
      const sectors = 4 * 2048;
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_WRITE, 102, sectors - 4, gref))).status).toBe(BLKIF_RSP_ERROR);
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_WRITE, 103, 2 ** 52, gref))).status).toBe(BLKIF_RSP_ERROR);
    });

    it('a sector_number beyond 2^53 is refused as the u64 it is, not rounded into the vbd', async () => {
      const { gref } = evil.grantFrame(true);
      // 2^64 − 8 + 8 sectors wraps to 0 in u64 arithmetic; 2^53 + 1 rounds to 2^53 as a number.
      for (const [id, sector] of [[120n, 2n ** 64n - 8n], [121n, 2n ** 53n + 1n], [122n, 2n ** 64n - 1n]] as const)
        expect(await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, id, sector, gref))).toEqual({ id, operation: BLKIF_OP_READ, status: BLKIF_RSP_ERROR });
    });

    it('first_sect > last_sect, or a segment past the page → BLKIF_RSP_ERROR', async () => {
      const { gref } = evil.grantFrame(false);
      const req = evilBlk.rw(BLKIF_OP_READ, 104, 0, gref);
      req.segments[0] = { gref, firstSect: 5, lastSect: 2 };
      expect((await evilBlk.request(req)).status).toBe(BLKIF_RSP_ERROR);
      req.id = 105n;
      req.segments[0] = { gref, firstSect: 0, lastSect: 8 };
      expect((await evilBlk.request(req)).status).toBe(BLKIF_RSP_ERROR);
    });

    it('a grant ref it never issued → BLKIF_RSP_ERROR, nothing mapped', async () => {
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, 106, 0, 1500))).status).toBe(BLKIF_RSP_ERROR);
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, 107, 0, 0xffffffff))).status).toBe(BLKIF_RSP_ERROR);
    });

    it("another guest's grant ref cannot be used to read or overwrite that guest's page", async () => {
      // Pick a ref the good guest issued whose number is unused in the evil guest's own table:
      // refs are per-domain, so the backend looks it up in the evil guest's table and finds nothing.
      let victim = good.grantFrame(false);
      while (Atomics.load(evil.grants.words, victim.gref * 2) !== 0) victim = good.grantFrame(false);
      good.page(victim.pfn).fill(0x5a);
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, 108, 0, victim.gref))).status).toBe(BLKIF_RSP_ERROR);
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_WRITE, 112, 0, victim.gref))).status).toBe(BLKIF_RSP_ERROR);
      expect(good.page(victim.pfn).every((b) => b === 0x5a)).toBe(true);
      // Nothing was left mapped: the good guest can revoke its grant.
      expect(good.grants.endAccess(victim.gref)).toBe(true);
    });

    it('a read-only grant cannot be the target of a READ (device would write guest memory)', async () => {
      const { gref } = evil.grantFrame(true);
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, 109, 0, gref))).status).toBe(BLKIF_RSP_ERROR);
    });

    it('a request rewritten after the backend read it is served as read (copy once: no double fetch)', async () => {
      const { gref: wref } = evil.grantFrame(true, (p) => p.fill(0xab));
      expect((await evilBlk.request(evilBlk.rw(BLKIF_OP_WRITE, 130, 64, wref))).status).toBe(BLKIF_RSP_OKAY);
      const back = host.blkBackends().find((b) => b.frontDomid === evil.domid)!;
      const { pfn, gref } = evil.grantFrame(false);
      const idx = evilBlk.ring.reqProdPvt;
      // The moment the backend's pass has consumed the request — before the disk completes it —
      // rewrite the slot as the backend would see it: another id, a write, 200 segments, a sector
      // past the vbd, a foreign grant. A backend that fetched twice would act on some of it.
      let rewritten = false;
      const off = 64 + (idx & 31) * 112;
      const off2 = subscribeTrace(['ring.consume'], (ev) => {
        if (rewritten || ev.kind !== 'ring.consume' || ev.domid !== evil.domid || ev.device !== back.device) return;
        if (((ev.after - idx) | 0) <= 0) return;
        const v = back.rings()[0].ring.page.view;
        v.setUint8(off, BLKIF_OP_WRITE);
        v.setUint8(off + 1, 200);
        v.setUint32(off + 8, 999, true);
        v.setUint32(off + 16, 0x7fffffff, true);
        v.setUint32(off + 24, 1999, true);
        rewritten = true;
      });
      try {
        const rsp = await evilBlk.request(evilBlk.rw(BLKIF_OP_READ, 131, 64, gref));
        expect(rewritten).toBe(true);
        expect(rsp).toEqual({ id: 131n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY });
        expect(evil.page(pfn).every((x) => x === 0xab)).toBe(true);
        expect(evilBlk.responses.some((r) => r.id === 999n)).toBe(false);
      } finally {
        off2();
      }
    });

    it('unknown and unsupported operations → BLKIF_RSP_EOPNOTSUPP', async () => {
      const { gref } = evil.grantFrame(false);
      const req = evilBlk.rw(BLKIF_OP_READ, 110, 0, gref);
      req.operation = 9;
      expect((await evilBlk.request(req)).status).toBe(BLKIF_RSP_EOPNOTSUPP);
      req.operation = 6; // INDIRECT, not offered
      req.id = 111n;
      expect((await evilBlk.request(req)).status).toBe(BLKIF_RSP_EOPNOTSUPP);
    });

    it('request ids above 2^53 are echoed bit for bit (Mini-OS puts pointers there)', async () => {
      // Pointer-like ids that are one and the same JS number (2^63): only an exact u64 keeps them apart.
      const ids = [2n ** 63n + 8n, 2n ** 63n + 16n, 2n ** 64n - 1n, 0xffff_8880_1234_5678n];
      expect(new Set(ids.map(Number)).size).toBeLessThan(ids.length);
      const reqs = ids.map((id, i) => evilBlk.rw(i % 2 ? BLKIF_OP_WRITE : BLKIF_OP_READ, id, 8 * i, evil.grantFrame(i % 2 === 1).gref)); // a READ needs a writable page
      const before = evilBlk.responses.length;
      evilBlk.submit(...reqs); // all in flight at once
      await until(() => evilBlk.responses.length >= before + ids.length, 'responses to the four requests');
      const got = evilBlk.responses.slice(before);
      expect(got.map((r) => r.id).sort((a, b) => (a < b ? -1 : 1))).toEqual([...ids].sort((a, b) => (a < b ? -1 : 1)));
      for (const r of got) expect(r).toEqual({ id: r.id, operation: reqs[ids.indexOf(r.id)].operation, status: BLKIF_RSP_OKAY });
    });

    it('the good guest is served correctly throughout', async () => {
      await goodRoundTrip(1000, 64);
    });
  });

  describe('event storms and rogue rings', () => {
    it('an event storm does not starve the other guest and coalesces', async () => {
      const before = host.guests.length; // no launched guests here; backends are what we measure
      expect(before).toBe(0);
      const blk = host.blkBackends().find((b) => b.frontDomid === evil.domid)!;
      const eventsBefore = blk.counters.events;
      const storm = 20_000;
      for (let i = 0; i < storm; i++) evil.events.send(evilBlk.port);
      await goodRoundTrip(2000, 128);
      // The pending bit absorbs repeats: the backend ran its handler far fewer times than it was kicked.
      await until(() => blk.counters.events > eventsBefore, 'the storm to reach dom0');
      expect(blk.counters.events - eventsBefore).toBeLessThan(storm / 2);
    });

    it('garbage req_prod stops the hostile ring; the other guest carries on', async () => {
      const blk = host.blkBackends().find((b) => b.frontDomid === evil.domid)!;
      evilBlk.forgeReqProd(evilBlk.ring.reqProdPvt + 1000);
      await until(() => blk.state === 'rogue', 'ring stopped as rogue');
      expect(blk.counters.rogue).toBe(1);
      // A later, well-formed request on the stopped ring is not served.
      const served = blk.counters.requests;
      evil.events.send(evilBlk.port);
      await goodRoundTrip(3000, 256);
      expect(blk.counters.requests).toBe(served);
    });
  });

  describe('hostile netif traffic', () => {
    it('oversized, undersized and page-crossing tx requests → NETIF_RSP_ERROR', async () => {
      const { gref } = evil.grantFrame(true);
      evilNet.sendTx(
        { gref, offset: 0, flags: 0, id: 1, size: 5000 },
        { gref, offset: 0, flags: 0, id: 2, size: 3 },
        { gref, offset: 4000, flags: 0, id: 3, size: 200 },
        { gref: 1999, offset: 0, flags: 0, id: 4, size: 100 },
      );
      await until(() => evilNet.txResponses.length >= 4, 'tx responses');
      expect(evilNet.txResponses.map((r) => r.status)).toEqual([NETIF_RSP_ERROR, NETIF_RSP_ERROR, NETIF_RSP_ERROR, NETIF_RSP_ERROR]);
    });

    it('a guest that never posts rx buffers cannot make dom0 hold more than its queue limit', async () => {
      const evilVif = host.netBackends().find((n) => n.frontDomid === evil.domid)!;
      const poolBefore = host.pool.available;
      // The good guest floods broadcast frames; the evil guest posts no rx buffers.
      const { gref } = good.grantFrame(true, (frame) => {
        frame.fill(0xff, 0, 6);
        frame.set([0x00, 0x16, 0x3e, 0x99, 0x99, 0x99], 6);
        frame.set([0x88, 0xb5], 12);
      });
      const total = 2000;
      let sent = 0;
      while (sent < total) {
        const room = goodNet.tx.freeRequests();
        const batch = [];
        for (let i = 0; i < room && sent < total; i++, sent++) batch.push({ gref, offset: 0, flags: 0, id: sent & 0xffff, size: 60 });
        if (batch.length) goodNet.sendTx(...batch);
        await new Promise((r) => setImmediate(r));
      }
      await until(() => goodNet.txResponses.length >= total, 'all tx answered');
      expect(goodNet.txResponses.every((r) => r.status === NETIF_RSP_OKAY)).toBe(true);
      expect(evilVif.rxQueued).toBeLessThanOrEqual(NETBACK_RX_QUEUE_LIMIT);
      expect(evilVif.counters.rxDropped).toBeGreaterThanOrEqual(total - NETBACK_RX_QUEUE_LIMIT);
      // Once the uplink has drained, dom0 holds at most the queue limit of skbs for the evil guest.
      await until(() => poolBefore - host.pool.available <= NETBACK_RX_QUEUE_LIMIT, 'skb pool to settle');
      expect(host.pool.available).toBeGreaterThan(0);
      // Once it posts buffers it receives queued frames, proving they were held, not leaked.
      const bufs = Array.from({ length: 8 }, (_, id) => ({ id, gref: evil.grantFrame(false).gref }));
      evilNet.postRx(...bufs);
      await until(() => evilNet.rxResponses.length >= 8, 'rx after posting buffers');
      expect(evilNet.rxResponses.every((r) => r.status === 60)).toBe(true);
    });

    it('dom0 holds no grant mappings beyond the connected rings', () => {
      // evil: blk ring (stopped but mapped) + 2 net rings; good: blk ring + 2 net rings.
      expect(host.hv.grants.mappingsHeldBy(0)).toBe(6);
      expect(host.disk.outstanding).toBe(0);
    });
  });

});
