/**
 * The live dashboard in a real browser: the real cluster (`bin/ringvisor.mjs up --observe`, the
 * default host, real worker threads) in its own process, and headless Chromium
 * driven by playwright-core loading the page through the one-time token link.
 *
 * Checked: the API refuses a request without the cookie; every domain the snapshot lists gets a
 * row; the live feed connects and traffic shows up as rates (per domain and per ring, the
 * domain's figure being the sum of its rings); the charts and the timeline render; clicking a
 * vbd ring opens its entries decoded from the ring page, refreshed while open, and the panel
 * closes; the page throws nothing. A full-page screenshot lands in test-artifacts/dashboard.png.
 * With examples/emulation.yaml: the emulated devices show in the topology with their badge, model
 * state and growing traps, and the header and domains table carry trap rates.
 *
 * Skipped when /usr/bin/chromium is absent, except under CI (CI=true), where that fails. The
 * cluster is stopped by pid (SIGINT, SIGKILL after 10 s) and the browser closed, pass or fail.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

const ROOT = resolve(import.meta.dirname, '../../..');
const CHROMIUM = '/usr/bin/chromium';
const chromiumAvailable = existsSync(CHROMIUM);
const underCi = process.env.CI === 'true';
const ARTIFACTS = join(ROOT, 'test-artifacts');
const SCREENSHOT = join(ARTIFACTS, 'dashboard.png');
const DASHBOARD_LINE = /ringvisor: dashboard (http:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-fA-F]+)/;

interface Cluster {
  child: ChildProcess;
  url: string;
  /** Tail of the child's stdout and stderr, for failure messages. */
  output: () => string;
}

let cluster: ChildProcess | undefined;
const clusterDirs: string[] = [];

/** SIGINT, then SIGKILL if it has not exited within 10 s; by pid, never by name. */
async function stopCluster(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    process.kill(child.pid, 'SIGINT');
  } catch {
    return; // already gone
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 10_000))),
  ]);
  clearTimeout(timer);
  if (timedOut && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone meanwhile */
    }
    await exited;
  }
}

afterAll(async () => {
  if (cluster) await stopCluster(cluster);
  cluster = undefined;
  for (const d of clusterDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}, 30_000);

/** Start `ringvisor up --observe [ARGS]` and resolve with the dashboard link once it is printed. */
function startCluster(args: string[] = []): Promise<Cluster> {
  const clusterDir = mkdtempSync(join(tmpdir(), 'rv-dash-'));
  clusterDirs.push(clusterDir);
  const child = spawn(process.execPath, [join(ROOT, 'bin/ringvisor.mjs'), 'up', '--duration', '60', '--observe', '127.0.0.1:0', ...args], {
    // Its own directory: the disk image and the state directory are the run's alone.
    cwd: clusterDir,
    env: { ...process.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cluster = child;
  let out = '';
  const keep = (d: Buffer | string) => {
    out += d.toString();
    if (out.length > 20_000) out = out.slice(-10_000);
  };
  const output = () => out.slice(-4_000);
  return new Promise<Cluster>((resolvePromise, reject) => {
    let stdoutBuf = '';
    const timer = setTimeout(() => reject(new Error(`no dashboard line within 90 s; output:\n${output()}`)), 90_000);
    child.stderr!.on('data', keep);
    child.stdout!.on('data', (d: Buffer) => {
      keep(d);
      stdoutBuf += d.toString();
      const m = DASHBOARD_LINE.exec(stdoutBuf);
      if (m) {
        clearTimeout(timer);
        stdoutBuf = '';
        resolvePromise({ child, url: m[1], output });
      } else if (stdoutBuf.length > 100_000) stdoutBuf = stdoutBuf.slice(-1_000);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`ringvisor up exited (${code ?? signal}) before printing the dashboard line; output:\n${output()}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

interface PageState {
  connection: string | undefined;
  domains: Array<{ name: string; host: string; rate: number; ringSum: number }>;
  ringRates: number[];
}

/** One consistent read of the page (the page renders a snapshot in a single task). */
function pageState(page: Page): Promise<PageState> {
  return page.evaluate(() => {
    const rings = [...document.querySelectorAll<HTMLElement>('[data-testid="ring-row"]')].map((tr) => ({
      domain: tr.dataset.domain ?? '',
      host: tr.dataset.host ?? '',
      rps: Number(tr.querySelector<HTMLElement>('[data-testid="ring-rps"]')?.dataset.value ?? NaN),
    }));
    const domains = [...document.querySelectorAll<HTMLElement>('[data-testid="domain-row"]')].map((tr) => {
      const name = tr.dataset.domain ?? '';
      const host = tr.dataset.host ?? '';
      const ringSum = rings.filter((r) => r.domain === name && r.host === host).reduce((a, r) => a + r.rps, 0);
      return { name, host, rate: Number(tr.querySelector('[data-testid="domain-rate"]')?.textContent ?? NaN), ringSum };
    });
    return {
      connection: document.querySelector<HTMLElement>('[data-testid="connection"]')?.dataset.state,
      domains,
      ringRates: rings.map((r) => r.rps),
    };
  });
}

describe('live dashboard (real cluster, real Chromium)', () => {
  it.skipIf(!chromiumAvailable && !underCi)(
    'shows every domain, live rates per domain and ring, charts and timeline; a vbd ring row opens its decoded entries',
    async () => {
      if (!chromiumAvailable) throw new Error('chromium is required under CI; apt-get install chromium');
      const c = await startCluster();
      const origin = new URL(c.url).origin;

      // Without the cookie (a fresh request from node, no token) the API refuses.
      const unauth = await fetch(`${origin}/api/snapshot`);
      expect(unauth.status).toBe(401);
      await unauth.body?.cancel();

      let browser: Browser | undefined;
      try {
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
        });
        const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
        const pageErrors: string[] = [];
        page.on('pageerror', (e) => pageErrors.push(e.message));
        // The page works under its Content-Security-Policy: a blocked script, style or socket would be reported here.
        page.on('console', (m) => {
          if (m.type() === 'error' && /Content.Security.Policy/i.test(m.text())) pageErrors.push(m.text());
        });

        const response = await page.goto(c.url);
        expect(response?.ok(), `loading ${origin}/?token=…`).toBe(true);
        expect(response?.headers()['content-security-policy']).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
        expect(new URL(page.url()).search, 'the token is not left in the address bar').toBe('');

        // The domains as the API lists them (the page's own fetch, with its cookie).
        const names = await page.evaluate(async () => {
          const r = await fetch('/api/snapshot');
          if (!r.ok) throw new Error(`/api/snapshot: HTTP ${r.status}`);
          const s = (await r.json()) as { domains: Array<{ name: string }> };
          return s.domains.map((d) => d.name);
        });
        expect(names).toEqual(expect.arrayContaining(['guest1', 'guest2', 'guest3']));

        // Every one gets a domain row, and the live feed (not the polling fallback) is what feeds it.
        await expect
          .poll(async () => (await pageState(page)).domains.map((d) => d.name).sort(), { timeout: 15_000, interval: 250 })
          .toEqual([...names].sort());
        await expect.poll(async () => (await pageState(page)).connection, { timeout: 10_000, interval: 250 }).toBe('live');

        // Traffic shows up as rates: some domain and some ring rows above zero.
        await expect
          .poll(
            async () => {
              const s = await pageState(page);
              return { domainRateAboveZero: s.domains.some((d) => d.rate > 0), ringRateAboveZero: s.ringRates.some((r) => r > 0) };
            },
            { timeout: 20_000, interval: 500 },
          )
          .toEqual({ domainRateAboveZero: true, ringRateAboveZero: true });

        // A domain's figure is the sum of its rings' requests/s, rounded.
        const state = await pageState(page);
        for (const d of state.domains) expect(d.rate, `domain-rate of ${d.name}`).toBe(Math.round(d.ringSum));
        expect(state.ringRates.length).toBeGreaterThanOrEqual(names.filter((n) => n.startsWith('guest')).length);

        // Charts (three uPlot instances) and the timeline render.
        await expect.poll(() => page.locator('.uplot').count(), { timeout: 5_000 }).toBe(3);
        expect(await page.locator('[data-testid="timeline"] tbody tr').count()).toBeGreaterThan(0);
        expect(await page.locator('[data-testid="timeline"] tbody tr').count()).toBeLessThanOrEqual(100);

        // The direct guest's devices: a direct badge, the function's requester id and state, and
        // doorbells between the guest and the hardware (no backend, no rings).
        const direct = () =>
          page.locator('[data-testid="topology-device"][data-mode="direct"]').evaluateAll((lis) => lis.map((li) => ({ name: li.dataset.device ?? '', text: li.textContent ?? '' })));
        await expect.poll(async () => (await direct()).map((d) => d.name).sort(), { timeout: 15_000, interval: 250 }).toEqual(['vbd51712', 'vif0']);
        await expect
          .poll(async () => (await direct()).every((d) => /function 00:0[34]\.\d · enabled/.test(d.text) && /[1-9][\d,.]*k? doorbells\/s/.test(d.text)), { timeout: 15_000, interval: 250 })
          .toBe(true);

        // Click a vbd ring: its entries, decoded from the ring page.
        const vbdRow = page.locator('[data-testid="ring-row"][data-ring-id*="/vbd"]').first();
        const ringId = await vbdRow.getAttribute('data-ring-id');
        expect(ringId).toMatch(/\/vbd\d+\//);
        await vbdRow.click();
        const panel = page.getByTestId('ring-entries');
        await expect.poll(() => panel.isVisible(), { timeout: 5_000 }).toBe(true);
        expect(await panel.getAttribute('data-ring-id')).toBe(ringId);
        await expect.poll(() => panel.locator('[data-testid="ring-entry"]').count(), { timeout: 10_000, interval: 250 }).toBeGreaterThanOrEqual(1);

        // Every entry shows its ring index and its decoded blkif fields. Requests are the slots
        // published and not yet answered (often none on a quick disk), responses the latest ones.
        const readEntries = (table: string) =>
          page.locator(`${table} [data-testid="ring-entry"]`).evaluateAll((rows) =>
            rows.map((tr) => Object.fromEntries([...tr.querySelectorAll<HTMLElement>('td[data-field]')].map((td) => [td.dataset.field ?? '', td.textContent ?? '']))),
          );
        const requests = await readEntries('#ring-req-table');
        const responses = await readEntries('#ring-rsp-table');
        expect(requests.length + responses.length).toBeGreaterThanOrEqual(1);
        for (const e of requests) {
          expect(Object.keys(e), JSON.stringify(e)).toEqual(expect.arrayContaining(['index', 'operation', 'nrSegments', 'id', 'sectorNumber', 'segments']));
          expect(e.index, JSON.stringify(e)).toMatch(/^\d+$/);
          expect(e.operation, JSON.stringify(e)).toMatch(/^\d+ [a-z-]+$/); // a named blkif operation
          expect(e.sectorNumber, JSON.stringify(e)).toMatch(/^\d+$/);
          // Reads and writes name their pages by grant; a flush carries none.
          if (/^[01] /.test(e.operation)) expect(e.segments, JSON.stringify(e)).toMatch(/gref=\d+/);
          else expect(e.nrSegments, JSON.stringify(e)).toBe('0');
        }
        for (const e of responses) {
          expect(Object.keys(e), JSON.stringify(e)).toEqual(expect.arrayContaining(['index', 'id', 'operation', 'status']));
          expect(e.index, JSON.stringify(e)).toMatch(/^\d+$/);
          expect(e.id, JSON.stringify(e)).toMatch(/^\d+$/);
          expect(e.status, JSON.stringify(e)).toMatch(/^-?\d+/);
        }
        // (A freed slot may already hold the guest's next, unpublished request, so only some
        // response is required to read as a clean BLKIF_RSP_OKAY.)
        if (responses.length > 0) expect(responses.map((e) => e.status)).toContain('0 OKAY');

        // It is refreshed while open.
        const meta = page.locator('#ring-panel-meta');
        const before = await meta.textContent();
        await expect.poll(() => meta.textContent(), { timeout: 5_000, interval: 250 }).not.toBe(before);

        mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: SCREENSHOT, fullPage: true });

        // The close button hides it.
        await page.getByTestId('ring-entries-close').click();
        await expect.poll(() => panel.isVisible(), { timeout: 2_000 }).toBe(false);

        expect(pageErrors).toEqual([]);
      } catch (e) {
        if (e instanceof Error) e.message += `\n--- ringvisor output (tail) ---\n${c.output()}`;
        throw e;
      } finally {
        await browser?.close();
        await stopCluster(c.child);
      }
    },
    150_000,
  );

  it.skipIf(!chromiumAvailable && !underCi)(
    'emulated devices: a badge, the model state and growing traps in the topology; trap rates in the header and the domains table',
    async () => {
      if (!chromiumAvailable) throw new Error('chromium is required under CI; apt-get install chromium');
      const c = await startCluster(['--config', join(ROOT, 'examples/emulation.yaml')]);
      let browser: Browser | undefined;
      try {
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
        });
        const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
        const pageErrors: string[] = [];
        page.on('pageerror', (e) => pageErrors.push(e.message));
        expect((await page.goto(c.url))?.ok()).toBe(true);

        const devices = () =>
          page.locator('[data-testid="topology-device"]').evaluateAll((lis) =>
            lis.map((li) => ({
              domain: li.closest<HTMLElement>('[data-testid="topology-domain"]')?.dataset.domain ?? '',
              name: (li as HTMLElement).dataset.device ?? '',
              mode: (li as HTMLElement).dataset.mode ?? '',
              badge: li.querySelector('[data-testid="device-mode"]')?.textContent ?? '',
              text: li.textContent ?? '',
              traps: Number(li.querySelector<HTMLElement>('[data-testid="device-rates"]')?.dataset.traps ?? NaN),
            })),
          );
        const emulated = async () => (await devices()).filter((d) => d.mode === 'emulated');
        await expect.poll(async () => (await emulated()).map((d) => `${d.domain}/${d.name}/${d.badge}`).sort(), { timeout: 20_000, interval: 250 }).toEqual(['emu1/ata51712/emulated', 'emu1/lance0/emulated']);
        await expect.poll(async () => (await emulated()).every((d) => d.traps > 0), { timeout: 20_000, interval: 250 }).toBe(true);
        const before = new Map((await emulated()).map((d) => [d.name, d.traps]));
        // Live: the trap counts keep growing as snapshots arrive.
        await expect
          .poll(async () => (await emulated()).every((d) => d.traps > before.get(d.name)!), { timeout: 10_000, interval: 250 })
          .toBe(true);
        for (const d of await emulated()) {
          expect(d.text).toMatch(/model in dom0: /);
          expect(d.text).toMatch(/traps\/s/);
          expect(d.text).not.toMatch(/frontend/);
        }
        expect((await emulated()).find((d) => d.name === 'lance0')!.text).toMatch(/model in dom0: running · ports 0xc000-0xc01f/);
        // PV devices keep their xenbus view.
        const pv = (await devices()).filter((d) => d.domain === 'pv1');
        expect(pv.map((d) => d.mode)).toEqual(['pv', 'pv']);
        for (const d of pv) expect(d.text).toMatch(/frontend Connected/);

        // Header: traps and world switches per second over the hosts; domains table: traps/s only for emu1.
        const count = (t: string | null) => Number((t ?? '').replace(/,/g, ''));
        await expect.poll(async () => count(await page.getByTestId('traps-rate').textContent()), { timeout: 10_000, interval: 250 }).toBeGreaterThan(0);
        expect(count(await page.getByTestId('world-switch-rate').textContent())).toBeGreaterThan(0);
        const trapsCell = (name: string) => page.locator(`[data-testid="domain-row"][data-domain="${name}"] [data-testid="domain-traps"]`).textContent();
        await expect.poll(async () => count(await trapsCell('emu1')), { timeout: 10_000, interval: 250 }).toBeGreaterThan(0);
        expect(await trapsCell('pv1')).toBe('–');

        // The ring table stays PV-only: the emulated guest has no rings.
        expect(await page.locator('[data-testid="ring-row"][data-domain="emu1"]').count()).toBe(0);
        expect(await page.locator('[data-testid="ring-row"][data-domain="pv1"]').count()).toBeGreaterThan(0);
        mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: join(ARTIFACTS, 'dashboard-emulated.png'), fullPage: true });
        expect(pageErrors).toEqual([]);
      } catch (e) {
        if (e instanceof Error) e.message += `\n--- ringvisor output (tail) ---\n${c.output()}`;
        throw e;
      } finally {
        await browser?.close();
        await stopCluster(c.child);
      }
    },
    120_000,
  );
});
