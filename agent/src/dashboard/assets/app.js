// dcnet's dashboard: one page that reads the agent's JSON API with the viewer's credential
// and redraws the open view every two seconds. No framework and no build step: the page is
// small, and every value goes into the page as text (never as HTML), so nothing the cluster
// holds can run as script here.
'use strict';

const AUTH_KEY = 'dcnet.authorization';
const POLL_MS = 2000;

class AuthError extends Error {}
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// ---- helpers ---------------------------------------------------------------------------

// An element with attributes and children; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows, attrs) {
  const head = h('tr', {}, headers.map((t) => h('th', { class: t.num ? 'num' : null }, t.label || t)));
  const body = document.createDocumentFragment();
  for (const r of rows) body.append(r);
  return h('table', attrs || {}, h('thead', {}, head), h('tbody', {}, body));
}

function td(value, cls) { return h('td', { class: cls || null }, value ?? ''); }
function num(value) { return h('td', { class: 'num' }, value ?? ''); }

function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function health(healthy, pending) {
  if (healthy === true) return ['healthy', 'healthy'];
  if (healthy === false) return pending ? ['pending', 'pending'] : ['unhealthy', 'unhealthy'];
  return ['—', 'muted'];
}

// ---- the API -----------------------------------------------------------------------------

async function api(path) {
  const headers = { Accept: 'application/json' };
  const auth = sessionStorage.getItem(AUTH_KEY);
  if (auth) headers.Authorization = auth;
  const response = await fetch(path, { headers, cache: 'no-store' });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  const message = (json && (json.message || json.error)) || text || response.statusText;
  if (response.status === 401) throw new AuthError(message);
  if (!response.ok) throw new ApiError(response.status, `${path}: ${response.status} ${message}`);
  return json;
}

// The answer of `path`, or the error it failed with (for parts a view can do without).
async function optional(path) {
  try { return { data: await api(path) }; } catch (e) {
    if (e instanceof AuthError) throw e;
    return { error: e };
  }
}

// ---- views -------------------------------------------------------------------------------

// Connection counters seen at the last poll, for rates: key -> [count, time].
const counters = new Map();
function rate(key, count, now) {
  const last = counters.get(key);
  counters.set(key, [count, now]);
  if (!last || now <= last[1] || count < last[0]) return null;
  return (count - last[0]) / ((now - last[1]) / 1000);
}
function fmtRate(r) { return r === null ? '…' : `${r.toFixed(r < 10 ? 1 : 0)}/s`; }

const views = {
  overview: {
    title: 'Cluster',
    poll: true,
    async load() {
      const [nodes, tasks, vips, apps] = await Promise.all([
        api('/v1/nodes'), api('/v1/tasks'), optional('/v1/vips'), optional('/v2/apps'),
      ]);
      return { nodes, tasks, vips, apps };
    },
    render({ nodes, tasks, vips, apps }) {
      const up = nodes.filter((n) => n.state === 'up').length;
      const cards = h('div', { class: 'cards' },
        h('div', { class: 'card', id: 'card-nodes' }, h('b', {}, `${up}/${nodes.length}`), 'nodes up'),
        h('div', { class: 'card', id: 'card-apps' }, h('b', {}, apps.data ? apps.data.apps.length : '—'), 'apps'),
        h('div', { class: 'card', id: 'card-tasks' }, h('b', {}, tasks.length), 'tasks (dcnet)'),
        h('div', { class: 'card', id: 'card-vips' }, h('b', {}, vips.data ? vips.data.length : '—'), 'VIPs'));
      const rows = nodes.map((n) => h('tr', { 'data-node': n.id },
        td(n.name || n.id), td(n.address), td(n.region), td(n.zone), td((n.roles || []).join(', ')),
        td(n.state, n.state), td(`${n.last_heard_secs_ago.toFixed(1)} s ago`),
        td(n.is_self ? 'this node' : '', 'muted')));
      return [cards, h('h2', {}, 'Nodes'),
        table(['name', 'address', 'region', 'zone', 'roles', 'state', 'last heard', ''], rows, { id: 'nodes' })];
    },
  },

  apps: {
    title: 'Apps and tasks',
    poll: true,
    async load() {
      const [apps, tasks, mesos] = await Promise.all([
        optional('/v2/apps'), api('/v1/tasks'), optional('/v1/mesos/tasks'),
      ]);
      return { apps, tasks, mesos };
    },
    render({ apps, tasks, mesos }) {
      const out = [h('h2', {}, 'Apps')];
      if (apps.error) {
        out.push(h('p', { class: 'muted' }, `No scheduler answers (${apps.error.message}); tasks below are what the agents report.`));
      } else {
        const rows = apps.data.apps.map((a) => h('tr', { 'data-app': a.id },
          td(h('a', { href: `#/dns?app=${encodeURIComponent(a.id)}`, title: 'DNS records' }, a.id)),
          num(a.instances), num(a.tasksRunning), num(a.tasksHealthy), num(a.tasksUnhealthy),
          num(a.tasksStaged), td(a.version)));
        out.push(table(['id', { label: 'instances', num: 1 }, { label: 'running', num: 1 },
          { label: 'healthy', num: 1 }, { label: 'unhealthy', num: 1 }, { label: 'staged', num: 1 }, 'version'],
        rows, { id: 'apps' }));
      }
      out.push(h('h2', {}, `Tasks (${tasks.length})`));
      const rows = tasks.map((t) => {
        const [hl, hc] = health(t.healthy, t.health_pending);
        const ips = [t.ip, t.ip6].filter(Boolean).join(' ');
        return h('tr', { 'data-task': t.task_id, 'data-app': t.app_id },
          td(t.app_id), td(t.task_id), td(t.state, t.state === 'TASK_RUNNING' ? 'running' : null),
          td(hl, hc), td(t.node), td(t.zone), td(ips));
      });
      out.push(table(['app', 'task', 'state', 'health', 'node', 'zone', 'addresses'], rows, { id: 'tasks' }));
      if (mesos.data && mesos.data.length) {
        out.push(h('h2', {}, `Mesos tasks (${mesos.data.length})`));
        const mrows = mesos.data.map((t) => {
          const [hl, hc] = health(t.healthy, false);
          return h('tr', { 'data-task': t.task_id },
            td(t.framework), td(t.name), td(t.task_id), td(hl, hc),
            td((t.agent_ips || []).join(' ') || t.agent_id), td((t.ips || []).join(' ')));
        });
        out.push(table(['framework', 'name', 'task', 'health', 'agent', 'addresses'], mrows, { id: 'mesos-tasks' }));
      }
      return out;
    },
  },

  vips: {
    title: 'VIPs on this node',
    poll: true,
    async load() { return api('/v1/vips'); },
    render(vips) {
      const now = Date.now();
      const rows = [];
      for (const v of vips) {
        const key = `${v.protocol}/${v.vip}`;
        rows.push(h('tr', { class: 'vip', 'data-vip': v.vip },
          td(v.vip), td(v.protocol), td(v.name), num(v.connections), num(fmtRate(rate(key, v.connections, now))),
          td(`${v.backends.length} backend${v.backends.length === 1 ? '' : 's'}`, 'muted')));
        for (const b of v.backends) {
          rows.push(h('tr', { class: 'backend', 'data-backend': b.addr },
            td(`  → ${b.addr}`, 'muted'), td(b.state, b.state), td([b.region, b.zone].filter(Boolean).join(' / ')),
            num(b.connections), num(fmtRate(rate(`${key}>${b.addr}`, b.connections, now))),
            td(`weight ${b.weight}`)));
        }
      }
      return [h('p', { class: 'muted' }, 'What this node\'s load balancer has programmed. Connections are new connections made from this node since the VIP was programmed here.'),
        table(['VIP / backend', 'protocol / state', 'name / zone', { label: 'connections', num: 1 },
          { label: 'rate', num: 1 }, ''], rows, { id: 'vips' })];
    },
  },

  overlay: {
    title: 'Overlay',
    poll: true,
    async load() {
      const [overlay, nodes] = await Promise.all([optional('/v1/overlay'), api('/v1/nodes')]);
      return { overlay, nodes };
    },
    render({ overlay, nodes }) {
      if (overlay.error) return h('p', { class: 'muted' }, `The overlay is off on this node (${overlay.error.message}).`);
      const o = overlay.data;
      const names = new Map(nodes.map((n) => [n.id, n.name || n.id]));
      const out = [];
      const vtep = o.vtep || {};
      const r = o.last_reconcile;
      out.push(h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('b', {}, vtep.address || '—'), `VTEP ${vtep.name || ''}`),
        h('div', { class: 'card' }, h('b', {}, o.peers.length), 'peers'),
        h('div', { class: 'card' }, h('b', {}, o.kernel_objects), 'kernel objects'),
        h('div', { class: 'card', id: 'last-reconcile' }, h('b', {}, r ? `${r.changes} changed` : '—'),
          r ? `${r.kind} reconcile ${ago(r.at_ms)}, ${r.failed} failed, ${(r.micros / 1000).toFixed(1)} ms` : 'no reconcile yet'),
        h('div', { class: 'card', id: 'drift-repairs' }, h('b', {}, o.drift_repairs), 'drift repairs (objects put back)'),
        o.vxlan_filter ? h('div', { class: 'card' }, h('b', {}, o.vxlan_filter.dropped), `forged VXLAN dropped (${o.vxlan_filter.passed} passed)`) : null));
      out.push(h('h2', {}, 'Subnets of this node'));
      out.push(table(['network', 'subnet', 'IPv6 subnet', 'bridge', { label: 'containers', num: 1 }, { label: 'MTU', num: 1 }],
        o.networks.map((n) => h('tr', { 'data-network': n.name }, td(n.name), td(n.subnet), td(n.subnet6), td(n.bridge),
          num(n.containers), num(n.mtu))), { id: 'networks' }));
      out.push(h('h2', {}, 'Peers'));
      out.push(table(['node', 'underlay', 'VTEP', 'subnets'],
        o.peers.map((p) => h('tr', { 'data-peer': p.node }, td(names.get(p.node) || p.node), td(p.underlay),
          td([p.vtep, p.vtep6].filter(Boolean).join(' ')), td(p.subnets.join(' ')))), { id: 'peers' }));
      return out;
    },
  },

  clusters: {
    title: 'Clusters',
    poll: true,
    async load() {
      const [me, links] = await Promise.all([api('/v1/cluster'), optional('/cluster/v1/links')]);
      return { me, links };
    },
    render({ me, links }) {
      const out = [h('p', {}, `This is ${me.name} (id ${me.id}), its tasks named under ${me.domain}.`)];
      if (links.error) {
        out.push(h('p', { class: 'muted' }, `No scheduler answers, so the links are unknown (${links.error.message}).`));
        return out;
      }
      const rows = links.data.links.map((l) => h('tr', { 'data-link': l.name },
        td(l.name), td(l.cluster), td(l.id), td(`*.${l.name}.${me.domain}`), td((l.dns || []).join(' ')),
        td(h('a', { href: `${l.url}/dashboard/`, rel: 'noopener' }, `switch to ${l.name}`))));
      out.push(h('h2', {}, `Linked clusters (${rows.length})`));
      out.push(table(['link', 'cluster', 'id', 'its names here', 'its DNS', ''], rows, { id: 'links' }));
      out.push(h('p', { class: 'muted' }, 'Switching opens the linked cluster\'s own dashboard, where you log in with a credential of that cluster. `dcnet cluster link URL --name NAME` adds a link.'));
      return out;
    },
  },

  dns: {
    title: 'DNS',
    poll: false,
    async load(params) {
      const name = params.get('name');
      const app = params.get('app');
      return {
        name, app,
        lookup: name ? await optional(`/v1/dns/lookup?name=${encodeURIComponent(name)}`) : null,
        records: app ? await optional(`/v1/dns/records?app=${encodeURIComponent(app)}`) : null,
      };
    },
    render({ name, app, lookup, records }) {
      const go = (key) => (ev) => {
        ev.preventDefault();
        const value = new FormData(ev.target).get(key).trim();
        location.hash = `#/dns?${key}=${encodeURIComponent(value)}`;
      };
      const out = [
        h('form', { id: 'dns-lookup', onsubmit: go('name') },
          h('label', {}, 'Look up a name ', h('input', { name: 'name', value: name || '', placeholder: 'web.marathon.mesos' })),
          h('button', { type: 'submit' }, 'Look up')),
        h('form', { id: 'dns-app', onsubmit: go('app') },
          h('label', {}, 'Records of an app ', h('input', { name: 'app', value: app || '', placeholder: '/web' })),
          h('button', { type: 'submit' }, 'Show')),
      ];
      if (lookup) {
        if (lookup.error) out.push(h('p', { class: 'error' }, lookup.error.message));
        else {
          const a = lookup.data;
          const said = {
            records: `in ${a.zone}`, no_records: `exists in ${a.zone}, with no records of its own`,
            nxdomain: `does not exist in ${a.zone} (NXDOMAIN)`, forwarded: 'is in no zone dcnet serves: forwarded to the upstream servers',
          }[a.answer];
          out.push(h('h2', {}, `${a.name} ${said}`));
          const rows = [...a.a.map((ip) => ['A', ip]), ...a.aaaa.map((ip) => ['AAAA', ip]),
            ...a.srv.map((s) => ['SRV', `${s.target}:${s.port}`])];
          if (rows.length) out.push(table(['type', 'value'], rows.map(([t, v]) => h('tr', {}, td(t), td(v))), { id: 'dns-answer' }));
        }
      }
      if (records) {
        if (records.error) out.push(h('p', { class: 'error' }, records.error.message));
        else {
          const rs = records.data.records;
          out.push(h('h2', {}, `Records of ${records.data.app} (${rs.length})`));
          out.push(table(['name', 'type', 'value'], rs.map((r) => h('tr', {}, td(r.name), td(r.rtype), td(r.value))), { id: 'dns-records' }));
        }
      }
      return out;
    },
  },
};

// ---- the page ------------------------------------------------------------------------------

let timer = null;
let generation = 0;
let firstData = false;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [name, query] = hash.split('?');
  return { name: views[name] ? name : 'overview', params: new URLSearchParams(query || '') };
}

function showError(message) { document.getElementById('error').textContent = message || ''; }

async function draw() {
  const { name, params } = route();
  const view = views[name];
  const mine = ++generation;
  clearTimeout(timer);
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
  try {
    const data = await view.load(params);
    if (mine !== generation) return;
    const el = document.getElementById('view');
    el.replaceChildren(h('h1', {}, view.title), ...[view.render(data)].flat());
    el.dataset.view = name;
    document.getElementById('login').hidden = true;
    el.dataset.renders = String(Number(el.dataset.renders || 0) + 1);
    document.getElementById('live').classList.remove('stale');
    showError('');
    if (!firstData) {
      firstData = true;
      performance.mark('dcnet-first-data');
    }
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof AuthError) { showLogin(e.message); return; }
    document.getElementById('live').classList.add('stale');
    showError(e.message);
  }
  if (view.poll && mine === generation) timer = setTimeout(draw, POLL_MS);
}

function showLogin(message) {
  clearTimeout(timer);
  document.getElementById('login').hidden = false;
  document.getElementById('view').replaceChildren();
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  document.getElementById('login-error').textContent = sessionStorage.getItem(AUTH_KEY) ? message : '';
}

async function start() {
  // The view's data is asked for at once, beside who the viewer is: a first paint waits for
  // one round trip, not two.
  const asked = api('/v1/auth/whoami');
  draw();
  try {
    const who = await asked;
    document.getElementById('login').hidden = true;
    document.getElementById('who').textContent = who.insecure
      ? 'no credentials needed (insecure mode)'
      : `${who.subject} (${who.role})`;
    optional('/v1/cluster').then(({ data }) => {
      if (data) document.getElementById('cluster-name').textContent = data.name;
    });
    document.getElementById('logout').hidden = !!who.insecure;
  } catch (e) {
    if (e instanceof AuthError) showLogin(e.message);
    else showError(e.message);
  }
}

document.getElementById('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = document.getElementById('login-token').value.trim();
  const user = document.getElementById('login-user').value.trim();
  const password = document.getElementById('login-password').value;
  let header = null;
  if (token) header = `token=${token}`;
  else if (user) {
    // btoa takes bytes as a binary string: encode UTF-8 first (RFC 7617's charset).
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    header = `Basic ${btoa(String.fromCharCode(...bytes))}`;
  }
  if (!header) {
    document.getElementById('login-error').textContent = 'Give a token, or a user and password.';
    return;
  }
  sessionStorage.setItem(AUTH_KEY, header);
  document.getElementById('login-form').reset();
  start();
});

document.getElementById('logout').addEventListener('click', () => {
  sessionStorage.removeItem(AUTH_KEY);
  showLogin('');
});

window.addEventListener('hashchange', draw);
start();
