//! The operations a grant can allow on a secret.

use std::fmt;
use std::str::FromStr;

/// One thing a function may do with a secret handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Compute and verify HMAC-SHA256 with the secret as key, on the host.
    Hmac,
    /// Sign with the secret as private key, and read its public key.
    Sign,
    /// Encrypt and decrypt with the secret as AES-256-GCM key.
    Seal,
    /// Have the host put the secret into outgoing request headers bound for
    /// the grant's egress hosts.
    Inject,
    /// Copy the secret's bytes into guest memory.
    Reveal,
}

impl Operation {
    /// Every operation, in display order.
    pub const ALL: [Operation; 5] = [
        Operation::Hmac,
        Operation::Sign,
        Operation::Seal,
        Operation::Inject,
        Operation::Reveal,
    ];

    /// The name used in manifests, flags and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Hmac => "hmac",
            Operation::Sign => "sign",
            Operation::Seal => "seal",
            Operation::Inject => "inject",
            Operation::Reveal => "reveal",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Operation::Hmac => 1,
            Operation::Reveal => 2,
            Operation::Sign => 4,
            Operation::Seal => 8,
            Operation::Inject => 16,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation name that Keyhole does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation `{0}` (known: hmac, sign, seal, inject, reveal)")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s.trim())
            .ok_or_else(|| UnknownOperation(s.trim().to_owned()))
    }
}

/// A set of operations, as a grant allows or a manifest requests them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OperationSet(u8);

impl OperationSet {
    /// The set with nothing in it: deny everything.
    pub const EMPTY: OperationSet = OperationSet(0);

    /// Every operation there is.
    pub fn all() -> Self {
        Operation::ALL.into_iter().collect()
    }

    /// The set as bits, for keeping in an atomic
    /// ([`crate::secrets::standing::Standing`]); [`OperationSet::from_bits`] reads
    /// it back.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set [`OperationSet::bits`] returned `bits` for.
    pub fn from_bits(bits: u8) -> Self {
        OperationSet(bits)
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// The set plus `op`.
    pub fn with(self, op: Operation) -> Self {
        OperationSet(self.0 | op.bit())
    }

    /// What both sets allow.
    pub fn intersect(self, other: OperationSet) -> Self {
        OperationSet(self.0 & other.0)
    }

    /// Whether every operation in `self` is also in `other`.
    pub fn is_subset_of(self, other: OperationSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set allows nothing.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The operations in the set, in display order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }

    /// Parses a comma-separated list such as `hmac,sign`.
    pub fn parse_list(list: &str) -> Result<Self, UnknownOperation> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .try_fold(OperationSet::EMPTY, |set, s| Ok(set.with(s.parse()?)))
    }
}

impl FromIterator<Operation> for OperationSet {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        iter.into_iter()
            .fold(OperationSet::EMPTY, OperationSet::with)
    }
}

impl fmt::Display for OperationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let names: Vec<&str> = self.iter().map(Operation::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A list of operation names, such as `["hmac", "sign"]`.
impl serde::Serialize for OperationSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Operation::as_str))
    }
}

impl<'de> serde::Deserialize<'de> for OperationSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names: Vec<String> = serde::Deserialize::deserialize(d)?;
        names
            .iter()
            .map(|name| name.parse::<Operation>())
            .collect::<Result<OperationSet, _>>()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for OperationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperationSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lists() {
        let set = OperationSet::parse_list("reveal, hmac").unwrap();
        assert!(set.contains(Operation::Hmac) && set.contains(Operation::Reveal));
        assert!(!set.contains(Operation::Sign));
        assert_eq!(set.to_string(), "hmac,reveal");
        let all = OperationSet::parse_list("inject,reveal,seal,sign,hmac").unwrap();
        assert_eq!(all.to_string(), "hmac,sign,seal,inject,reveal");
        assert_eq!(all.iter().count(), Operation::ALL.len());
        assert_eq!(
            OperationSet::parse_list("hmac,encrypt").unwrap_err().0,
            "encrypt"
        );
    }

    #[test]
    fn set_algebra() {
        let hmac = OperationSet::EMPTY.with(Operation::Hmac);
        let both = hmac.with(Operation::Reveal);
        assert!(hmac.is_subset_of(both) && !both.is_subset_of(hmac));
        assert_eq!(both.intersect(hmac), hmac);
        assert_eq!(OperationSet::EMPTY.to_string(), "(none)");
    }
}
