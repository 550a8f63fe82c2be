//! Opening granted secrets and using them through the host.

use crate::bindings::keyhole::secrets::secrets as raw;
use std::fmt;

/// Why the host refused a secrets call. The message explains; it never
/// holds secret bytes.
///
/// ```no_run
/// use keyhole_sdk::secrets::{self, Error};
///
/// match secrets::get("GITHUB_WEBHOOK") {
///     Ok(secret) => println!("opened version {}", secret.version()),
///     Err(Error::NotGranted(why)) => eprintln!("ask an operator for a grant: {why}"),
///     Err(other) => eprintln!("{other}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// This function has no grant for that binding.
    NotGranted(String),
    /// The binding is granted, but not for this operation.
    Denied(String),
    /// The bound secret has no usable version.
    Unavailable(String),
    /// A bad input: an empty or oversized binding name, a key of the wrong
    /// kind for the operation, a ciphertext that does not open.
    InvalidArgument(String),
}

/// A signature algorithm the host signs with, named as JWT names them.
///
/// ```no_run
/// use keyhole_sdk::secrets::{self, Algorithm};
///
/// let key = secrets::get("JWT_KEY")?;
/// let signature = key.sign(Algorithm::Es256, b"header.claims")?;
/// assert_eq!(signature.len(), 64);
/// # Ok::<(), secrets::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (JWT `EdDSA`); the secret is an Ed25519 PKCS#8 PEM key.
    EdDsa,
    /// ECDSA P-256 with SHA-256, 64-byte `r || s` (JWT `ES256`); the secret
    /// is a P-256 PKCS#8 PEM key.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWT `RS256`); the secret is an RSA
    /// PKCS#8 or PKCS#1 PEM key.
    Rs256,
}

impl Algorithm {
    /// The name a JWT header's `alg` uses.
    ///
    /// ```no_run
    /// assert_eq!(keyhole_sdk::secrets::Algorithm::Es256.jwt_name(), "ES256");
    /// ```
    pub fn jwt_name(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }

    fn raw(self) -> raw::Algorithm {
        match self {
            Algorithm::EdDsa => raw::Algorithm::Ed25519,
            Algorithm::Es256 => raw::Algorithm::EcdsaP256Sha256,
            Algorithm::Rs256 => raw::Algorithm::RsaPkcs1Sha256,
        }
    }
}

impl Error {
    /// A short name for the kind of refusal, as the WIT spells it.
    ///
    /// ```no_run
    /// let err = keyhole_sdk::secrets::get("NOPE").unwrap_err();
    /// assert_eq!(err.kind(), "not-granted");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotGranted(_) => "not-granted",
            Error::Denied(_) => "denied",
            Error::Unavailable(_) => "unavailable",
            Error::InvalidArgument(_) => "invalid-argument",
        }
    }

    /// The host's explanation.
    ///
    /// ```no_run
    /// let err = keyhole_sdk::secrets::get("NOPE").unwrap_err();
    /// eprintln!("{}", err.message());
    /// ```
    pub fn message(&self) -> &str {
        match self {
            Error::NotGranted(m)
            | Error::Denied(m)
            | Error::Unavailable(m)
            | Error::InvalidArgument(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Error {}

impl From<raw::Error> for Error {
    fn from(e: raw::Error) -> Self {
        match e {
            raw::Error::NotGranted(m) => Error::NotGranted(m),
            raw::Error::Denied(m) => Error::Denied(m),
            raw::Error::Unavailable(m) => Error::Unavailable(m),
            raw::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        }
    }
}

/// A handle to one version of a granted secret. The host keeps the bytes;
/// dropping the handle releases it.
///
/// ```no_run
/// let secret = keyhole_sdk::secrets::get("GREETING_KEY")?;
/// println!("{} is at version {}", secret.name(), secret.version());
/// # Ok::<(), keyhole_sdk::secrets::Error>(())
/// ```
pub struct Secret(raw::Secret);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name())
            .field("version", &self.version())
            .finish()
    }
}

/// Opens the secret bound to `binding` for this function.
///
/// Fails with [`Error::NotGranted`] unless an operator granted the binding.
///
/// ```no_run
/// let key = keyhole_sdk::secrets::get("GITHUB_WEBHOOK")?;
/// # Ok::<(), keyhole_sdk::secrets::Error>(())
/// ```
pub fn get(binding: &str) -> Result<Secret, Error> {
    raw::get(binding).map(Secret).map_err(Error::from)
}

impl Secret {
    /// The binding name this handle was opened with.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("GITHUB_WEBHOOK")?;
    /// assert_eq!(key.name(), "GITHUB_WEBHOOK");
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// The version of the secret this handle uses.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("GITHUB_WEBHOOK")?;
    /// println!("using version {}", key.version());
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn version(&self) -> u32 {
        self.0.version()
    }

    /// HMAC-SHA256 of `message`, computed by the host with the secret as key.
    /// Needs the `hmac` grant.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("SIGNING_KEY")?;
    /// let tag: Vec<u8> = key.hmac_sha256(b"payload")?;
    /// assert_eq!(tag.len(), 32);
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn hmac_sha256(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.hmac_sha256(message).map_err(Error::from)
    }

    /// Whether `tag` is the HMAC-SHA256 of `message`, compared in constant
    /// time by the host. Needs the `hmac` grant. While a rotation's grace
    /// window is open, a tag made with the previous version passes too, so
    /// a sender that has not switched yet keeps working.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("GITHUB_WEBHOOK")?;
    /// let ok = key.verify_hmac_sha256(b"body", &[0u8; 32])?;
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn verify_hmac_sha256(&self, message: &[u8], tag: &[u8]) -> Result<bool, Error> {
        self.0.verify_hmac_sha256(message, tag).map_err(Error::from)
    }

    /// The secret's bytes, copied into this function's memory. Needs the
    /// `reveal` grant; prefer the host-side operations whenever they do.
    ///
    /// ```no_run
    /// let password = keyhole_sdk::secrets::get("DB_PASSWORD")?.reveal()?;
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn reveal(&self) -> Result<Vec<u8>, Error> {
        self.0.reveal().map_err(Error::from)
    }

    /// A signature of `message`, made by the host with the secret as
    /// private key. Needs the `sign` grant; a key of another kind than
    /// `algorithm` needs is [`Error::InvalidArgument`].
    ///
    /// ```no_run
    /// use keyhole_sdk::secrets::{self, Algorithm};
    ///
    /// let key = secrets::get("RELEASE_KEY")?;
    /// let signature = key.sign(Algorithm::EdDsa, b"artifact digest")?;
    /// # Ok::<(), secrets::Error>(())
    /// ```
    pub fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.sign(algorithm.raw(), message).map_err(Error::from)
    }

    /// The public half of the secret's private key, as SubjectPublicKeyInfo
    /// DER: not secret, so it can be published (e.g. in a JWKS). Needs the
    /// `sign` grant.
    ///
    /// ```no_run
    /// let spki = keyhole_sdk::secrets::get("JWT_KEY")?.public_key()?;
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn public_key(&self) -> Result<Vec<u8>, Error> {
        self.0.public_key().map_err(Error::from)
    }

    /// Encrypts `plaintext` with AES-256-GCM under the secret (a 32-byte
    /// key), authenticating `aad` as well. The output carries its random
    /// nonce: 12 bytes of nonce, the ciphertext, a 16-byte tag. Needs the
    /// `seal` grant.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("COOKIE_KEY")?;
    /// let sealed = key.seal(b"user=42", b"session")?;
    /// assert_eq!(sealed.len(), 12 + 7 + 16);
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.seal(plaintext, aad).map_err(Error::from)
    }

    /// Decrypts what [`Secret::seal`] produced with the same key and `aad`.
    /// A tampered, truncated or foreign input is [`Error::InvalidArgument`],
    /// never garbage. Needs the `seal` grant. While a rotation's grace
    /// window is open, input sealed under the previous version opens too.
    ///
    /// ```no_run
    /// let key = keyhole_sdk::secrets::get("COOKIE_KEY")?;
    /// let sealed = key.seal(b"user=42", b"session")?;
    /// assert_eq!(key.open(&sealed, b"session")?, b"user=42");
    /// assert!(key.open(&sealed, b"another aad").is_err());
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.open(sealed, aad).map_err(Error::from)
    }

    /// An opaque token that stands for the secret in the header values of
    /// outgoing requests made during this request: the host puts the real
    /// value in its place, and only toward hosts on the grant's egress list
    /// (to any other host, sending fails and nothing is sent). Needs the
    /// `inject` grant.
    ///
    /// ```no_run
    /// let token = keyhole_sdk::secrets::get("UPSTREAM_TOKEN")?.header_token()?;
    /// let authorization = format!("Bearer {token}");
    /// // ...set it as the `authorization` header of an outgoing request.
    /// # Ok::<(), keyhole_sdk::secrets::Error>(())
    /// ```
    pub fn header_token(&self) -> Result<String, Error> {
        self.0.header_token().map_err(Error::from)
    }
}
