// The console's shell: sign-in, navigation between views, and errors.
//
// Which views and buttons appear follows the caller's permissions as
// `GET /v1/whoami` reports them. That is a convenience: the node checks
// every request itself, whatever the page offers.

import { ApiError, call, forgetToken, useToken } from './api.js';
import { h, replace } from './dom.js';
import { secretsView } from './views/secrets.js';
import { secretView } from './views/secret.js';
import { functionsView } from './views/functions.js';
import { auditView } from './views/audit.js';
import { tokensView } from './views/tokens.js';
import { nodeView } from './views/node.js';

const VIEWS = [
  { route: 'secrets', title: 'Secrets', needs: 'secrets:read', render: secretsView },
  { route: 'functions', title: 'Functions', needs: 'functions:read', render: functionsView },
  { route: 'audit', title: 'Audit', needs: 'audit:read', render: auditView },
  { route: 'tokens', title: 'Tokens', needs: 'tokens:read', render: tokensView },
  { route: 'node', title: 'Node', needs: 'metrics:read', render: nodeView },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const flash = document.getElementById('flash');

let session = null;
let leaving = [];
let rendering = 0;

function can(permission) {
  return session !== null && session.permissions.includes(permission);
}

/** Shows `message` above the view; `tone` is `good` or `bad`. */
function notify(message, tone = 'good') {
  replace(flash, message ? h('p', { class: ['flash', tone] }, message) : null);
}

function signOut(message) {
  forgetToken();
  session = null;
  rendering++;
  for (const stop of leaving) stop();
  leaving = [];
  replace(nav);
  replace(who);
  notify('');
  showSignIn(message);
}

/** What a failed call shows: a rejected token signs out; others are reported. */
function failed(error) {
  if (session === null) return; // signed out meanwhile: nothing to report to
  if (error instanceof ApiError && error.status === 401) {
    signOut(`The node no longer accepts this token: ${error.message}`);
    return;
  }
  notify(error instanceof ApiError ? `${error.status || 'error'}: ${error.message}` : String(error), 'bad');
}

function showSignIn(message) {
  // A text field masked by CSS, not type=password: a browser's password
  // manager would offer to save (and sync) the token.
  const input = h('input', {
    id: 'token',
    type: 'text',
    class: 'masked',
    autocomplete: 'off',
    spellcheck: false,
    placeholder: 'kh_…',
    'aria-label': 'Admin API token',
  });
  const error = h('p', { id: 'sign-in-error', class: 'error', role: 'alert' }, message || '');
  const form = h('form', {
    class: 'sign-in',
    on: {
      submit: async (event) => {
        event.preventDefault();
        const candidate = input.value.trim();
        input.value = '';
        if (!/^[\x21-\x7e]+$/.test(candidate)) {
          error.textContent = 'Paste an admin API token (kh_…): `keyhole token create --role admin` prints one.';
          return;
        }
        useToken(candidate);
        try {
          session = await call('GET', '/v1/whoami');
        } catch (e) {
          forgetToken();
          error.textContent = e instanceof ApiError && e.status === 401
            ? `That token was not accepted: ${e.message}`
            : `Signing in failed: ${e.message}`;
          return;
        }
        signedIn();
      },
    },
  },
  h('h1', {}, 'Sign in to this node'),
  h('p', {}, 'Paste an admin API token. It stays in this tab\'s memory only: a reload or a closed tab signs you out.'),
  h('label', { for: 'token' }, 'Token'),
  input,
  h('button', { type: 'submit' }, 'Sign in'),
  error);
  replace(main, form);
  input.focus();
}

function signedIn() {
  replace(who,
    h('span', { id: 'signed-in-as' }, session.name, ' · ', session.role),
    h('button', { type: 'button', class: 'quiet', on: { click: () => signOut('Signed out.') } }, 'Sign out'));
  const allowed = VIEWS.filter((view) => can(view.needs));
  replace(nav, allowed.map((view) => h('a', { href: `#/${view.route}`, 'data-route': view.route }, view.title)));
  const start = `#/${allowed.length ? allowed[0].route : ''}`;
  if (!location.hash || location.hash === '#/') {
    if (location.hash !== start) {
      location.hash = start; // hashchange renders it
      return;
    }
  }
  route();
}

function decoded(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function parseHash() {
  const [pathPart, queryPart] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = pathPart.split('/').filter(Boolean).map(decoded);
  return { parts, query: new URLSearchParams(queryPart || '') };
}

/** Shows the view the fragment names; a re-render after a change keeps its message. */
async function route({ keepMessage = false } = {}) {
  if (session === null) return;
  for (const stop of leaving) stop();
  leaving = [];
  if (!keepMessage) notify('');
  const { parts, query } = parseHash();
  const name = parts[0] || '';
  for (const link of nav.querySelectorAll('a')) {
    link.classList.toggle('current', link.dataset.route === name);
  }
  const ticket = ++rendering;
  const context = {
    session,
    can,
    call,
    notify,
    failed,
    query,
    rerender: () => route({ keepMessage: true }),
    onLeave: (stop) => leaving.push(stop),
    // Whether this view is still the one shown (a later navigation or a
    // sign-out supersedes it): timers check it before they start.
    isCurrent: () => ticket === rendering && session !== null,
  };
  let render;
  if (name === 'secrets' && parts.length === 2) {
    render = () => secretView(context, parts[1]);
  } else {
    const view = VIEWS.find((v) => v.route === name && can(v.needs));
    if (!view) {
      replace(main, h('p', { class: 'muted' }, 'Nothing to show here for this token.'));
      return;
    }
    render = () => view.render(context);
  }
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const content = await render();
    if (context.isCurrent()) replace(main, content);
  } catch (e) {
    if (context.isCurrent()) {
      replace(main);
      failed(e);
    }
  }
}

window.addEventListener('hashchange', () => route());
showSignIn();
