// hello-secret: opens the GREETING_KEY binding and answers with its name
// and version — never its value.

import { secrets, SecretError } from '@keyhole/sdk';

addEventListener('fetch', (event) => event.respondWith(handle()));

function handle() {
  try {
    const secret = secrets.get('GREETING_KEY');
    return text(200, `hello from keyhole: binding ${secret.name()} is at version ${secret.version()}\n`);
  } catch (error) {
    if (error instanceof SecretError) return text(503, `${error.kind}: ${error.message}\n`);
    throw error;
  }
}

function text(status, body) {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}
