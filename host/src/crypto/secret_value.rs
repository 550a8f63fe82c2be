//! Secret bytes as the host holds them: zeroized on drop, never printed.

use secrecy::{ExposeSecret, SecretBox};
use std::fmt;
use zeroize::Zeroize;

/// The plaintext of one secret version, held only in host memory.
///
/// The bytes are wiped when the value is dropped, and `Debug` prints a
/// placeholder, so a value that ends up in a log line or a panic message
/// shows nothing of the secret. Reading the bytes takes an explicit
/// [`SecretValue::expose`], which makes every use easy to audit.
pub struct SecretValue(SecretBox<[u8]>);

impl SecretValue {
    /// Takes ownership of `bytes`. When the vector has spare capacity, the
    /// bytes are copied into an exact-size buffer and the vector is wiped, so
    /// no unwiped copy is left behind by a reallocation.
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let exact: Box<[u8]> = if bytes.capacity() == bytes.len() {
            bytes.into_boxed_slice()
        } else {
            let copy = Box::from(bytes.as_slice());
            bytes.zeroize();
            copy
        };
        Self(SecretBox::new(exact))
    }

    /// The secret's bytes. Callers must not copy them anywhere that outlives
    /// the use at hand (logs, errors, guest memory without `reveal`).
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// How many bytes the secret holds (not secret in itself).
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// Whether the secret holds no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([REDACTED; {} bytes])", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let value = SecretValue::new(b"hunter2-super-secret".to_vec());
        let printed = format!("{value:?} {value:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("REDACTED"));
        assert_eq!(value.expose(), b"hunter2-super-secret");
    }
}
