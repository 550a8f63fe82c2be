// Drives the operator's console in headless Chromium against a running node
// that `tests/all/console.rs` set up, and checks what an operator, an auditor
// and a scoped deployer see and can do. Takes the README's screenshots.
//
// Environment: KEYHOLE_CONSOLE_URL (the admin listener), KEYHOLE_ADMIN_TOKEN,
// KEYHOLE_AUDITOR_TOKEN, KEYHOLE_DEPLOYER_TOKEN, KEYHOLE_CHROMIUM (the
// browser), KEYHOLE_SCREENSHOTS (a folder, written to), KEYHOLE_HOSTILE
// (names a caller and a guest chose, one per line, which the node recorded
// and the page must show as text), KEYHOLE_TYPED_KEY (a value to type in).
// With KEYHOLE_EXPECT_BROKEN=SEQ it checks only that the audit view reports
// the chain broken at record SEQ (the test edits it between two runs).
// Prints one line per step; exits non-zero at the first failure.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('KEYHOLE_CONSOLE_URL');
const tokens = {
  admin: env('KEYHOLE_ADMIN_TOKEN'),
  auditor: env('KEYHOLE_AUDITOR_TOKEN'),
  deployer: env('KEYHOLE_DEPLOYER_TOKEN'),
};
const hostile = env('KEYHOLE_HOSTILE').split('\n');
const typedWebhookKey = env('KEYHOLE_TYPED_KEY');
const shots = env('KEYHOLE_SCREENSHOTS');
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: env('KEYHOLE_CHROMIUM'),
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
const page = await context.newPage();
page.setDefaultTimeout(15_000);

const dialogs = [];
const policyErrors = [];
page.on('dialog', async (dialog) => {
  dialogs.push(dialog.message());
  await dialog.dismiss();
});
page.on('pageerror', (error) => policyErrors.push(`page error: ${error.message}`));
page.on('console', (message) => {
  const text = message.text();
  if (/Content Security Policy|Trusted ?Type|TrustedHTML|TrustedScript|Refused to/i.test(text)) policyErrors.push(text);
});

let current = 'setup';
async function step(name, body) {
  current = name;
  await body();
  console.log(`ok - ${name}`);
}

/** A screenshot of the page (`fullPage`) or of what the window shows. */
async function shot(name, { fullPage = true } = {}) {
  await page.waitForTimeout(150);
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage });
}

async function api(method, route, token, body) {
  const response = await fetch(`${base}${route}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, json: await response.json().catch(() => null) };
}

async function signIn(token) {
  await page.goto(`${base}/ui/`);
  await page.fill('#token', token);
  await page.click('form.sign-in button[type=submit]');
  await page.waitForSelector('#signed-in-as');
}

async function go(hash, selector) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForSelector(selector);
}

const text = (selector) => page.locator(selector).innerText();

/** Clicks a button that asks once more, and confirms (a double click does not). */
async function confirm(locator) {
  const button = typeof locator === 'string' ? page.locator(locator) : locator;
  await button.click();
  await page.waitForTimeout(450);
  await button.click();
}

/** The whole tour: every view, as each role. */
async function tour() {
  await step('the console is served with a strict policy and no inline script', async () => {
    const response = await page.goto(`${base}/`);
    assert.equal(new URL(page.url()).pathname, '/ui/');
    const csp = response.headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /require-trusted-types-for 'script'/);
    const inline = await page.evaluate(() => [...document.scripts].filter((s) => !s.src).length);
    assert.equal(inline, 0);
    // The policy is in force: an HTML sink throws instead of parsing.
    const sink = await page.evaluate(() => {
      try {
        document.body.insertAdjacentHTML('beforeend', '<b>parsed</b>');
        return 'parsed';
      } catch (e) {
        return e.name;
      }
    });
    assert.equal(sink, 'TypeError');
    // ...and the browser reports it, as the last step counts such reports.
    await page.waitForTimeout(100);
    assert.equal(policyErrors.length, 1, policyErrors.join('\n'));
    assert.match(policyErrors[0], /TrustedHTML/);
    policyErrors.length = 0;
  });

  await step('a wrong token is refused and the sign-in form says so', async () => {
    await page.fill('#token', `kh_0000000000000000_${'A'.repeat(43)}`);
    await page.click('form.sign-in button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#sign-in-error').textContent.length > 0);
    assert.match(await text('#sign-in-error'), /not accepted/);
    assert.equal(await page.locator('#signed-in-as').count(), 0);
    await shot('sign-in');
  });

  await step('an admin signs in; the token is kept nowhere but the tab', async () => {
    await signIn(tokens.admin);
    assert.match(await text('#signed-in-as'), /ops · admin/);
    const stored = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
      url: location.href,
    }));
    assert.deepEqual({ ...stored, url: stored.url.includes('kh_') }, { local: 0, session: 0, cookie: '', url: false });
    assert.deepEqual(await context.cookies(), []);
    const links = await page.locator('#nav a').allInnerTexts();
    assert.deepEqual(links, ['Secrets', 'Functions', 'Audit', 'Tokens', 'Node']);
  });

  await step('secrets: an overdue secret is flagged OVERDUE', async () => {
    await go('#/secrets', '#secrets-view');
    assert.match(await text('tr[data-secret="stale-key"]'), /OVERDUE/);
    assert.doesNotMatch(await text('tr[data-secret="greeting"]'), /OVERDUE/);
    await shot('secrets');
  });

  await step("a secret's page shows hello-secret depending on it", async () => {
    await page.click('tr[data-secret="greeting"] a');
    await page.waitForSelector('#secret-view[data-secret="greeting"]');
    const row = await text('#dependents tr[data-function="hello-secret"]');
    assert.match(row, /GREETING_KEY/);
    assert.match(row, /hmac/);
    assert.match(row, /v1 at /);
    const node = page.locator('svg.graph g.dependent[data-function="hello-secret"]');
    assert.equal(await node.getAttribute('class'), 'dependent on-current');
    assert.match(await node.textContent(), /GREETING_KEY · last used v1/);
  });

  await step('rotating with a grace window shows what it affects before it is made', async () => {
    await page.check('#source-generate');
    await page.selectOption('#grace', '3600');
    await page.click('#preview-rotation');
    const preview = await text('#rotation-preview');
    assert.match(preview, /Version 2 becomes current/);
    assert.match(preview, /Version 1 still verifies MACs and opens sealed data for 1h/);
    assert.match(preview, /hello-secret · GREETING_KEY \(hmac\)/);
    await shot('rotate-preview');
    // Nothing changed yet: the preview is not the rotation.
    const before = await api('GET', '/v1/secrets/greeting/versions', tokens.admin);
    assert.equal(before.json.length, 1);
    await confirm('#confirm-rotation');
    await page.waitForSelector('#versions tr[data-version="2"]');
    assert.match(await text('#flash'), /version 2 is current; version 1 stays in grace until/);
    assert.match(await text('#versions tr[data-version="2"]'), /current/);
    assert.match(await text('#versions tr[data-version="1"]'), /grace until .* \(in (1h|59m)/);
    await shot('secret');
  });

  await step('a typed value with no grace window retires the old version at once', async () => {
    await go('#/secrets/gh', '#secret-view[data-secret="gh"]');
    // The source that is used is the one last touched: typing chooses it.
    await page.check('#source-generate');
    await page.fill('#new-value', typedWebhookKey);
    assert.equal(await page.isChecked('#source-typed'), true);
    await page.selectOption('#grace', '0');
    await page.click('#preview-rotation');
    assert.match(await text('#rotation-preview'), /Version 1 is retired at once/);
    assert.match(await text('#rotation-preview'), /webhook-verify · GITHUB_WEBHOOK \(hmac\): last used never/);
    await confirm('#confirm-rotation');
    await page.waitForSelector('#versions tr[data-version="2"]');
    assert.match(await text('#flash'), /version 2 is current; version 1 is retired/);
    assert.match(await text('#versions tr[data-version="1"]'), /retired/);
    assert.equal(await page.inputValue('#new-value'), '');
  });

  await step("revoking a grant changes the function's binding state", async () => {
    await go('#/functions', '#functions-view');
    const binding = 'article[data-function="hello-secret"] tr[data-binding="GREETING_KEY"]';
    assert.equal(await page.getAttribute(binding, 'data-state'), 'granted');
    await confirm(`${binding} button.revoke`);
    await page.waitForSelector(`${binding}[data-state="pending"]`);
    assert.match(await text(binding), /not granted/);
    assert.match(await text('#flash'), /Revoked hello-secret · GREETING_KEY/);
    await shot('functions');
  });

  await step('granting it again from the form brings the binding back, bound to the code deployed', async () => {
    const binding = 'article[data-function="hello-secret"] tr[data-binding="GREETING_KEY"]';
    assert.equal(await page.isChecked(`${binding} .grant-form input[value="hmac"]`), true);
    assert.equal(await page.isChecked(`${binding} .grant-form input[value="reveal"]`), false);
    await page.selectOption(`${binding} .grant-form select`, 'greeting');
    await confirm(`${binding} button.grant`);
    await page.waitForSelector(`${binding}[data-state="granted"]`);
    const grants = await api('GET', '/v1/grants?function=hello-secret', tokens.admin);
    assert.deepEqual(grants.json.map((g) => [g.secret, g.allow, g.digest.length]), [['greeting', ['hmac'], 64]]);
  });

  await step('the audit view lists both actions, the chain verifies, and hostile names stay text', async () => {
    await go('#/audit', '#audit-view');
    assert.match(await text('#chain-status'), /chain verified/);
    assert.match(await text('#chain-status'), /head #\d+ [0-9a-f]{16}/);
    for (const secret of ['greeting', 'gh']) {
      const rotate = page.locator('#audit tr', { hasText: 'secret.rotate' }).filter({ hasText: `secret/${secret}` });
      assert.match(await rotate.innerText(), /ops \(admin\)[\s\S]*ok/);
    }
    const revoke = page.locator('#audit tr', { hasText: 'grant.revoke' });
    assert.match(await revoke.innerText(), /grant\/hello-secret\/GREETING_KEY/);
    const cells = await page.locator('#audit td').allTextContents();
    for (const name of hostile) {
      assert.ok(cells.some((cell) => cell.includes(name)), `no cell shows ${name} as text`);
    }
    assert.equal(await page.locator('main img, main svg svg, main [onerror], main [onload]').count(), 0);
    await page.fill('#audit-filters input[name="secret"]', 'greeting');
    await page.click('#audit-filters button[type=submit]');
    await page.waitForSelector('#audit-view[data-query="secret=greeting"]');
    const targets = await page.locator('#audit tr[data-kind="admin"] td.target').allTextContents();
    assert.ok(targets.length > 0 && targets.every((t) => t === 'secret/greeting' || t.startsWith('grant/')), targets.join());
    assert.ok((await page.locator('#audit tr[data-outcome="allowed"]').count()) > 0);
    await go('#/audit', '#audit-view');
    await shot('audit', { fullPage: false });
  });

  await step('tokens: a new token is shown once and works; revoking it stops it', async () => {
    await go('#/tokens', '#tokens-view');
    await page.selectOption('form.create-token select[name="role"]', 'auditor');
    await page.fill('form.create-token input[name="name"]', 'console-made');
    await page.click('form.create-token button[type=submit]');
    await page.waitForSelector('#new-token');
    const created = await page.inputValue('#new-token');
    assert.match(created, /^kh_[0-9a-f]{16}_/);
    assert.equal((await api('GET', '/v1/whoami', created)).json.role, 'auditor');
    await page.click('#token-shown button');
    await page.waitForSelector('#tokens tr[data-token="console-made"]');
    assert.equal(await page.locator('#new-token').count(), 0);
    await confirm(page.locator('#tokens tr[data-token="console-made"] button'));
    await page.waitForFunction(() => /revoked/.test(document.querySelector('#tokens tr[data-token="console-made"]')?.textContent ?? ''));
    assert.equal((await api('GET', '/v1/whoami', created)).status, 401);
    await shot('tokens');
  });

  await step('node: the counters that matter', async () => {
    await go('#/node', '#node-view');
    assert.ok(Number(await text('[data-metric="requests"] .value')) >= 1);
    assert.equal(await text('[data-metric="audit-lost"] .value'), '0');
    await shot('node');
  });

  await step('signing out, or reloading, forgets the token', async () => {
    await page.click('#who button');
    await page.waitForSelector('form.sign-in');
    await signIn(tokens.admin);
    await page.reload();
    await page.waitForSelector('form.sign-in');
    assert.equal(await page.locator('#signed-in-as').count(), 0);
  });

  await step('an auditor sees everything and no button that changes anything', async () => {
    await signIn(tokens.auditor);
    assert.match(await text('#signed-in-as'), /watcher · auditor/);
    for (const [hash, selector] of [
      ['#/secrets/greeting', '#secret-view'],
      ['#/functions', '#functions-view'],
      ['#/tokens', '#tokens-view'],
      ['#/audit', '#audit-view'],
    ]) {
      await go(hash, selector);
      const mutating = await page.locator('main button:not([type=submit]), #rotate, .grant-form, form.create-token').count();
      assert.equal(mutating, 0, `${hash} offers an auditor a change`);
    }
    await go('#/secrets/greeting', '#secret-view');
    await shot('auditor');
    // The page is not the check: the node refuses the auditor itself.
    const refused = await api('DELETE', '/v1/grants/webhook-verify/GITHUB_WEBHOOK', tokens.auditor);
    assert.equal(refused.status, 403);
  });

  await step('a scoped deployer sees only its own functions', async () => {
    await page.click('#who button');
    await signIn(tokens.deployer);
    assert.deepEqual(await page.locator('#nav a').allInnerTexts(), ['Functions']);
    await page.waitForSelector('#functions-view');
    const functions = await page.locator('article.function').evaluateAll((els) => els.map((e) => e.dataset.function));
    assert.deepEqual(functions, ['webhook-verify']);
    assert.equal(await page.locator('main button, .grant-form').count(), 0);
    await shot('deployer');
    assert.equal((await api('GET', '/v1/secrets', tokens.deployer)).status, 403);
    assert.equal((await api('DELETE', '/v1/grants/webhook-verify/GITHUB_WEBHOOK', tokens.deployer)).status, 403);
  });

  await step('no dialog opened and no policy was violated', async () => {
    assert.deepEqual(dialogs, []);
    assert.deepEqual(policyErrors, []);
  });
}

/** After the test edited a record of the trail: the audit view says where the chain breaks. */
async function tampered(seq) {
  await step('an edited audit record breaks the chain, and the audit view names it', async () => {
    await signIn(tokens.auditor);
    await go('#/audit', '#audit-view');
    const status = await text('#chain-status');
    assert.match(status, /chain broken/);
    assert.match(status, new RegExp(`this node: record #${seq} fails \\(.*MAC`));
    await shot('audit-broken', { fullPage: false });
  });
}

try {
  const broken = process.env.KEYHOLE_EXPECT_BROKEN;
  if (broken) {
    await tampered(broken);
  } else {
    await tour();
  }
} catch (error) {
  console.log(`not ok - ${current}`);
  console.log(error.stack || String(error));
  await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
