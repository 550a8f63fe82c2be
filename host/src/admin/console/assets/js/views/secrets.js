// Secrets at a glance: which are overdue for rotation, and when each last
// changed. Metadata only: no reply of the API carries a value.

import { badge, h, table } from '../dom.js';
import { counted, duration, relative, time } from '../format.js';

function status(secret) {
  if (secret.overdue) return badge('OVERDUE', 'bad');
  if (secret.max_age === null) return badge('no max age', 'muted');
  const due = secret.value_created_at + secret.max_age;
  if (due <= Date.now() / 1000) return badge('due now', 'warn');
  return badge(`due ${relative(due)}`, 'good');
}

/** The secrets view. */
export async function secretsView(context) {
  const secrets = await context.call('GET', '/v1/secrets');
  const overdue = secrets.filter((s) => s.overdue).length;
  const rows = secrets.map((secret) => h('tr', { 'data-secret': secret.name, class: secret.overdue ? 'overdue' : null },
    h('td', {}, h('a', { href: `#/secrets/${encodeURIComponent(secret.name)}` }, secret.name)),
    h('td', {}, secret.kind),
    h('td', { class: 'number' }, `v${secret.current_version}`),
    h('td', { class: 'number' }, secret.versions),
    h('td', {}, secret.max_age === null ? '—' : duration(secret.max_age)),
    h('td', {}, time(secret.value_created_at), h('span', { class: 'muted' }, ` (${relative(secret.value_created_at)})`)),
    h('td', {}, status(secret))));
  return h('section', { id: 'secrets-view' },
    h('h1', {}, 'Secrets'),
    h('p', { class: 'muted' },
      counted(secrets.length, 'secret'),
      overdue ? [', ', h('strong', { class: 'bad-text' }, `${overdue} overdue for rotation`)] : ', none overdue',
      '. Values never leave the node; open a secret to see who depends on it and to rotate it.'),
    secrets.length
      ? table(['Name', 'Kind', 'Current', 'Versions', 'Max age', 'Last rotation', 'Status'], rows, { class: 'grid' })
      : h('p', {}, 'No secrets yet: `keyhole secret put NAME` stores one.'));
}
