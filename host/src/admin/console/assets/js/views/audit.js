// The audit trail: every admin action and every secret operation, newest
// first, with the chain's verification and its head. Filters travel in the
// URL's fragment (`#/audit?secret=x`), so a view can be linked to.

import { badge, h, table } from '../dom.js';
import { counted, timeMs } from '../format.js';

const SINCE = [['', 'all time'], ['900', 'last 15 minutes'], ['3600', 'last hour'], ['86400', 'last 24 hours'], ['604800', 'last 7 days']];

function tone(outcome) {
  if (outcome === 'ok' || outcome === 'allowed') return 'good';
  if (['denied', 'not-granted', 'forbidden', 'lost', 'cut'].includes(outcome)) return 'bad';
  return 'warn';
}

/** Who, what, on what, and why, for each kind of record. */
function describe(record) {
  switch (record.kind) {
    case 'admin':
      return { who: `${record.token} (${record.role})`, action: record.action, target: record.target, detail: record.detail };
    case 'function':
      return {
        who: `${record.function} · ${record.binding}`,
        action: record.operation,
        target: [record.secret || '', record.version ? ` v${record.version}` : '', record.destination ? ` → ${record.destination}` : ''].join(''),
        detail: record.reason,
      };
    case 'lost':
      return { who: 'node', action: 'records lost', target: '', detail: `${record.records} function records could not be written (the trail fell behind)`, outcome: 'lost' };
    case 'cut':
      return { who: 'node', action: 'trail cut', target: '', detail: `records after #${record.after_seq} were cut off the trail`, outcome: 'cut' };
    default:
      return { who: '', action: record.kind, target: '', detail: '', outcome: record.outcome || record.kind };
  }
}

function row(record) {
  const { who, action, target, detail, outcome = record.outcome } = describe(record);
  return h('tr', { 'data-seq': record.seq, 'data-kind': record.kind, 'data-outcome': outcome },
    h('td', { class: 'number nowrap' }, record.seq ?? ''),
    h('td', { class: 'nowrap' }, timeMs(record.at_ms)),
    h('td', {}, record.node ? `${record.node}: ` : '', who),
    h('td', { class: 'nowrap' }, action),
    h('td', { class: 'target' }, target),
    h('td', {}, badge(outcome, tone(outcome))),
    h('td', { class: 'detail' }, detail || ''));
}

function broken(where, bad) {
  return ` · ${where}: record #${bad.seq} fails (${bad.problem})`;
}

function chainStatus(verification) {
  const [headSeq, headHash] = verification.head || [null, null];
  const nodes = (verification.nodes || []).filter((n) => n.verification && n.verification.first_bad);
  const ok = !verification.first_bad && nodes.length === 0;
  return h('div', { class: ['chain', ok ? 'good' : 'bad'], id: 'chain-status' },
    ok ? badge('chain verified', 'good') : badge('chain broken', 'bad'),
    ` ${counted(verification.records, 'record')}`,
    ok ? '' : ' verified before the break',
    headSeq !== null ? [' · head #', String(headSeq), ' ', h('code', { title: headHash }, headHash.slice(0, 16))] : '',
    verification.pruned ? ` · records through #${verification.pruned.through_seq} pruned under a signed checkpoint` : '',
    verification.first_bad ? broken('this node', verification.first_bad) : '',
    nodes.map((n) => broken(`node ${n.node}`, n.verification.first_bad)),
    (verification.nodes || []).length ? ` · ${verification.nodes.length} fleet node chain(s) checked` : '');
}

/** The audit view. */
export async function auditView(context) {
  const q = context.query;
  const params = new URLSearchParams();
  for (const name of ['function', 'secret']) {
    if (q.get(name)) params.set(name, q.get(name));
  }
  const sinceSecs = Number(q.get('since'));
  if (Number.isFinite(sinceSecs) && sinceSecs > 0) params.set('since_ms', String(Math.round(Date.now() - sinceSecs * 1000)));
  params.set('limit', q.get('limit') || '200');
  const [records, verification] = await Promise.all([
    context.call('GET', `/v1/audit?${params}`),
    context.call('GET', '/v1/audit/verify'),
  ]);
  const fn = h('input', { name: 'function', value: q.get('function') || '', placeholder: 'any function', 'aria-label': 'Function' });
  const secret = h('input', { name: 'secret', value: q.get('secret') || '', placeholder: 'any secret', 'aria-label': 'Secret' });
  const since = h('select', { name: 'since', 'aria-label': 'Since' },
    SINCE.map(([value, label]) => h('option', { value, selected: (q.get('since') || '') === value }, label)));
  const filters = h('form', {
    class: 'filters',
    id: 'audit-filters',
    on: {
      submit: (event) => {
        event.preventDefault();
        const next = new URLSearchParams();
        for (const [name, input] of [['function', fn], ['secret', secret], ['since', since]]) {
          if (input.value.trim()) next.set(name, input.value.trim());
        }
        location.hash = `#/audit?${next}`;
      },
    },
  }, fn, secret, since, h('button', { type: 'submit' }, 'Filter'));
  return h('section', { id: 'audit-view', 'data-query': q.toString() },
    h('h1', {}, 'Audit'),
    chainStatus(verification),
    filters,
    h('p', { class: 'muted' }, `${counted(records.length, 'record')} (the newest ${params.get('limit')} at most), newest first.`),
    table(['#', 'Time', 'Who', 'Action', 'Target', 'Outcome', 'Detail'], records.slice().reverse().map(row), { class: 'grid', id: 'audit' }));
}
