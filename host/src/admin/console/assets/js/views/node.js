// The node at a glance: what it serves and the counters that matter
// (requests, denials, traps, the audit trail's backlog and losses), read
// from its own Prometheus metrics every few seconds while this view is open.

import { badge, h, replace, table } from '../dom.js';
import { clock, counted } from '../format.js';

const REFRESH_MS = 5000;

/** Prometheus text as `[name, labels, value]` samples. */
function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push([match[1], labels, Number(match[4])]);
  }
  return samples;
}

function sum(samples, name, filter = () => true) {
  return samples.filter(([n, labels]) => n === name && filter(labels)).reduce((total, [, , v]) => total + v, 0);
}

function tile(label, value, tone, id) {
  return h('div', { class: ['tile', tone], 'data-metric': id }, h('div', { class: 'value' }, String(value)), h('div', { class: 'label' }, label));
}

function render(samples) {
  const requests = sum(samples, 'keyhole_requests_total');
  const errors = sum(samples, 'keyhole_requests_total', (l) => /^5/.test(l.status));
  const denials = sum(samples, 'keyhole_secret_denials_total');
  const traps = sum(samples, 'keyhole_instance_traps_total');
  const timeouts = sum(samples, 'keyhole_instance_timeouts_total');
  const refused = sum(samples, 'keyhole_requests_refused_total');
  const backlog = sum(samples, 'keyhole_audit_backlog');
  const lost = sum(samples, 'keyhole_audit_lost_records_total');
  const logLost = sum(samples, 'keyhole_log_lost_lines_total');
  const functions = [...new Set(samples.filter(([n, l]) => n === 'keyhole_requests_total' && l.function).map(([, l]) => l.function))].sort();
  const rows = functions.map((fn) => h('tr', { 'data-function': fn },
    h('td', {}, fn),
    h('td', { class: 'number' }, sum(samples, 'keyhole_requests_total', (l) => l.function === fn)),
    h('td', { class: 'number' }, sum(samples, 'keyhole_secret_denials_total', (l) => l.function === fn)),
    h('td', { class: 'number' }, sum(samples, 'keyhole_instance_traps_total', (l) => l.function === fn)),
    h('td', { class: 'number' }, sum(samples, 'keyhole_instance_timeouts_total', (l) => l.function === fn))));
  return [
    h('div', { class: 'tiles' },
      tile('requests', requests, 'neutral', 'requests'),
      tile('5xx answers', errors, errors ? 'warn' : 'good', 'errors'),
      tile('secret calls denied', denials, denials ? 'warn' : 'good', 'denials'),
      tile('traps', traps, traps ? 'bad' : 'good', 'traps'),
      tile('timeouts', timeouts, timeouts ? 'warn' : 'good', 'timeouts'),
      tile('refused by limits', refused, refused ? 'warn' : 'good', 'refused'),
      tile('audit backlog', backlog, backlog > 1000 ? 'warn' : 'good', 'audit-backlog'),
      tile('audit records lost', lost, lost ? 'bad' : 'good', 'audit-lost'),
      tile('log lines lost', logLost, logLost ? 'warn' : 'good', 'log-lost')),
    functions.length ? table(['Function', 'Requests', 'Denials', 'Traps', 'Timeouts'], rows, { class: 'grid', id: 'per-function' }) : null,
  ];
}

/** The node view. */
export async function nodeView(context) {
  const [status, metrics] = await Promise.all([context.call('GET', '/v1/status'), context.call('GET', '/metrics')]);
  const live = h('div', { id: 'metrics' }, render(parse(metrics)));
  const updated = h('span', { class: 'muted' }, `updated ${clock()}`);
  const timer = setInterval(async () => {
    if (!context.isCurrent()) {
      clearInterval(timer);
      return;
    }
    try {
      replace(live, render(parse(await context.call('GET', '/metrics'))));
      updated.textContent = `updated ${clock()}`;
    } catch (e) {
      clearInterval(timer);
      if (context.isCurrent()) context.failed(e);
    }
  }, REFRESH_MS);
  context.onLeave(() => clearInterval(timer));
  const fleet = status.fleet;
  return h('section', { id: 'node-view' },
    h('h1', {}, 'Node'),
    h('p', {},
      `Keyhole ${status.version} · `, status.running ? badge('serving', 'good') : badge('not running', 'bad'),
      ` · ${counted(status.functions, 'function')}`,
      status.revision !== null && status.revision !== undefined ? ` · store revision ${status.revision}` : '',
      fleet ? [' · fleet ', fleet.connected ? badge('connected', 'good') : badge('cut off', 'bad')] : ' · single node',
      ' · ', updated),
    status.load_error ? h('p', { class: 'flash bad' }, `Last load failed: ${status.load_error}`) : null,
    live);
}
