// Admin API tokens: who holds what role. A new token is shown once, here,
// and never again (the node keeps only its hash).

import { path } from '../api.js';
import { badge, confirmButton, h, table } from '../dom.js';
import { commaList, time } from '../format.js';

const LIFETIMES = [['', 'never expires'], ['3600', '1 hour'], ['86400', '24 hours'], ['2592000', '30 days'], ['7776000', '90 days']];

function list(patterns) {
  return patterns.length ? patterns.join(', ') : '*';
}

function createForm(context, shown) {
  const role = h('select', { name: 'role', 'aria-label': 'Role' }, ['auditor', 'deployer', 'admin'].map((r) => h('option', { value: r }, r)));
  const name = h('input', { name: 'name', placeholder: 'name (optional)', 'aria-label': 'Name' });
  const functions = h('input', { name: 'functions', placeholder: 'functions, e.g. checkout-*', 'aria-label': 'Functions' });
  const routes = h('input', { name: 'routes', placeholder: 'routes, e.g. /checkout/*', 'aria-label': 'Routes' });
  const expires = h('select', { name: 'expires', 'aria-label': 'Expires' }, LIFETIMES.map(([v, label]) => h('option', { value: v }, label)));
  return h('form', {
    class: 'panel create-token',
    on: {
      submit: async (event) => {
        event.preventDefault();
        const body = { role: role.value, functions: commaList(functions.value), routes: commaList(routes.value) };
        if (name.value.trim()) body.name = name.value.trim();
        if (expires.value) body.expires_secs = Number(expires.value);
        try {
          const created = await context.call('POST', '/v1/tokens', body);
          const value = h('input', { id: 'new-token', readonly: true, value: created.token, spellcheck: false, 'aria-label': 'The new token' });
          created.token = '';
          shown.replaceChildren(h('div', { class: 'panel once' },
            h('p', {}, h('strong', {}, `Token ${created.info.name} (${created.info.role})`),
              ': copy it now. It is shown this once; the node keeps only its hash.'),
            value,
            h('button', { type: 'button', on: { click: () => { value.value = ''; shown.replaceChildren(); context.rerender(); } } }, 'Done')));
          value.select();
        } catch (e) {
          context.failed(e);
        }
      },
    },
  },
  h('h2', {}, 'Create a token'),
  role, name, functions, routes, expires,
  h('button', { type: 'submit' }, 'Create'));
}

function state(t) {
  if (t.revoked_at) return badge(`revoked ${time(t.revoked_at)}`, 'muted');
  if (t.expires_at && t.expires_at <= Date.now() / 1000) return badge('expired', 'muted');
  return badge('active', 'good');
}

/** The tokens view. */
export async function tokensView(context) {
  const tokens = await context.call('GET', '/v1/tokens');
  const writable = context.can('tokens:write');
  const shown = h('div', { id: 'token-shown' });
  const rows = tokens.map((t) => h('tr', { 'data-token': t.name },
    h('td', {}, t.name),
    h('td', {}, t.role),
    h('td', {}, t.role === 'deployer' ? `functions ${list(t.functions)} · routes ${list(t.routes)}` : '—'),
    h('td', {}, t.created_by),
    h('td', {}, time(t.created_at)),
    h('td', {}, t.expires_at ? time(t.expires_at) : 'never'),
    h('td', {}, state(t)),
    h('td', { class: 'actions' }, writable && !t.revoked_at
      ? confirmButton('Revoke', 'Yes, revoke', async () => {
        try {
          await context.call('DELETE', path('tokens', t.name));
          context.notify(`Revoked token ${t.name}.`);
          context.rerender();
        } catch (e) {
          context.failed(e);
        }
      }, { class: 'danger' })
      : null)));
  return h('section', { id: 'tokens-view' },
    h('h1', {}, 'Tokens'),
    shown,
    table(['Name', 'Role', 'Scope', 'Created by', 'Created', 'Expires', 'State', ''], rows, { class: 'grid', id: 'tokens' }),
    writable ? createForm(context, shown) : null);
}
