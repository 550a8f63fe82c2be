// Test guest: runs one SDK operation on a binding and says what happened.
//
//   GET /js/op?op=get|hmac|verify|reveal|seal&binding=KEY[&trap=OTHER]
//
// Answers JSON: {"ok":true,"result":"<hex or text>"} or
// {"ok":false,"kind":"<SecretError kind>"}. With `trap=OTHER` it then opens
// OTHER, gives the handle back and uses it anyway, which stops the instance
// (the handle is unknown by then): the guest-memory test stops it there,
// just after the operation, and reads the memory it leaves.

import { secrets, SecretError, hex } from '@keyhole/sdk';
import { get as rawGet } from 'keyhole:secrets/secrets@0.1.1';

const MESSAGE = 'keyhole js probe message';

addEventListener('fetch', (event) => event.respondWith(handle(new URL(event.request.url))));

function handle(url) {
  const op = url.searchParams.get('op') ?? 'get';
  const binding = url.searchParams.get('binding') ?? 'KEY';
  let answer;
  try {
    answer = { ok: true, result: run(op, binding) };
  } catch (error) {
    if (!(error instanceof SecretError)) throw error;
    answer = { ok: false, kind: error.kind };
  }
  const trap = url.searchParams.get('trap');
  if (trap) {
    const handle = rawGet(trap);
    handle[Symbol.dispose]();
    handle.name();
  }
  return new Response(JSON.stringify(answer), { headers: { 'content-type': 'application/json' } });
}

function run(op, binding) {
  const secret = secrets.get(binding);
  switch (op) {
    case 'get':
      return `${secret.name()} v${secret.version()}`;
    case 'hmac':
      return hex(secret.hmacSha256(MESSAGE));
    case 'verify': {
      const tag = secret.hmacSha256(MESSAGE);
      return String(secret.verifyHmacSha256(MESSAGE, tag));
    }
    case 'reveal':
      return hex(secret.reveal());
    case 'seal':
      return hex(secret.open(secret.seal(MESSAGE)));
    default:
      throw new Error(`unknown op ${op}`);
  }
}
