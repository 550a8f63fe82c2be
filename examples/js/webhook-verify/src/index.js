// webhook-verify: checks a GitHub webhook's X-Hub-Signature-256
// (`sha256=<hex>` of HMAC-SHA256 over the raw body) with the key bound to
// GITHUB_WEBHOOK. The host computes and compares the HMAC; the key never
// enters this function's memory.

import { secrets, SecretError, fromHex } from '@keyhole/sdk';

/** GitHub caps webhook payloads at 25 MiB. */
const MAX_BODY = 25 * 1024 * 1024;

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const declared = Number(request.headers.get('content-length') ?? 0);
  if (declared > MAX_BODY) return text(413, 'body too large or unreadable\n');
  let body;
  try {
    body = new Uint8Array(await request.arrayBuffer());
  } catch {
    return text(413, 'body too large or unreadable\n');
  }
  if (body.length > MAX_BODY) return text(413, 'body too large or unreadable\n');
  const tag = parseSignature(request.headers.get('x-hub-signature-256'));
  if (!tag) return text(401, 'missing or malformed X-Hub-Signature-256\n');
  try {
    const valid = secrets.get('GITHUB_WEBHOOK').verifyHmacSha256(body, tag);
    return valid ? text(200, 'signature valid\n') : text(401, 'signature does not match\n');
  } catch (error) {
    if (error instanceof SecretError) return text(503, `${error.kind}: ${error.message}\n`);
    throw error;
  }
}

/** `sha256=<64 hex digits>` to the 32 tag bytes, or null. */
function parseSignature(header) {
  const value = header?.trim();
  if (!value?.startsWith('sha256=')) return null;
  const digits = value.slice('sha256='.length);
  return digits.length === 64 ? fromHex(digits) : null;
}

function text(status, body) {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}
