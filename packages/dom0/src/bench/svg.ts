/**
 * `bench --svg FILE`: the comparison as charts, one self-contained SVG (no scripts, no fonts to
 * fetch), panels stacked:
 *   1. throughput by mode, relative to native, one group of bars per workload (log scale: the
 *      designs differ by orders of magnitude)
 *   2. CPU per operation by mode and runtime (stacked: hardware, dom0, guest and peer, VMApp), log
 *   3. scaling: aggregate ops/s against guests per mode, and Jain's fairness index
 * Every bar and point carries a <title> with its figure, so a browser shows it on hover.
 */
import type { ModesRow } from './modes.js';
import type { ScalingRow } from './scaling.js';

const MODE_COLOURS: Record<string, string> = {
  native: '#444444',
  emulated: '#d62728',
  'emulated-hosted': '#ff9896',
  pv: '#1f77b4',
  direct: '#2ca02c',
  svio: '#9467bd',
};
const RUNTIME_COLOURS = { hwsim: '#7f7f7f', dom0: '#1f77b4', guest: '#2ca02c', vmapp: '#ff7f0e' };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 0.01 ? x.toFixed(2) : x.toPrecision(2));
/** One group of bars per workload and transport. */
const groupOf = (r: ModesRow) => `${r.transport} · ${r.device} ${r.workload}`;

interface Panel {
  height: number;
  body: string;
}

/** A log-scale axis mapping [lo, hi] to [y0 (bottom), y1 (top)]. */
function logAxis(lo: number, hi: number, y0: number, y1: number) {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return (v: number) => y0 - ((Math.log10(Math.max(v, lo)) - a) / (b - a)) * (y0 - y1);
}

function decades(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}

function legend(x: number, y: number, items: Array<[string, string]>): string {
  return items.map(([name, c], i) => `<rect x="${x + i * 130}" y="${y - 9}" width="10" height="10" fill="${c}"/><text x="${x + i * 130 + 14}" y="${y}">${esc(name)}</text>`).join('');
}

function barsPanel(title: string, rows: ModesRow[], value: (r: ModesRow) => number, unit: string, stacked?: (r: ModesRow) => Array<[string, number]>): Panel {
  const groups = [...new Set(rows.map(groupOf))];
  const modes = [...new Set(rows.map((r) => r.mode))];
  const W = 1100;
  const top = 50;
  const plotH = 260;
  const left = 70;
  const groupW = (W - left - 20) / Math.max(1, groups.length);
  const barW = Math.max(3, (groupW - 10) / Math.max(1, modes.length));
  const vals = rows.map(value).filter((v) => v > 0);
  const lo = Math.min(...vals, 1) / 2;
  const hi = Math.max(...vals, 1) * 1.5;
  const y = logAxis(lo, hi, top + plotH, top);
  let s = `<text x="10" y="22" class="t">${esc(title)}</text>`;
  for (const d of decades(lo, hi)) if (d >= lo && d <= hi) s += `<line x1="${left}" x2="${W - 20}" y1="${y(d)}" y2="${y(d)}" class="g"/><text x="${left - 6}" y="${y(d) + 4}" text-anchor="end">${d >= 1 ? num(d) : String(d)}</text>`;
  s += `<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle">${esc(unit)}</text>`;
  groups.forEach((gname, gi) => {
    const gx = left + gi * groupW + 5;
    modes.forEach((m, mi) => {
      const r = rows.find((x) => groupOf(x) === gname && x.mode === m);
      if (!r) return;
      const x = gx + mi * barW;
      if (stacked) {
        let acc = 0;
        for (const [k, v] of stacked(r)) {
          if (v <= 0) continue;
          const yTop = y(acc + v);
          const yBot = acc > 0 ? y(acc) : top + plotH;
          s += `<rect x="${x.toFixed(1)}" y="${yTop.toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${Math.max(0.5, yBot - yTop).toFixed(1)}" fill="${RUNTIME_COLOURS[k as keyof typeof RUNTIME_COLOURS] ?? '#999'}"><title>${esc(`${m} ${gname}: ${k} ${num(v)} ${unit}`)}</title></rect>`;
          acc += v;
        }
      } else {
        const v = value(r);
        const yv = y(v);
        s += `<rect x="${x.toFixed(1)}" y="${yv.toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${Math.max(0.5, top + plotH - yv).toFixed(1)}" fill="${MODE_COLOURS[m] ?? '#999'}"><title>${esc(`${m} ${gname}: ${num(v)} ${unit}`)}</title></rect>`;
      }
    });
    const lx = gx + (modes.length * barW) / 2;
    s += `<text x="${lx}" y="${top + plotH + 14}" text-anchor="end" transform="rotate(-35 ${lx} ${top + plotH + 14})" class="s">${esc(gname)}</text>`;
  });
  s += stacked ? legend(left, top - 14, Object.entries(RUNTIME_COLOURS)) : legend(left, top - 14, modes.map((m) => [m, MODE_COLOURS[m] ?? '#999']));
  return { height: top + plotH + 150, body: s };
}

function scalingPanel(rows: ScalingRow[]): Panel {
  const plain = rows.filter((r) => !r.shares);
  const W = 1100;
  const top = 50;
  const plotH = 240;
  const left = 70;
  const right = W - 80;
  const counts = [...new Set(plain.map((r) => r.guests))].sort((a, b) => a - b);
  if (counts.length === 0) return { height: 0, body: '' };
  const x = (n: number) => left + (counts.length === 1 ? 0 : (Math.log2(n) - Math.log2(counts[0])) / (Math.log2(counts[counts.length - 1]) - Math.log2(counts[0]))) * (right - left);
  const maxOps = Math.max(...plain.map((r) => r.opsPerSec), 1) * 1.1;
  const y = (v: number) => top + plotH - (v / maxOps) * plotH;
  const yf = (f: number) => top + plotH - f * plotH;
  let s = `<text x="10" y="22" class="t">Scaling: aggregate block ops/s (lines) and Jain's fairness (dashed, right axis) against guests sharing one disk</text>`;
  for (let i = 0; i <= 4; i++) {
    const v = (maxOps * i) / 4;
    s += `<line x1="${left}" x2="${right}" y1="${y(v)}" y2="${y(v)}" class="g"/><text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${num(v)}</text><text x="${right + 6}" y="${yf(i / 4) + 4}">${(i / 4).toFixed(2)}</text>`;
  }
  for (const n of counts) s += `<text x="${x(n)}" y="${top + plotH + 16}" text-anchor="middle">${n}</text>`;
  s += `<text x="${(left + right) / 2}" y="${top + plotH + 34}" text-anchor="middle">guests</text>`;
  for (const mode of [...new Set(plain.map((r) => r.mode))]) {
    const pts = plain.filter((r) => r.mode === mode).sort((a, b) => a.guests - b.guests);
    const c = MODE_COLOURS[mode] ?? '#999';
    s += `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((r) => `${x(r.guests).toFixed(1)},${y(r.opsPerSec).toFixed(1)}`).join(' ')}"/>`;
    s += `<polyline fill="none" stroke="${c}" stroke-dasharray="4 3" points="${pts.map((r) => `${x(r.guests).toFixed(1)},${yf(r.fairness).toFixed(1)}`).join(' ')}"/>`;
    for (const r of pts) s += `<circle cx="${x(r.guests).toFixed(1)}" cy="${y(r.opsPerSec).toFixed(1)}" r="3" fill="${c}"><title>${esc(`${mode}, ${r.guests} guests: ${num(r.opsPerSec)} ops/s, fairness ${r.fairness.toFixed(3)}`)}</title></circle>`;
  }
  s += legend(left, top - 14, [...new Set(plain.map((r) => r.mode))].map((m) => [m, MODE_COLOURS[m] ?? '#999']));
  return { height: top + plotH + 60, body: s };
}

export function comparisonSvg(o: { modes?: ModesRow[]; scaling?: ScalingRow[]; caption: string }): string {
  const panels: Panel[] = [];
  if (o.modes?.length) {
    panels.push(barsPanel('Throughput by mode, relative to native (same workload, same transport)', o.modes, (r) => r.vsNative.opsPerSec, '× native'));
    panels.push(
      barsPanel('CPU per operation by runtime (µs, stacked)', o.modes, (r) => r.cpuUsPerOp.hwsim + r.cpuUsPerOp.dom0 + r.cpuUsPerOp.guest + r.cpuUsPerOp.peer + r.cpuUsPerOp.vmapp, 'µs per op', (r) => [
        ['hwsim', r.cpuUsPerOp.hwsim],
        ['dom0', r.cpuUsPerOp.dom0],
        ['guest', r.cpuUsPerOp.guest + r.cpuUsPerOp.peer],
        ['vmapp', r.cpuUsPerOp.vmapp],
      ]),
    );
  }
  if (o.scaling?.length) panels.push(scalingPanel(o.scaling));
  let yOff = 0;
  let body = '';
  for (const p of panels) {
    body += `<g transform="translate(0 ${yOff})">${p.body}</g>`;
    yOff += p.height;
  }
  const H = yOff + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="${H}" viewBox="0 0 1100 ${H}" font-family="sans-serif" font-size="11">`,
    '<style>.t{font-size:14px;font-weight:bold}.s{font-size:10px}.g{stroke:#ddd;stroke-width:1}</style>',
    '<rect width="100%" height="100%" fill="white"/>',
    body,
    `<text x="10" y="${H - 10}" class="s">${esc(o.caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
