/// <reference path="./types/interfaces/keyhole-secrets-secrets.d.ts" />
// Types of the Keyhole guest SDK; the raw interface's types in `types/` are
// generated from the WIT by `jco guest-types` (`npm run sync:js-sdk` at the
// repository root).

/** Anything the SDK takes as bytes: a string is encoded as UTF-8. */
export type Bytes = string | Uint8Array | ArrayBuffer | ArrayBufferView;

/** The algorithms the host signs with, by JWT name or WIT name. */
export type Algorithm = 'EdDSA' | 'ES256' | 'RS256' | import('keyhole:secrets/secrets@0.1.1').Algorithm;

/** Why the host refused a secrets call; the message never holds secret bytes. */
export class SecretError extends Error {
  readonly kind: 'not-granted' | 'denied' | 'unavailable' | 'invalid-argument';
}

/** One version of a secret, held by the host; this object holds only a handle. */
export class Secret implements Disposable {
  private constructor();
  /** The binding name this handle was opened with. */
  name(): string;
  /** The version of the secret this handle uses. */
  version(): number;
  /** HMAC-SHA256 of `message` keyed with the secret. Needs the `hmac` grant. */
  hmacSha256(message: Bytes): Uint8Array;
  /** Whether `tag` (bytes, not hex) is the HMAC-SHA256 of `message` (constant time, on the host). Needs the `hmac` grant. */
  verifyHmacSha256(message: Bytes, tag: Uint8Array | ArrayBuffer | ArrayBufferView): boolean;
  /** The secret's bytes, copied into this function's memory. Needs the `reveal` grant. */
  reveal(): Uint8Array;
  /** A signature of `message` with the secret as private key. Needs the `sign` grant. */
  sign(algorithm: Algorithm, message: Bytes): Uint8Array;
  /** The public half of the secret's private key (SubjectPublicKeyInfo DER). Needs the `sign` grant. */
  publicKey(): Uint8Array;
  /** AES-256-GCM: nonce, ciphertext, tag. Needs the `seal` grant. */
  seal(plaintext: Bytes, aad?: Bytes): Uint8Array;
  /** The plaintext of a `seal` output with the same `aad`. Needs the `seal` grant. */
  open(sealed: Bytes, aad?: Bytes): Uint8Array;
  /** A token the host replaces with the secret in outgoing header values to allowed hosts. Needs the `inject` grant. */
  headerToken(): string;
  /** Gives the handle back to the host before the request ends. */
  [Symbol.dispose](): void;
}

/** Opens the secret bound to `binding` for this function. */
export function get(binding: string): Secret;
/** `{ get }`, to read as `secrets.get('KEY')`. */
export const secrets: { get: typeof get };
/** `value` as bytes (a string as UTF-8). */
export function bytes(value: Bytes): Uint8Array;
/** Lower-case hex of `data`. */
export function hex(data: Bytes): string;
/** The bytes of a hex string, or `null` when it is not hex of whole bytes. */
export function fromHex(text: string): Uint8Array | null;
/** Unpadded base64url of `data`. */
export function base64url(data: Bytes): string;
