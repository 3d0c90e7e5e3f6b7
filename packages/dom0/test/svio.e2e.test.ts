/**
 * SV-IO end to end, as a user runs it (`ringvisor up` in its own process), in both transports: a
 * guest whose NIC, disk and camera are VIFs of the self-virtualizing device exchanges verified UDP
 * with a PV guest, an emulated one and a direct one, verifies its disk partition and every camera
 * frame; the engine's cores counted exactly the guest's I/O, and dom0's drivers carried none of
 * it. Over ws every runtime is a process and the SV-IO guest reaches the engine over its own
 * direct link to the hardware (its memory mirrored, dom0 not on the path).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanUp, runCli, tempDir, until } from './support/cli.js';

afterEach(cleanUp);

interface Summary {
  guests: Array<{ name: string; state: string; devices: Array<{ type: string; mode: string; ops: number; errors: number; detail: Record<string, number> }>; udp: { echoed: number; corrupted: number }; error?: string }>;
  integrity: { checked: number; failures: number };
  dom0: Record<string, { disk: { submitted: number }; svio?: { vifs: Array<{ vif: number; kind: string; domid: number; state: string; core: number; stats?: { detail: Record<string, number> } }>; coreBusyMs: number[] } }>;
}

describe('SV-IO (VIFs of a self-virtualizing device)', () => {
  for (const transport of ['threads', 'ws'] as const) {
    it(`${transport}: an SV-IO guest talks to PV, emulated and direct guests and verifies its disk and camera; the engine did its I/O, dom0 none`, async () => {
      const cwd = tempDir();
      const config = {
        seed: 13,
        hosts: [
          {
            name: 'host0',
            guests: [
              { name: 'pv1', devices: [{ type: 'vif' }], workloads: { udp: { peers: ['svio1'] } } },
              { name: 'emu1', devices: [{ type: 'vif', mode: 'emulated' }], workloads: { udp: { peers: ['svio1'], window: 2 } } },
              { name: 'direct1', devices: [{ type: 'vif', mode: 'direct' }], workloads: { udp: { peers: ['svio1'] } } },
              {
                name: 'svio1',
                devices: [
                  { type: 'vbd', mode: 'svio', sizeMiB: 8, weight: 200 },
                  { type: 'vif', mode: 'svio' },
                  { type: 'cam', width: 96, height: 64, fps: 50 },
                ],
                workloads: { block: { blocks: 128 } },
              },
            ],
          },
        ],
      };
      writeFileSync(join(cwd, 'c.json'), JSON.stringify(config));
      const { code, stderr } = await runCli(['up', '--transport', transport, '--config', 'c.json', '--duration', '4', '--json', 'out.json'], cwd).done;
      expect(code, stderr).toBe(0);
      const s = JSON.parse(readFileSync(join(cwd, 'out.json'), 'utf8')) as Summary;
      const g = (n: string) => s.guests.find((x) => x.name === n)!;
      for (const n of ['pv1', 'emu1', 'direct1', 'svio1']) expect(g(n).state, g(n).error).toBe('stopped');
      const sv = g('svio1');
      const vbd = sv.devices.find((d) => d.type === 'vbd')!;
      const vif = sv.devices.find((d) => d.type === 'vif')!;
      expect([vbd.mode, vif.mode]).toEqual(['svio', 'svio']);
      expect(vbd.ops).toBeGreaterThan(0);
      expect(vbd.errors + vif.errors).toBe(0);
      // Every peer's echoes came back through the SV-IO guest's network VIF, verified.
      for (const n of ['pv1', 'emu1', 'direct1']) expect(g(n).udp.echoed, n).toBeGreaterThan(0);
      expect(g('pv1').udp.corrupted + g('emu1').udp.corrupted + g('direct1').udp.corrupted).toBe(0);
      expect(s.integrity.failures).toBe(0);
      expect(s.integrity.checked).toBeGreaterThan(0);
      // The camera: frames from the camera's clock, every one intact and in order (the consumer
      // checks each frame's checksums and sequence-dependent pattern).
      const cam = sv.devices.find((d) => d.type === 'cam')!;
      expect(cam.mode).toBe('svio');
      expect(cam.ops).toBeGreaterThan(50);
      expect(cam.detail.corrupted + cam.detail.reordered + cam.errors).toBe(0);
      expect(cam.detail.lastSeq).toBeGreaterThanOrEqual(cam.ops);
      // The engine's view: the VIFs bound to svio1's domain, on its cores, counting its I/O.
      const engine = s.dom0.host0.svio!;
      expect(engine.coreBusyMs.length).toBeGreaterThanOrEqual(1);
      const blk = engine.vifs.find((v) => v.kind === 'blk')!;
      const net = engine.vifs.find((v) => v.kind === 'net')!;
      expect(blk.stats!.detail.reads + blk.stats!.detail.writes + blk.stats!.detail.flushes).toBe(vbd.ops);
      expect(net.stats!.detail.txFrames).toBe(vif.detail.txPackets);
      expect(net.stats!.detail.rxFrames).toBe(vif.detail.rxPackets);
      const camVif = engine.vifs.find((v) => v.kind === 'cam')!;
      expect(camVif.stats!.detail.delivered).toBeGreaterThanOrEqual(cam.ops);
      // dom0's physical disk driver carried nothing (the only disk is the VIF's).
      expect(s.dom0.host0.disk.submitted).toBe(0);
    }, 90_000);
  }

  it('ringvisor svio list | qos: the engine\'s VIFs with their cores and counters; an admin sets a weight and a credit limit, and the limit bites', async () => {
    const cwd = tempDir();
    writeFileSync(
      join(cwd, 'c.json'),
      JSON.stringify({ seed: 5, hosts: [{ name: 'host0', svio: { cores: 1 }, guests: [{ name: 'sv', devices: [{ type: 'vbd', mode: 'svio', sizeMiB: 8 }], workloads: { block: { blocks: 256, queueDepth: 8 } } }] }] }),
    );
    const up = runCli(['up', '--config', 'c.json', '--duration', '120', '--observe', '127.0.0.1:0'], cwd);
    let out = '';
    up.child.stdout!.on('data', (d) => (out += d));
    await until('the dashboard URL', async () => (/ringvisor: dashboard/.test(out) ? true : undefined), 45_000);
    const cli = (args: string[]) => runCli(args, cwd).done;
    type Row = { domain: string; device: string; vif: number; kind: string; core: number; weight: number; rate?: { bytes: number; usec: number }; state: string; stats?: { counters: { messagesIn: number }; sched: { throttled: number } } };
    const rows = async () => {
      const r = await cli(['svio', 'list', '--json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Row[];
    };
    const first = await until('the VIF open and busy', async () => {
      const r = await rows();
      return r.length === 1 && r[0].state === 'open' && (r[0].stats?.counters.messagesIn ?? 0) > 0 ? r[0] : undefined;
    });
    expect(first).toMatchObject({ domain: 'sv', device: 'vbd51712', kind: 'blk', core: 0, weight: 100 });
    expect(first.rate).toBeUndefined();
    const text = await cli(['svio', 'list']);
    expect(text.stdout).toMatch(/^HOST\s+DOMAIN\s+DEVICE\s+VIF\s+KIND\s+CORE\s+WEIGHT\s+RATE\s+STATE/);
    expect(text.stdout).toMatch(/host0\s+sv\s+vbd51712\s+\d+\s+blk\s+0\s+100\s+-\s+open/);
    // 64 KiB per 10 ms: the verifier's writes outrun that, so the VIF is throttled.
    const set = await cli(['svio', 'qos', 'sv', 'vbd51712', '--weight', '400', '--rate', '65536,10000']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/sv\/vbd51712: VIF \d+ weight 400, rate 65536,10000/);
    const limited = await until('the credit limit throttling the VIF', async () => {
      const r = (await rows())[0];
      return (r.stats?.sched.throttled ?? 0) > 0 ? r : undefined;
    });
    expect(limited).toMatchObject({ weight: 400, rate: { bytes: 65536, usec: 10_000 } });
    // Mistakes are refused with what to do.
    const bad = await cli(['svio', 'qos', 'sv', 'vbd51712', '--weight', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--weight must be an integer in 1\.\.1000/);
    const none = await cli(['svio', 'qos', 'sv', 'vif0', '--weight', '5']);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/sv has no SV-IO device vif0 \(has: vbd51712\)/);
    const usage = await cli(['svio', 'qos', 'sv']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/usage: ringvisor svio list \| qos DOMAIN DEVICE --weight/);
    up.child.kill('SIGINT');
    expect((await up.done).code).toBe(0);
  }, 90_000);
});
