// Guest SDK for Keyhole edge functions written in JavaScript or TypeScript.
//
// Invariant: nothing here ever asks the host for a secret's bytes except
// `Secret#reveal`, so a function that does not call it never holds them —
// HMACs, signatures, sealing and bearer tokens are computed by the host from
// an opaque handle. The tests check the guest's whole linear memory for it.
//
// A function opens a *binding* by the name its code uses; the operator maps
// it to a stored secret and grants it operations. Every call is checked
// against that grant on the host, and a refusal is thrown as a
// `SecretError` whose `kind` says why.

import * as raw from 'keyhole:secrets/secrets@0.1.1';

/** Why the host refused a secrets call; the message never holds secret bytes. */
export class SecretError extends Error {
  /**
   * @param {'not-granted' | 'denied' | 'unavailable' | 'invalid-argument'} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = 'SecretError';
    /** `not-granted`, `denied`, `unavailable` or `invalid-argument`. */
    this.kind = kind;
  }
}

/** The host's refusal as a `SecretError`; anything else unchanged. */
function refusal(error) {
  const payload = error && error.payload;
  if (payload && typeof payload.tag === 'string') {
    return new SecretError(payload.tag, String(payload.val));
  }
  return error;
}

function hostCall(call) {
  try {
    return call();
  } catch (error) {
    throw refusal(error);
  }
}

const encoder = new TextEncoder();

/**
 * `value` as bytes: a string as UTF-8, a Uint8Array as it is, any other
 * ArrayBuffer view or ArrayBuffer over the same memory.
 */
export function bytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError('expected a string, a Uint8Array, an ArrayBuffer or a typed array');
}

/** Lower-case hex of `data`. */
export function hex(data) {
  let out = '';
  for (const b of bytes(data)) out += b.toString(16).padStart(2, '0');
  return out;
}

/** The bytes of a hex string, or `null` when it is not hex of whole bytes. */
export function fromHex(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Unpadded base64url of `data` (as JWTs use it). */
export function base64url(data) {
  let binary = '';
  for (const b of bytes(data)) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** JWT names and the WIT names of the algorithms the host signs with. */
const ALGORITHMS = {
  EdDSA: 'ed25519',
  ES256: 'ecdsa-p256-sha256',
  RS256: 'rsa-pkcs1-sha256',
  ed25519: 'ed25519',
  'ecdsa-p256-sha256': 'ecdsa-p256-sha256',
  'rsa-pkcs1-sha256': 'rsa-pkcs1-sha256',
};

const opening = Symbol('opening');

/**
 * One version of a secret, held by the host; this object holds only a
 * handle, which lives as long as the request that opened it.
 */
export class Secret {
  #handle;

  /** Use `get(binding)`. */
  constructor(token, handle) {
    if (token !== opening) throw new TypeError('open a secret with get(binding)');
    this.#handle = handle;
  }

  /** The binding name this handle was opened with. */
  name() {
    return this.#handle.name();
  }

  /** The version of the secret this handle uses. */
  version() {
    return this.#handle.version();
  }

  /** HMAC-SHA256 of `message` keyed with the secret (32 bytes). Needs the `hmac` grant. */
  hmacSha256(message) {
    return hostCall(() => this.#handle.hmacSha256(bytes(message)));
  }

  /**
   * Whether `tag` is the HMAC-SHA256 of `message`, compared in constant time
   * on the host; during a rotation's grace window the previous version's tag
   * passes too. Needs the `hmac` grant.
   */
  verifyHmacSha256(message, tag) {
    // A tag is bytes: a hex or base64 string taken as UTF-8 would never match.
    if (typeof tag === 'string') throw new TypeError('the tag must be bytes: decode it first (fromHex)');
    return hostCall(() => this.#handle.verifyHmacSha256(bytes(message), bytes(tag)));
  }

  /**
   * The secret's bytes, copied into this function's memory. Needs the
   * `reveal` grant. Prefer the operations above: a revealed value can leak
   * from here (`fill(0)` the array when done; a string made of it cannot be
   * wiped).
   */
  reveal() {
    return hostCall(() => this.#handle.reveal());
  }

  /**
   * A signature of `message` with the secret as private key. `algorithm`:
   * `EdDSA`, `ES256` or `RS256` (or the WIT names). Needs the `sign` grant.
   */
  sign(algorithm, message) {
    const wit = Object.hasOwn(ALGORITHMS, algorithm) ? ALGORITHMS[algorithm] : null;
    if (!wit) throw new SecretError('invalid-argument', `unknown algorithm ${JSON.stringify(String(algorithm))}: EdDSA, ES256 or RS256`);
    return hostCall(() => this.#handle.sign(wit, bytes(message)));
  }

  /** The public half of the secret's private key (SubjectPublicKeyInfo DER). Needs the `sign` grant. */
  publicKey() {
    return hostCall(() => this.#handle.publicKey());
  }

  /** AES-256-GCM sealing of `plaintext`, authenticating `aad` too: nonce, ciphertext, tag. Needs the `seal` grant. */
  seal(plaintext, aad = new Uint8Array()) {
    return hostCall(() => this.#handle.seal(bytes(plaintext), bytes(aad)));
  }

  /** The plaintext of a `seal` output with the same `aad`; anything tampered with throws. Needs the `seal` grant. */
  open(sealed, aad = new Uint8Array()) {
    return hostCall(() => this.#handle.open(bytes(sealed), bytes(aad)));
  }

  /**
   * A token standing for the secret in header values of outgoing `fetch`
   * requests to hosts the grant allows; the host puts the secret in its
   * place on the way out. Needs the `inject` grant.
   */
  headerToken() {
    return hostCall(() => this.#handle.headerToken());
  }

  /** Gives the handle back to the host before the request ends. */
  [Symbol.dispose]() {
    const handle = this.#handle;
    this.#handle = null;
    handle?.[Symbol.dispose]?.();
  }

  /** Names the binding, never more. */
  toString() {
    return `Secret(${this.#handle ? this.#handle.name() : 'closed'})`;
  }

  toJSON() {
    return this.toString();
  }
}

/**
 * Opens the secret bound to `binding` for this function. Throws a
 * `SecretError` (`not-granted`) when the operator granted it nothing.
 * Call it while serving a request, not at the top level of the module
 * (the build runs the top level once, without a host).
 */
export function get(binding) {
  return new Secret(opening, hostCall(() => raw.get(binding)));
}

/** The namespace the functions read best through: `secrets.get('KEY')`. */
export const secrets = { get };
