// ringvisor live dashboard. Plain browser JS, no build step.
//
// Data: one ClusterSnapshot a second from the WebSocket /api/live (same origin, cookie auth),
// falling back to polling /api/snapshot while the socket is down and reconnecting with back-off.
// The shapes are those of packages/dom0/src/observe/model.ts.
//
// DOM: every list is reconciled by key and every cell is written only when its text changes, so
// one snapshot costs a handful of text writes; nothing is ever inserted as HTML (all text goes
// through textContent, so names from the config cannot inject markup).

const HISTORY = 120;
const TIMELINE_ROWS = 100;
const POLL_MS = 1000;
const RING_REFRESH_MS = 1000;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 10000;

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

/** Create an element; `props` may carry className, text, title, dataset and attrs. */
function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  if (props.className) e.className = props.className;
  if (props.text !== undefined) e.textContent = String(props.text);
  if (props.title) e.title = props.title;
  if (props.dataset) for (const [k, v] of Object.entries(props.dataset)) e.dataset[k] = String(v);
  if (props.attrs) for (const [k, v] of Object.entries(props.attrs)) e.setAttribute(k, String(v));
  for (const c of children) if (c) e.append(c);
  return e;
}

/** Write text only if it changed (cached on the element, so no layout read). */
function setText(el, value) {
  const s = value === undefined || value === null ? '' : String(value);
  if (el._t !== s) {
    el._t = s;
    el.textContent = s;
  }
}

function setClass(el, cls) {
  if (el._c !== cls) {
    el._c = cls;
    el.className = cls;
  }
}

function setAttr(el, name, value) {
  const key = '_a_' + name;
  const s = String(value);
  if (el[key] !== s) {
    el[key] = s;
    el.setAttribute(name, s);
  }
}

/**
 * A table row with one cell per column, reachable as `tr._cells[key]`. `cols` holds
 * [key, className, testid?] triples; callers fill cells that need inner elements afterwards.
 */
function tableRow(props, cols) {
  const tr = h('tr', props);
  tr._cells = {};
  for (const [key, className, testid] of cols) {
    const td = h('td', { className: className || '', ...(testid ? { dataset: { testid } } : {}) });
    tr._cells[key] = td;
    tr.append(td);
  }
  return tr;
}

/**
 * Keyed reconciliation of `container`'s children with `items`: nodes are created once per key,
 * updated in place, moved only when the order changed, and removed when their key disappears.
 */
function syncList(container, items, keyOf, create, update) {
  const old = container._keyed || new Map();
  const next = new Map();
  let prev = null;
  for (const item of items) {
    const k = keyOf(item);
    if (next.has(k)) continue; // defensive: duplicate keys would fight over one node
    let node = old.get(k);
    if (!node) node = create(item, k);
    update(node, item);
    next.set(k, node);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (node !== want) container.insertBefore(node, want);
    prev = node;
  }
  for (const [k, node] of old) if (!next.has(k)) node.remove();
  container._keyed = next;
}

// ---------------------------------------------------------------------------------------------
// Formatting

const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

function num(n) {
  return typeof n === 'number' && Number.isFinite(n) ? nf0.format(n) : '–';
}

/** Rates: one decimal below 10, whole numbers above. */
function rate(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  return Math.abs(n) < 10 && n !== 0 ? nf1.format(n) : nf0.format(n);
}

function duration(sec) {
  if (typeof sec !== 'number' || !Number.isFinite(sec)) return '–';
  const s = Math.floor(sec);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return (d ? d + 'd ' : '') + hh + ':' + mm + ':' + ss;
}

function clock(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
}

/** blkif (public/io/blkif.h) codes, shown next to the raw numbers on vbd rings. */
const BLKIF_OPS = { 0: 'read', 1: 'write', 2: 'write-barrier', 3: 'flush', 5: 'discard', 6: 'indirect' };
const BLKIF_STATUS = { 0: 'OKAY', '-1': 'ERROR', '-2': 'EOPNOTSUPP' };

/** An entry field as text; on block rings operation and status codes also get their names. */
function entryText(ringId, field, v) {
  if (/\/vbd\d*\//.test(ringId) && typeof v === 'number') {
    const name = field === 'operation' ? BLKIF_OPS[v] : field === 'status' ? BLKIF_STATUS[v] : undefined;
    if (name) return v + ' ' + name;
  }
  return fieldText(v);
}

/** A decoded ring-entry field, whatever its shape (numbers, names, segment arrays, objects). */
function fieldText(v) {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return v.map(fieldText).join('; ');
  // blkif segment: the granted page and the inclusive sector span within it.
  if (typeof v === 'object' && 'gref' in v && 'firstSect' in v && 'lastSect' in v && Object.keys(v).length === 3)
    return 'gref=' + fieldText(v.gref) + ' ' + fieldText(v.firstSect) + '–' + fieldText(v.lastSect);
  if (typeof v === 'object')
    return Object.entries(v)
      .map(([k, x]) => k + '=' + fieldText(x))
      .join(' ');
  return String(v);
}

// ---------------------------------------------------------------------------------------------
// Connection: WebSocket first, polling while it is down

const $ = (id) => document.getElementById(id);
const connEl = $('conn');

const conn = {
  ws: null,
  pollTimer: 0,
  reconnectTimer: 0,
  backoff: RECONNECT_MIN_MS,
  unauthorised: false,
};

function setConn(state, text) {
  setClass(connEl, 'conn conn-' + state);
  setText(connEl, text);
  connEl.dataset.state = state;
}

function connect() {
  clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = 0;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/live';
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  conn.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    conn.backoff = RECONNECT_MIN_MS;
    conn.unauthorised = false;
    stopPolling();
    setConn('live', 'live');
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg && msg.type === 'snapshot' && msg.snapshot) accept(msg.snapshot);
  };
  ws.onclose = () => {
    if (conn.ws === ws) conn.ws = null;
    if (opened) conn.backoff = RECONNECT_MIN_MS;
    startPolling();
    scheduleReconnect();
  };
  ws.onerror = () => {
    /* onclose follows */
  };
}

function scheduleReconnect() {
  if (conn.reconnectTimer) return;
  const wait = conn.backoff;
  conn.backoff = Math.min(conn.backoff * 2, RECONNECT_MAX_MS);
  conn.reconnectTimer = setTimeout(connect, wait);
}

function startPolling() {
  if (conn.pollTimer) return;
  if (!conn.unauthorised) setConn('polling', 'polling (live feed down)');
  const tick = async () => {
    await poll();
    if (conn.pollTimer) conn.pollTimer = setTimeout(tick, POLL_MS);
  };
  conn.pollTimer = setTimeout(tick, 0);
}

function stopPolling() {
  clearTimeout(conn.pollTimer);
  conn.pollTimer = 0;
}

async function poll(initial = false) {
  try {
    const res = await fetch('/api/snapshot', { cache: 'no-store', credentials: 'same-origin' });
    if (res.status === 401) {
      conn.unauthorised = true;
      setConn('error', 'unauthorised: open the dashboard link that carries ?token=');
      return;
    }
    if (!res.ok) {
      setConn('error', 'snapshot: HTTP ' + res.status);
      return;
    }
    conn.unauthorised = false;
    const snap = await res.json();
    if (!initial && (!conn.ws || conn.ws.readyState !== WebSocket.OPEN)) setConn('polling', 'polling (live feed down)');
    accept(snap);
  } catch {
    // A poll still in flight when the socket came back must not mark a live page as down.
    if (!conn.ws || conn.ws.readyState !== WebSocket.OPEN) setConn('down', 'disconnected: retrying');
  }
}

// ---------------------------------------------------------------------------------------------
// Snapshot intake: record history for the charts on every sample, render at most once per task

let latest = null;
let lastTime = -1;
let renderQueued = false;
const history = []; // { t: seconds, hosts: Map(name → HostRow), domains: Map(label → req/s) }

function domainKey(host, domid) {
  return host + '/' + domid;
}

function accept(snap) {
  if (!snap || typeof snap !== 'object' || !Array.isArray(snap.domains)) return;
  if (typeof snap.time === 'number' && snap.time <= lastTime) return; // duplicate (poll + ws overlap)
  lastTime = typeof snap.time === 'number' ? snap.time : lastTime;
  latest = snap;
  record(snap);
  if (!renderQueued) {
    renderQueued = true;
    setTimeout(() => {
      renderQueued = false;
      if (!document.hidden) render(latest);
    }, 0);
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && latest) render(latest);
});

/** Requests/s over every ring of each domain, keyed host/domid. */
function ringRatesByDomain(snap) {
  const m = new Map();
  for (const r of snap.rings || []) {
    const k = domainKey(r.host, r.domid);
    m.set(k, (m.get(k) || 0) + (Number(r.requestsPerSec) || 0));
  }
  return m;
}

/** Chart label of a domain: its name, qualified by host when several hosts share a name (dom0). */
function domainLabels(snap) {
  const count = new Map();
  for (const d of snap.domains) count.set(d.name, (count.get(d.name) || 0) + 1);
  const labels = new Map();
  for (const d of snap.domains) labels.set(domainKey(d.host, d.domid), count.get(d.name) > 1 ? d.host + '/' + d.name : d.name);
  return labels;
}

function record(snap) {
  const hosts = new Map();
  for (const hr of snap.hosts || []) hosts.set(hr.name, hr);
  const rates = ringRatesByDomain(snap);
  const labels = domainLabels(snap);
  const domains = new Map();
  for (const d of snap.domains) {
    const k = domainKey(d.host, d.domid);
    domains.set(labels.get(k), rates.get(k) || 0);
  }
  // Rings of domains not (yet) in the domain list still count, under their ring's domain name.
  for (const r of snap.rings || []) {
    const k = domainKey(r.host, r.domid);
    if (!labels.has(k)) domains.set(r.domain, rates.get(k) || 0);
  }
  const t = (typeof snap.time === 'number' ? snap.time : Date.now()) / 1000;
  history.push({ t, hosts, domains });
  if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
}

// ---------------------------------------------------------------------------------------------
// Rendering

function render(snap) {
  renderHeader(snap);
  renderDomains(snap);
  renderRings(snap);
  renderTopology(snap);
  renderTimeline(snap);
  renderCharts();
}

function renderHeader(snap) {
  setText($('uptime'), duration(snap.uptimeSec));
  setText($('transport'), snap.transport || '–');
  setText($('host-count'), (snap.hosts || []).length);
  setText($('domain-count'), snap.domains.length);
  setText($('ring-count'), (snap.rings || []).length);
  const hostSum = (k) => (snap.hosts || []).reduce((a, x) => a + (Number(x[k]) || 0), 0);
  setText($('traps-rate'), rate(hostSum('trapsPerSec')));
  setText($('world-switch-rate'), rate(hostSum('worldSwitchesPerSec')));
  setText($('updated'), clock(snap.time));
}

// --- domains (xentop-like) -------------------------------------------------------------------

const DOMAIN_COLS = [
  ['host'], ['name'], ['id', 'num'], ['state'], ['cpu', 'num'], ['mem', 'num'], ['vcpus', 'num'], ['tx', 'num'], ['rx', 'num'],
  ['rd', 'num'], ['wr', 'num'], ['evt', 'num'], ['traps', 'num', 'domain-traps'], ['rate', 'num', 'domain-rate'], ['integrity', 'num'],
];

function renderDomains(snap) {
  const rates = ringRatesByDomain(snap);
  syncList(
    $('domains-body'),
    snap.domains,
    (d) => domainKey(d.host, d.domid),
    (d) => tableRow({ dataset: { testid: 'domain-row', domain: d.name, host: d.host } }, DOMAIN_COLS),
    (tr, d) => {
      const c = tr._cells;
      const r = Math.round(rates.get(domainKey(d.host, d.domid)) || 0);
      setText(c.host, d.host);
      setText(c.name, d.name);
      setText(c.id, d.domid);
      setText(c.state, d.state);
      setClass(c.state, 'state state-' + String(d.state).toLowerCase().replace(/[^a-z0-9-]/g, ''));
      setText(c.cpu, typeof d.cpuPct === 'number' ? nf1.format(d.cpuPct) : '–');
      setText(c.mem, typeof d.memKiB === 'number' ? nf0.format(d.memKiB / 1024) : '–');
      setText(c.vcpus, num(d.vcpus));
      setText(c.tx, num(d.netTxPackets));
      setText(c.rx, num(d.netRxPackets));
      setText(c.rd, num(d.vbdReads));
      setText(c.wr, num(d.vbdWrites));
      setText(c.evt, rate(d.eventsPerSec));
      // Only guests with emulated devices trap; for the others there is nothing to count.
      setText(c.traps, typeof d.trapsPerSec === 'number' ? rate(d.trapsPerSec) : '–');
      c.traps.title = typeof d.traps === 'number' ? 'traps total ' + d.traps : 'no emulated devices';
      setText(c.rate, String(r)); // plain integer: machine-readable as well
      const fails = Number(d.integrityFailures) || 0;
      setText(c.integrity, fails ? fails + ' FAILED / ' + num(d.integrityChecked) : num(d.integrityChecked) + ' ok');
      setClass(c.integrity, fails ? 'num bad' : 'num');
      c.name.title = d.name;
    },
  );
}

// --- rings ----------------------------------------------------------------------------------

const RING_COLS = [
  ['domain'], ['device'], ['ring'], ['modeCell'], ['size', 'num'], ['req', 'num mono'], ['rsp', 'num mono'], ['occ', 'occ'],
  ['rps', 'num', 'ring-rps'], ['rsps', 'num', 'ring-rsps'], ['verdictCell'], ['paused', 'paused'],
];

function renderRings(snap) {
  const rings = snap.rings || [];
  syncList(
    $('rings-body'),
    rings,
    (r) => r.id,
    (r) => {
      const tr = tableRow(
        { className: 'ring-row', dataset: { testid: 'ring-row', ringId: r.id, domain: r.domain, host: r.host }, attrs: { tabindex: '0', role: 'button' } },
        RING_COLS,
      );
      const c = tr._cells;
      c.mode = h('span', { className: 'badge' });
      c.modeCell.append(c.mode);
      c.bar = h('span', { className: 'bar-fill' });
      c.occText = h('span', { className: 'bar-text' });
      c.occ.append(h('span', { className: 'bar' }, c.bar), c.occText);
      c.verdict = h('span', { className: 'verdict' });
      c.verdictCell.append(c.verdict);
      return tr;
    },
    (tr, r) => {
      const c = tr._cells;
      setText(c.domain, r.domain + ' (' + r.domid + ')');
      setText(c.device, r.device);
      setText(c.ring, r.ring);
      setText(c.mode, r.mode);
      setClass(c.mode, 'badge mode-' + r.mode);
      setText(c.size, r.size);
      setText(c.req, r.reqProd + ' / ' + r.reqCons + ' / ' + r.reqEvent);
      setText(c.rsp, r.rspProd + ' / ' + r.rspEvent);
      const frac = r.size > 0 ? Math.max(0, Math.min(1, r.occupancy / r.size)) : 0;
      const pct = Math.round(frac * 100);
      if (c.bar._pct !== pct) {
        c.bar._pct = pct;
        c.bar.style.width = pct + '%';
        c.bar.className = 'bar-fill' + (frac >= 0.9 ? ' full' : frac >= 0.5 ? ' half' : '');
      }
      setText(c.occText, r.occupancy + '/' + r.size);
      setText(c.rps, rate(r.requestsPerSec));
      setAttr(c.rps, 'data-value', Number(r.requestsPerSec) || 0);
      setText(c.rsps, rate(r.responsesPerSec));
      setText(c.verdict, r.verdict + (r.verdict === 'STUCK' && r.stuck ? ' (' + r.stuck + ')' : ''));
      setClass(c.verdict, 'verdict verdict-' + String(r.verdict).toLowerCase());
      setText(c.paused, r.paused ? 'PAUSED' : '');
      setClass(tr, 'ring-row' + (r.paused ? ' is-paused' : '') + (ringPanel.id === r.id ? ' selected' : ''));
      c.req.title = 'requests total ' + r.requests + ', pending (unconsumed) ' + r.pendingRequests;
      c.rsp.title = 'responses total ' + r.responses;
    },
  );
}

$('rings-body').addEventListener('click', (ev) => {
  const tr = ev.target instanceof Element ? ev.target.closest('tr[data-ring-id]') : null;
  if (tr) openRing(tr.dataset.ringId);
});
$('rings-body').addEventListener('keydown', (ev) => {
  if (ev.key !== 'Enter' && ev.key !== ' ') return;
  const tr = ev.target instanceof Element ? ev.target.closest('tr[data-ring-id]') : null;
  if (tr) {
    ev.preventDefault();
    openRing(tr.dataset.ringId);
  }
});

// --- ring entries panel ---------------------------------------------------------------------

const ringPanel = { id: null, timer: 0, seq: 0 };

function markSelected() {
  for (const tr of $('rings-body').children) tr.classList.toggle('selected', tr.dataset.ringId === ringPanel.id);
  // keep the cached class in step with the DOM so setClass in renderRings stays correct
  for (const tr of $('rings-body').children) tr._c = tr.className;
}

function openRing(id) {
  if (!id) return;
  const panel = $('ring-panel');
  const changed = ringPanel.id !== id;
  ringPanel.id = id;
  panel.hidden = false;
  panel.dataset.ringId = id;
  setText($('ring-panel-title'), 'Ring entries: ' + id);
  if (changed) {
    clearEntries();
    setText($('ring-panel-meta'), 'loading…');
  }
  markSelected();
  clearTimeout(ringPanel.timer);
  refreshRing();
  if (changed) panel.scrollIntoView({ block: 'nearest' });
}

function closeRing() {
  ringPanel.id = null;
  ringPanel.seq++;
  clearTimeout(ringPanel.timer);
  ringPanel.timer = 0;
  const panel = $('ring-panel');
  panel.hidden = true;
  delete panel.dataset.ringId;
  clearEntries();
  markSelected();
}

$('ring-panel-close').addEventListener('click', closeRing);
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && ringPanel.id) closeRing();
});

function clearEntries() {
  for (const id of ['ring-req-table', 'ring-rsp-table']) {
    const t = $(id);
    t.tHead.replaceChildren();
    t.tBodies[0].replaceChildren();
    t.tBodies[0]._keyed = null;
    t._cols = '';
  }
  const err = $('ring-panel-error');
  err.hidden = true;
}

async function refreshRing() {
  const id = ringPanel.id;
  if (!id) return;
  const seq = ++ringPanel.seq;
  let data = null;
  let error = '';
  try {
    const res = await fetch('/api/ring?id=' + encodeURIComponent(id), { cache: 'no-store', credentials: 'same-origin' });
    if (res.ok) data = await res.json();
    else error = res.status === 404 ? 'ring not found (disconnected?)' : res.status === 401 ? 'unauthorised' : 'HTTP ' + res.status;
  } catch (e) {
    error = 'fetch failed: ' + (e && e.message ? e.message : String(e));
  }
  if (seq !== ringPanel.seq || ringPanel.id !== id) return; // closed or switched meanwhile
  const err = $('ring-panel-error');
  if (error) {
    err.hidden = false;
    setText(err, error);
  } else {
    err.hidden = true;
    showEntries(data);
  }
  ringPanel.timer = setTimeout(refreshRing, RING_REFRESH_MS);
}

function showEntries(data) {
  const reqs = Array.isArray(data && data.requests) ? data.requests : [];
  const rsps = Array.isArray(data && data.responses) ? data.responses : [];
  const rspProd = Number(data && data.rspProd);
  setText(
    $('ring-panel-meta'),
    'req_prod ' + (data && data.reqProd !== undefined ? data.reqProd : '–') + ', rsp_prod ' + (Number.isFinite(rspProd) ? rspProd : '–') +
      ', ' + reqs.length + ' requests, ' + rsps.length + ' responses shown · refreshed ' + clock(Date.now()),
  );
  const id = String((data && data.id) || ringPanel.id || '');
  fillEntryTable($('ring-req-table'), id, reqs);
  fillEntryTable($('ring-rsp-table'), id, rsps);
}

/** Columns = `index` then every decoded field seen, in first-seen order; newest entry first. */
function fillEntryTable(table, ringId, entries) {
  const cols = ['index'];
  const seen = new Set(cols);
  for (const e of entries)
    for (const k of Object.keys(e))
      if (!seen.has(k)) {
        seen.add(k);
        cols.push(k);
      }
  const sig = ringId + '\u0001' + cols.join('\u0000');
  if (table._cols !== sig) {
    table._cols = sig;
    table.tHead.replaceChildren(h('tr', {}, ...cols.map((c) => h('th', { text: c }))));
    table.tBodies[0].replaceChildren();
    table.tBodies[0]._keyed = null;
  }
  const sorted = entries.slice().sort((a, b) => Number(b.index) - Number(a.index));
  if (sorted.length === 0) {
    table.tBodies[0].replaceChildren(h('tr', {}, h('td', { className: 'empty', text: 'no entries', attrs: { colspan: cols.length } })));
    table.tBodies[0]._keyed = null;
    return;
  }
  if (!table.tBodies[0]._keyed) table.tBodies[0].replaceChildren();
  syncList(
    table.tBodies[0],
    sorted,
    (e) => String(e.index),
    () => {
      const tr = h('tr', { dataset: { testid: 'ring-entry' } });
      tr._cells = cols.map((c) => {
        const td = h('td', { dataset: { field: c } });
        tr.append(td);
        return td;
      });
      return tr;
    },
    (tr, e) => {
      cols.forEach((c, i) => setText(tr._cells[i], entryText(ringId, c, e[c])));
    },
  );
}

// --- topology -------------------------------------------------------------------------------

function renderTopology(snap) {
  const runtimesByHost = new Map();
  for (const r of snap.runtimes || []) {
    if (!runtimesByHost.has(r.host)) runtimesByHost.set(r.host, []);
    runtimesByHost.get(r.host).push(r);
  }
  const domainsByHost = new Map();
  for (const d of snap.domains) {
    if (!domainsByHost.has(d.host)) domainsByHost.set(d.host, []);
    domainsByHost.get(d.host).push(d);
  }
  // Hosts named by runtimes or domains but missing from hosts[] still get a card.
  const hosts = (snap.hosts || []).map((x) => x.name);
  for (const name of [...runtimesByHost.keys(), ...domainsByHost.keys()]) if (!hosts.includes(name)) hosts.push(name);
  const hostRows = new Map((snap.hosts || []).map((x) => [x.name, x]));

  syncList(
    $('topology'),
    hosts,
    (name) => name,
    (name) => {
      const card = h('article', { className: 'host', dataset: { testid: 'host', host: name } });
      card._title = h('h3', {});
      card._meta = h('span', { className: 'meta' });
      card._runtimes = h('ul', { className: 'runtimes' });
      card._domains = h('ul', { className: 'domains' });
      card.append(
        h('header', {}, card._title, card._meta),
        h('h4', { text: 'runtimes' }),
        card._runtimes,
        h('h4', { text: 'domains' }),
        card._domains,
      );
      return card;
    },
    (card, name) => {
      const hr = hostRows.get(name);
      setText(card._title, name);
      setText(
        card._meta,
        hr
          ? hr.transport + ' · grant ops ' + rate(hr.grantOpsPerSec) + '/s · maps ' + num(hr.grantMaps) + ' · unmaps ' + num(hr.grantUnmaps) +
              ' · copies ' + num(hr.grantCopies) + ' · copied ' + bytes(hr.bytesCopied) +
              ' · traps ' + rate(hr.trapsPerSec) + '/s · world switches ' + rate(hr.worldSwitchesPerSec) + '/s'
          : '',
      );
      syncList(card._runtimes, runtimesByHost.get(name) || [], (r) => r.name, createRuntime, updateRuntime);
      syncList(card._domains, domainsByHost.get(name) || [], (d) => String(d.domid), createDomainNode, updateDomainNode);
    },
  );
}

function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? String(v) : v.toFixed(1)) + ' ' + units[i];
}

function createRuntime() {
  const li = h('li', { className: 'runtime', dataset: { testid: 'runtime' } });
  li._dot = h('span', { className: 'dot' });
  li._name = h('span', { className: 'name' });
  li._role = h('span', { className: 'badge role' });
  li._kind = h('span', { className: 'meta' });
  li.append(li._dot, li._name, li._role, li._kind);
  return li;
}

function updateRuntime(li, r) {
  setClass(li._dot, 'dot ' + (r.state === 'up' ? 'up' : 'down'));
  li._dot.title = r.state;
  setText(li._name, r.name);
  setText(li._role, r.role);
  setText(li._kind, r.kind + (r.pid !== undefined && r.pid !== null ? ' · pid ' + r.pid : '') + ' · ' + r.state);
  setClass(li, 'runtime' + (r.state === 'up' ? '' : ' is-down'));
}

function createDomainNode(d) {
  const li = h('li', { className: 'domain', dataset: { testid: 'topology-domain', domain: d.name } });
  li._name = h('span', { className: 'name' });
  li._meta = h('span', { className: 'meta' });
  li._devices = h('ul', { className: 'devices' });
  li.append(h('div', { className: 'line' }, li._name, li._meta), li._devices);
  return li;
}

function updateDomainNode(li, d) {
  setText(li._name, d.name);
  setText(
    li._meta,
    'dom' + d.domid + ' · ' + d.state + ' · ' + (typeof d.memKiB === 'number' ? nf0.format(d.memKiB / 1024) + ' MiB' : '–') +
      ' · ' + (typeof d.cpuPct === 'number' ? nf1.format(d.cpuPct) : '–') + '% CPU',
  );
  syncList(li._devices, d.devices || [], (x) => x.name, createDevice, updateDevice);
}

function createDevice(x) {
  const li = h('li', { className: 'device', dataset: { testid: 'topology-device', device: x.name } });
  li._name = h('span', { className: 'name' });
  li._mode = h('span', { className: 'badge', dataset: { testid: 'device-mode' } });
  li._state = h('span', { className: 'meta' });
  li._rates = h('span', { className: 'meta', dataset: { testid: 'device-rates' } });
  li.append(li._name, li._mode, li._state, li._rates);
  return li;
}

function updateDevice(li, x) {
  setText(li._name, x.name);
  setText(li._mode, x.mode);
  setClass(li._mode, 'badge mode-' + x.mode);
  li.dataset.mode = x.mode;
  if (x.mode === 'emulated') {
    // No xenbus and no rings: the model in dom0 and the vCPU's traps into it are what there is.
    const where = x.placement === 'hosted' ? 'model in VMApp (hosted)' : 'model in dom0: ' + x.backendState;
    setText(li._state, where + (x.ports && x.ports.length ? ' · ports ' + x.ports.join(', ') : ''));
    setText(li._rates, rate(x.trapsPerSec) + ' traps/s · ' + rate(x.interruptsPerSec) + ' irq/s · ' + num(x.traps) + ' traps');
    setAttr(li._rates, 'data-traps', Number(x.traps) || 0);
  } else if (x.mode === 'svio') {
    // A VIF of the self-virtualizing device: two message queues, processed by the device's cores.
    setText(li._state, (x.rid || 'VIF') + ' · ' + x.backendState);
    setText(li._rates, rate(x.eventsPerSec) + ' doorbells/s · ' + rate(x.interruptsPerSec) + ' irq/s (guest ↔ device cores, not dom0)');
  } else if (x.mode === 'direct') {
    // No backend and no xenbus: a device function the guest drives itself, behind the IOMMU.
    setText(li._state, 'function ' + (x.rid || '–') + ' · ' + x.backendState + (x.dmaFaults ? ' · ' + num(x.dmaFaults) + ' DMA blocked' : ''));
    setText(li._rates, rate(x.eventsPerSec) + ' doorbells/s · ' + rate(x.interruptsPerSec) + ' irq/s (guest ↔ hardware, not dom0)');
  } else {
    setText(li._state, 'backend ' + x.backendState + ' · frontend ' + x.frontendState);
    setText(li._rates, rate(x.eventsPerSec) + ' evt/s · ' + rate(x.notificationsPerSec) + ' ntf/s · ' + rate(x.suppressedPerSec) + ' supp/s');
  }
}

// --- timeline -------------------------------------------------------------------------------

function renderTimeline(snap) {
  const tl = Array.isArray(snap.timeline) ? snap.timeline : [];
  const last = tl[tl.length - 1];
  const sig = tl.length + '|' + (last ? last.t + '|' + last.kind + '|' + last.text : '');
  const body = $('timeline-body');
  if (body._sig === sig) return;
  body._sig = sig;
  const rows = tl.slice(-TIMELINE_ROWS).reverse();
  const frag = document.createDocumentFragment();
  for (const e of rows) {
    const where = (e.domid !== undefined ? 'dom' + e.domid : '') + (e.device ? '/' + e.device : '');
    frag.append(
      h(
        'tr',
        { className: 'kind-' + String(e.kind).toLowerCase().replace(/[^a-z0-9-]/g, '') },
        h('td', { className: 'mono', text: clock(e.t) }),
        h('td', { text: e.host }),
        h('td', { text: where }),
        h('td', { className: 'kind', text: e.kind }),
        h('td', { text: e.text }),
      ),
    );
  }
  if (rows.length === 0) frag.append(h('tr', {}, h('td', { className: 'empty', text: 'nothing yet', attrs: { colspan: 5 } })));
  body.replaceChildren(frag);
}

// --- charts ---------------------------------------------------------------------------------

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const charts = {}; // id → { plot, key }

function chartWidth(el) {
  return Math.max(240, Math.floor(el.clientWidth || el.parentElement.clientWidth || 400));
}

/** Create or update one chart; recreated (not mutated) when its set of series changes. */
function drawChart(id, labels, columns) {
  const el = $(id);
  const U = globalThis.uPlot;
  if (!U) {
    const note = $('chart-note');
    note.hidden = false;
    setText(note, 'charts unavailable: uPlot did not load');
    return;
  }
  const xs = history.map((s) => s.t);
  const data = [xs, ...columns];
  const key = labels.join('\u0000');
  const cur = charts[id];
  if (cur && cur.key === key) {
    cur.plot.setData(data);
    return;
  }
  if (cur) cur.plot.destroy();
  el.replaceChildren();
  const opts = {
    width: chartWidth(el),
    height: 200,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => (v >= 1e6 ? v / 1e6 + 'M' : v >= 1e3 ? v / 1e3 + 'k' : v)) }],
    series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false, points: { show: false } }))],
  };
  charts[id] = { plot: new U(opts, data, el), key };
}

function renderCharts() {
  if (history.length === 0) return;
  const newest = history[history.length - 1];

  // Per host: events, notifications, suppressed.
  const hostNames = [...newest.hosts.keys()];
  const evLabels = [];
  const evCols = [];
  const trLabels = [];
  const trCols = [];
  const col = (pick) => history.map((s) => {
    const v = pick(s);
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  });
  for (const name of hostNames) {
    evLabels.push(name + ' events', name + ' notifications', name + ' suppressed');
    evCols.push(
      col((s) => s.hosts.get(name) && s.hosts.get(name).eventsPerSec),
      col((s) => s.hosts.get(name) && s.hosts.get(name).notificationsPerSec),
      col((s) => s.hosts.get(name) && s.hosts.get(name).suppressedPerSec),
    );
    trLabels.push(name + ' traps', name + ' world switches');
    trCols.push(
      col((s) => s.hosts.get(name) && s.hosts.get(name).trapsPerSec),
      col((s) => s.hosts.get(name) && s.hosts.get(name).worldSwitchesPerSec),
    );
  }
  drawChart('chart-events', evLabels, evCols);
  drawChart('chart-traps', trLabels, trCols);

  // Per domain: ring requests/s (every domain present now; absent samples are gaps).
  const domLabels = [...newest.domains.keys()];
  drawChart('chart-rings', domLabels, domLabels.map((l) => col((s) => s.domains.get(l))));
}

let resizeQueued = false;
const ro = typeof ResizeObserver === 'function'
  ? new ResizeObserver(() => {
      if (resizeQueued) return;
      resizeQueued = true;
      requestAnimationFrame(() => {
        resizeQueued = false;
        for (const [id, c] of Object.entries(charts)) {
          const w = chartWidth($(id));
          if (c.plot.width !== w) c.plot.setSize({ width: w, height: 200 });
        }
      });
    })
  : null;
if (ro) for (const id of ['chart-events', 'chart-traps', 'chart-rings']) ro.observe($(id));

// ---------------------------------------------------------------------------------------------
// Start: one snapshot straight away for a quick first paint, then the live feed.

poll(true).finally(connect);
