// Deployed functions: what each serves, its limits and code, and each
// binding it asks for against what an operator granted. Operators grant
// and revoke here; a scoped deployer's list holds only its own functions
// (the node filters it, not this page).

import { path } from '../api.js';
import { badge, confirmButton, h, table } from '../dom.js';
import { commaList, operations, shortDigest, time } from '../format.js';

const OPERATIONS = ['hmac', 'sign', 'seal', 'inject', 'reveal'];

function stateBadge(state) {
  switch (state.state) {
    case 'granted':
      return badge('granted', 'good');
    case 'partial':
      return badge(`partial: missing ${operations(state.missing)}`, 'warn');
    case 'awaiting-approval':
      return badge(`awaiting approval: ${operations(state.held)} held`, 'warn');
    default:
      return badge('not granted', 'bad');
  }
}

function grantForm(context, fn, binding, secrets) {
  const secret = h('select', { 'aria-label': 'Secret', required: true },
    h('option', { value: '' }, 'choose a secret…'),
    secrets.map((s) => h('option', { value: s.name }, s.name)));
  // What the manifest asks for is pre-checked, except reveal: disclosing
  // the value to the guest is always the operator's explicit choice.
  const boxes = OPERATIONS.map((op) => h('input', {
    type: 'checkbox',
    value: op,
    checked: op !== 'reveal' && binding.operations.includes(op),
  }));
  const egress = h('input', { placeholder: 'hosts for inject, e.g. api.example.com', 'aria-label': 'Egress hosts' });
  // Shown while inject is ticked: an injected token needs the hosts it may go to.
  const inject = boxes.find((box) => box.value === 'inject');
  const showEgress = () => { egress.hidden = !inject.checked; };
  inject.addEventListener('change', showEgress);
  showEgress();
  const grant = async () => {
    const allow = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!secret.value) {
      context.notify(`Choose the secret ${binding.binding} should resolve to.`, 'bad');
      return;
    }
    const body = { secret: secret.value, allow, digest: fn.component_sha256 };
    if (allow.includes('inject')) body.egress = commaList(egress.value);
    try {
      await context.call('PUT', path('grants', fn.name, binding.binding), body);
      context.notify(`Granted ${fn.name} · ${binding.binding} → ${secret.value} (${operations(allow)}) to the code at ${shortDigest(fn.component_sha256)}.`);
      context.rerender();
    } catch (e) {
      context.failed(e);
    }
  };
  return h('div', { class: 'grant-form' },
    secrets.length ? secret : h('span', { class: 'muted' }, 'no secrets to grant'),
    boxes.map((box) => h('label', { class: 'inline' }, box, ' ', box.value)),
    egress,
    secrets.length ? confirmButton('Grant', 'Yes, grant', grant, { class: 'grant' }) : null);
}

function bindingRow(context, fn, binding, grant, secrets) {
  const actions = [];
  if (context.can('grants:write')) {
    if (grant) {
      actions.push(confirmButton('Revoke', 'Yes, revoke', async () => {
        try {
          await context.call('DELETE', path('grants', fn.name, binding.binding));
          context.notify(`Revoked ${fn.name} · ${binding.binding}: its calls get not-granted from now on.`);
          context.rerender();
        } catch (e) {
          context.failed(e);
        }
      }, { class: 'danger revoke' }));
    } else {
      actions.push(grantForm(context, fn, binding, secrets));
    }
  }
  return h('tr', { 'data-binding': binding.binding, 'data-state': binding.state.state },
    h('td', {}, binding.binding),
    h('td', {}, operations(binding.operations)),
    h('td', { class: 'state' }, stateBadge(binding.state)),
    h('td', {}, binding.state.secret
      ? (context.can('secrets:read') ? h('a', { href: `#/secrets/${encodeURIComponent(binding.state.secret)}` }, binding.state.secret) : binding.state.secret)
      : '—'),
    h('td', {}, grant ? operations(grant.allow) : '—'),
    h('td', { class: 'actions' }, actions));
}

function card(context, fn, grants, secrets) {
  const mine = grants.filter((g) => g.function === fn.name);
  const waiting = fn.binding_states.some((b) => b.state.state === 'awaiting-approval')
    || fn.outbound.some((host) => !fn.approved_outbound.includes(host));
  const approve = context.can('grants:write') && waiting
    ? confirmButton('Approve this code', 'Yes, approve it', async () => {
      try {
        await context.call('POST', path('functions', fn.name, 'approve'), { digest: fn.component_sha256 });
        context.notify(`Approved ${fn.name} at ${shortDigest(fn.component_sha256)}.`);
        context.rerender();
      } catch (e) {
        context.failed(e);
      }
    })
    : null;
  return h('article', { class: 'panel function', 'data-function': fn.name },
    h('h2', {}, fn.name),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Routes'), h('dd', {}, fn.routes.join(', ')),
      h('dt', {}, 'Limits'), h('dd', {}, `${fn.memory_mib} MiB · ${fn.timeout_ms} ms`,
        fn.max_concurrency ? ` · ${fn.max_concurrency} at once` : ''),
      h('dt', {}, 'Component'), h('dd', {}, h('code', { title: fn.component_sha256 }, `sha256:${shortDigest(fn.component_sha256)}`),
        ` · ${(fn.component_size / 1024).toFixed(0)} KiB`),
      h('dt', {}, 'Deployed'), h('dd', {}, time(fn.deployed_at)),
      fn.outbound.length ? [h('dt', {}, 'Outbound'), h('dd', {}, fn.outbound.map((host, i) => [
        i ? ', ' : '', host, ' ',
        fn.approved_outbound.includes(host) ? badge('approved', 'good') : badge('awaiting approval', 'warn'),
      ]))] : null),
    fn.bindings.length
      ? table(['Binding', 'Requested', 'State', 'Secret', 'Granted', ''],
        fn.binding_states.map((b) => bindingRow(context, fn, b, mine.find((g) => g.binding === b.binding), secrets)),
        { class: 'grid bindings' })
      : h('p', { class: 'muted' }, 'It asks for no secrets.'),
    approve);
}

/** The functions view. */
export async function functionsView(context) {
  const [functions, grants, secrets] = await Promise.all([
    context.call('GET', '/v1/functions'),
    context.can('grants:read') ? context.call('GET', '/v1/grants') : [],
    context.can('grants:write') && context.can('secrets:read') ? context.call('GET', '/v1/secrets') : [],
  ]);
  const scope = context.session.functions.length ? ` (this token: ${context.session.functions.join(', ')})` : '';
  return h('section', { id: 'functions-view' },
    h('h1', {}, 'Functions'),
    h('p', { class: 'muted' }, `${functions.length} deployed${scope}.`),
    functions.length ? functions.map((fn) => card(context, fn, grants, secrets)) : h('p', {}, 'No functions deployed.'));
}
