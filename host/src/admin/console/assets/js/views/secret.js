// One secret: its versions and grace windows, who depends on it (drawn as
// a graph), and a rotation that shows what it will touch before it is made.
//
// The new value is generated in the browser (32 random bytes, for keys only
// Keyhole uses), typed or pasted, or read from a file (a PEM); it goes to the
// node once, in the rotate request, and the page drops it at once. The
// preview is read fresh from the node when asked for, so it is what the
// rotation will reach at that moment.

import { base64, path } from '../api.js';
import { badge, confirmButton, h, svg, table } from '../dom.js';
import { counted, duration, operations, relative, time } from '../format.js';

const GRACE_CHOICES = [
  ['0', 'none: the old version stops working at once'],
  ['900', '15 minutes'],
  ['3600', '1 hour'],
  ['86400', '24 hours'],
  ['604800', '7 days'],
];

function versionState(version) {
  switch (version.state) {
    case 'current':
      return badge('current', 'good');
    case 'grace':
      return badge(`grace until ${time(version.until)} (${relative(version.until)})`, 'warn');
    default:
      return badge(version.state, 'muted');
  }
}

function lastUse(use) {
  if (!use) return h('span', { class: 'muted' }, 'never');
  return h('span', {}, `v${use.version} at ${time(use.at)}`, h('span', { class: 'muted' }, ` (${relative(use.at)})`));
}

/** Where a dependent stands: on the current version, an older one, or never used. */
function usage(dependent, current) {
  if (!dependent.last_use) return 'unused';
  return dependent.last_use.version === current ? 'on-current' : 'on-older';
}

/** The dependents as a graph: the secret on the left, each function's binding on the right. */
function graph(name, current, dependents) {
  const rowHeight = 56;
  const height = Math.max(1, dependents.length) * rowHeight + 24;
  const width = 720;
  const secretY = height / 2;
  const nodes = dependents.map((dependent, index) => {
    const y = 12 + index * rowHeight + rowHeight / 2;
    const tone = usage(dependent, current);
    return svg('g', { class: ['dependent', tone], 'data-function': dependent.function, 'data-binding': dependent.binding },
      svg('path', { class: 'edge', d: `M 190 ${secretY} C 300 ${secretY}, 330 ${y}, 440 ${y}` }),
      svg('text', { class: 'edge-label', x: 315, y: (secretY + y) / 2 - 6, 'text-anchor': 'middle' }, operations(dependent.allow)),
      svg('rect', { x: 440, y: y - 22, width: 270, height: 44, rx: 8 }),
      svg('text', { x: 452, y: y - 4 }, dependent.function),
      svg('text', { class: 'sub', x: 452, y: y + 13 },
        `${dependent.binding} · ${dependent.last_use ? `last used v${dependent.last_use.version}` : 'never used'}`));
  });
  return svg('svg', {
    class: 'graph',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': `${name} and the functions that depend on it`,
  },
  svg('g', { class: 'secret-node' },
    svg('rect', { x: 10, y: secretY - 26, width: 180, height: 52, rx: 8 }),
    svg('text', { x: 22, y: secretY - 5 }, name),
    svg('text', { class: 'sub', x: 22, y: secretY + 13 }, `current v${current}`)),
  nodes,
  dependents.length ? null : svg('text', { class: 'sub', x: 220, y: secretY + 4 }, 'no function depends on it'));
}

/** The number the store gives the next version: one past the highest (a rollback keeps newer ones). */
function nextVersion(versions) {
  return Math.max(0, ...versions.map((v) => v.version)) + 1;
}

function preview(secret, versions, dependents, graceSecs) {
  const next = nextVersion(versions);
  const graceUntil = Date.now() / 1000 + graceSecs;
  const lines = [
    h('li', {}, `Version ${next} becomes current: new MACs, signatures, sealed data, injected tokens and reveals use it as soon as the node acknowledges.`),
    graceSecs > 0
      ? h('li', {}, `Version ${secret.current_version} still verifies MACs and opens sealed data for ${duration(graceSecs)}, until about ${time(graceUntil)}; then it is retired. Grace never covers injected tokens or reveals: they change at once.`)
      : h('li', { class: 'bad-text' }, `Version ${secret.current_version} is retired at once: MACs and sealed data made with it stop verifying and opening.`),
  ];
  const affected = dependents.map((d) => {
    const stale = d.last_use && d.last_use.version !== secret.current_version;
    return h('li', { 'data-function': d.function },
      h('strong', {}, d.function), ' · ', d.binding, ` (${operations(d.allow)}): last used `, lastUse(d.last_use),
      stale ? h('span', { class: 'warn-text' }, ' — still on an older version') : null,
      d.last_grace_use ? [', last grace-only use ', lastUse(d.last_grace_use)] : null);
  });
  return h('div', { class: 'preview', id: 'rotation-preview' },
    h('h3', {}, `Rotating ${secret.name} will:`),
    h('ul', {}, lines),
    h('p', {}, dependents.length
      ? `It reaches ${counted(dependents.length, 'grant')}:`
      : 'No function depends on it.'),
    dependents.length ? h('ul', { class: 'affected' }, affected) : null);
}

/** Kinds whose new value the browser can make: a random 32-byte key. */
const GENERATED_KINDS = ['aes-256', 'opaque'];

/** The new value's sources for a secret of `kind`, and the first one offered. */
function valueSources(kind) {
  const generated = GENERATED_KINDS.includes(kind);
  return { generated, initial: kind === 'aes-256' ? 'generate' : 'typed' };
}

async function readValue(source, typed, file) {
  if (source === 'generate') return crypto.getRandomValues(new Uint8Array(32));
  if (source === 'file') {
    if (!file.files.length) throw new Error('Choose the file that holds the new value.');
    return new Uint8Array(await file.files[0].arrayBuffer());
  }
  const bytes = new TextEncoder().encode(typed.value);
  if (bytes.length === 0) throw new Error('Type or paste the new value.');
  return bytes;
}

function rotateForm(context, secret) {
  const { generated, initial } = valueSources(secret.kind);
  const radio = (value, label, extra) => {
    const input = h('input', { type: 'radio', name: 'source', value, id: `source-${value}`, checked: value === initial });
    return h('label', { class: 'inline' }, input, ` ${label}`, extra || null);
  };
  // A textarea masked by CSS: it keeps a PEM's newlines, and no password
  // manager offers to save it.
  const typed = h('textarea', { id: 'new-value', class: 'masked', rows: 3, autocomplete: 'off', spellcheck: false, 'aria-label': 'New value' });
  const file = h('input', { type: 'file', id: 'new-value-file', 'aria-label': 'File holding the new value' });
  const sources = h('fieldset', {},
    h('legend', {}, 'New value'),
    generated ? radio('generate', 'Generate 32 random bytes in this browser') : null,
    radio('typed', 'Type or paste it'),
    radio('file', 'Read it from a file ', file),
    typed,
    secret.kind === 'opaque'
      ? h('p', { class: 'muted' }, 'An opaque secret is often a credential issued elsewhere (an API key, a webhook secret): enter the new one; generate only where Keyhole alone uses the key.')
      : null);
  // Using a source's control chooses that source, so what is sent is what
  // the operator last touched.
  const choose = (value) => { sources.querySelector(`#source-${value}`).checked = true; };
  typed.addEventListener('input', () => choose('typed'));
  file.addEventListener('change', () => choose('file'));
  const grace = h('select', { id: 'grace' }, GRACE_CHOICES.map(([secs, label]) => h('option', { value: secs, selected: secs === '3600' }, label)));
  const previewArea = h('div', {});
  // A preview is of one grace window: choosing another withdraws it.
  grace.addEventListener('change', () => previewArea.replaceChildren());

  async function rotate(graceSecs) {
    const source = sources.querySelector('input[name="source"]:checked').value;
    let bytes;
    try {
      bytes = await readValue(source, typed, file);
    } catch (e) {
      context.notify(e.message, 'bad');
      return;
    }
    typed.value = '';
    file.value = '';
    const body = { value: base64(bytes) };
    if (graceSecs > 0) body.grace_secs = graceSecs;
    bytes.fill(0);
    try {
      const change = await context.call('POST', path('secrets', secret.name, 'rotate'), body);
      context.notify(`Rotated ${change.name}: version ${change.version} is current` +
        (change.grace_until ? `; version ${change.replaced} stays in grace until ${time(change.grace_until)}.` : `; version ${change.replaced} is retired.`));
      context.rerender();
    } catch (e) {
      context.failed(e);
    } finally {
      body.value = '';
    }
  }

  const previewButton = h('button', {
    type: 'button',
    id: 'preview-rotation',
    on: {
      click: async () => {
        const graceSecs = Number(grace.value);
        try {
          const [fresh, versions, dependents] = await Promise.all([
            context.call('GET', '/v1/secrets').then((all) => all.find((s) => s.name === secret.name)),
            context.call('GET', path('secrets', secret.name, 'versions')),
            context.call('GET', path('secrets', secret.name, 'dependents')),
          ]);
          if (!fresh) throw new Error(`${secret.name} no longer exists`);
          previewArea.replaceChildren(
            preview(fresh, versions, dependents, graceSecs),
            h('div', { class: 'actions' },
              confirmButton('Rotate now', `Yes, rotate ${secret.name}`, () => rotate(graceSecs), { id: 'confirm-rotation', class: 'danger' }),
              h('button', { type: 'button', class: 'quiet', on: { click: () => previewArea.replaceChildren() } }, 'Cancel')));
        } catch (e) {
          context.failed(e);
        }
      },
    },
  }, 'Preview the rotation');

  return h('section', { class: 'panel', id: 'rotate' },
    h('h2', {}, 'Rotate'),
    sources,
    h('label', { for: 'grace' }, 'Grace window for the current version'),
    grace,
    h('div', { class: 'actions' }, previewButton),
    previewArea);
}

/** The page of the secret `name`. */
export async function secretView(context, name) {
  const [secrets, versions, dependents] = await Promise.all([
    context.call('GET', '/v1/secrets'),
    context.call('GET', path('secrets', name, 'versions')),
    context.call('GET', path('secrets', name, 'dependents')),
  ]);
  const secret = secrets.find((s) => s.name === name);
  if (!secret) throw new Error(`no secret named ${name}`);
  const versionRows = versions.map((v) => h('tr', { 'data-version': v.version },
    h('td', { class: 'number' }, `v${v.version}`),
    h('td', {}, v.kind),
    h('td', {}, time(v.created_at)),
    h('td', { class: 'state' }, versionState(v))));
  const dependentRows = dependents.map((d) => h('tr', { 'data-function': d.function, 'data-binding': d.binding },
    h('td', {}, d.function),
    h('td', {}, d.binding),
    h('td', {}, operations(d.allow)),
    h('td', {}, lastUse(d.last_use)),
    h('td', {}, lastUse(d.last_grace_use))));
  return h('section', { id: 'secret-view', 'data-secret': name },
    h('p', {}, h('a', { href: '#/secrets' }, '← Secrets')),
    h('h1', {}, name, ' ', secret.overdue ? badge('OVERDUE', 'bad') : null),
    h('p', { class: 'muted' },
      `${secret.kind} · current v${secret.current_version} · last rotation ${time(secret.value_created_at)} (${relative(secret.value_created_at)})`,
      secret.max_age === null ? ' · no max age' : ` · max age ${duration(secret.max_age)}`),
    h('section', { class: 'panel' },
      h('h2', {}, 'Dependents'),
      graph(name, secret.current_version, dependents),
      h('p', { class: 'legend' },
        badge('on the current version', 'good'), ' ', badge('last used an older version', 'warn'), ' ', badge('never used', 'muted')),
      dependents.length
        ? table(['Function', 'Binding', 'Operations', 'Last use', 'Last grace-only use'], dependentRows, { class: 'grid', id: 'dependents' })
        : null),
    h('section', { class: 'panel' },
      h('h2', {}, 'Versions'),
      table(['Version', 'Kind', 'Created', 'State'], versionRows, { class: 'grid', id: 'versions' })),
    context.can('secrets:write') ? rotateForm(context, secret) : null);
}
