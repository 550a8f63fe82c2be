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
    /// An empty or oversized binding name or input.
    InvalidArgument(String),
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
    /// time by the host. Needs the `hmac` grant.
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
}
