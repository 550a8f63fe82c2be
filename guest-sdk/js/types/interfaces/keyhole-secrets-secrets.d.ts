declare module 'keyhole:secrets/secrets@0.1.1' {
  /**
   * Open the secret bound to `binding` for this function.
   */
  export function get(binding: string): Secret;
  /**
   * Why a call was refused. The text explains; it never holds secret bytes.
   */
  export type Error = ErrorNotGranted | ErrorDenied | ErrorUnavailable | ErrorInvalidArgument;
  /**
   * This function has no grant for that binding.
   */
  export interface ErrorNotGranted {
    tag: 'not-granted',
    val: string,
  }
  /**
   * The binding is granted, but not for this operation.
   */
  export interface ErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The bound secret has no usable version (removed, or unreadable).
   */
  export interface ErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
  /**
   * A bad input: an empty or oversized binding name, a key of the
   * wrong kind for the operation, a ciphertext that fails to open.
   */
  export interface ErrorInvalidArgument {
    tag: 'invalid-argument',
    val: string,
  }
  /**
   * A signature algorithm the host signs with (`sign`).
   * # Variants
   * 
   * ## `"ed25519"`
   * 
   * Ed25519 (JWT `EdDSA`): 64-byte signatures. Key: PKCS#8 PEM.
   * ## `"ecdsa-p256-sha256"`
   * 
   * ECDSA on P-256 with SHA-256 (JWT `ES256`): 64-byte `r || s`
   * signatures. Key: PKCS#8 PEM.
   * ## `"rsa-pkcs1-sha256"`
   * 
   * RSASSA-PKCS1-v1_5 with SHA-256 (JWT `RS256`). Key: PKCS#8 or
   * PKCS#1 PEM, 2048 to 4096 bits.
   */
  export type Algorithm = 'ed25519' | 'ecdsa-p256-sha256' | 'rsa-pkcs1-sha256';
  
  export class Secret implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * The binding name this handle was opened with.
    */
    name(): string;
    /**
    * The version of the secret this handle uses.
    */
    version(): number;
    /**
    * HMAC-SHA256 of `message` keyed with the secret. Needs the `hmac` grant.
    */
    hmacSha256(message: Uint8Array): Uint8Array;
    /**
    * Whether `tag` is the HMAC-SHA256 of `message`, compared in constant
    * time. Needs the `hmac` grant. During a rotation's grace window, a
    * tag made with the previous version is accepted too.
    */
    verifyHmacSha256(message: Uint8Array, tag: Uint8Array): boolean;
    /**
    * The secret's bytes, copied into guest memory. Needs the `reveal` grant.
    */
    reveal(): Uint8Array;
    /**
    * A signature of `message` with the secret as private key (a PEM
    * key of the algorithm's kind). Needs the `sign` grant.
    */
    sign(algorithm: Algorithm, message: Uint8Array): Uint8Array;
    /**
    * The public half of the secret's private key as SubjectPublicKeyInfo
    * DER; not secret, so anyone may verify. Needs the `sign` grant.
    */
    publicKey(): Uint8Array;
    /**
    * AES-256-GCM encryption of `plaintext` with the secret (32 bytes) as
    * key, authenticating `aad` too. The output is the 12-byte random
    * nonce, then the ciphertext, then the 16-byte tag. Needs the `seal`
    * grant.
    */
    seal(plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
    /**
    * The plaintext of a `seal` output made with the same key and `aad`;
    * a tampered, truncated or foreign input is an error, never garbage.
    * Needs the `seal` grant. During a rotation's grace window, input
    * sealed under the previous version opens too.
    */
    open(ciphertext: Uint8Array, aad: Uint8Array): Uint8Array;
    /**
    * An opaque token standing for the secret, valid only inside this
    * request. In the header values of an outgoing `wasi:http` request
    * the host replaces it with the secret, if the request goes to a
    * host on the grant's egress list; to any other host the request
    * fails and nothing is sent. Never substituted in URLs or bodies.
    * Needs the `inject` grant.
    */
    headerToken(): string;
    [Symbol.dispose](): void;
  }
}
