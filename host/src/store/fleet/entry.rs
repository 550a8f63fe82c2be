//! The fleet's entries as they travel through NATS: the genesis entry that
//! names the fleet and holds its first entry key sealed under the master
//! key, change entries authenticated under the entry key in force at their
//! place, and master-key rotation entries, which start a new entry key and
//! carry the whole keyring sealed under the new master key.
//!
//! Invariant: a replica applies an entry only if its MAC verifies for the
//! sequence it arrived at. NATS holds ciphertext, wrapped keys and token
//! hashes, never a value; and whoever can write to NATS but does not hold
//! the master key can neither forge an entry (a `reveal` grant, an admin
//! token with a known hash) nor replay an old one at a new place (the MAC
//! binds the sequence). Deleting entries is seen as a gap, and a replica
//! stops there rather than skip one.

use crate::crypto::AesKey;
use crate::store::StoreError;
use crate::store::replication::{ChangeSet, Value};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The additional data the entry key is sealed with.
const FLEET_KEY_AAD: &[u8] = b"keyhole/v1/fleet-key";
/// The additional data a keyring is sealed with (with the fleet's id).
const KEYRING_AAD: &[u8] = b"keyhole/v1/fleet-keyring\0";
/// What a genesis entry says it is.
const GENESIS_MARK: &str = "keyhole-fleet/v1";
/// The header carrying an entry's MAC.
pub(super) const MAC_HEADER: &str = "Keyhole-Mac";

/// The fleet's first entry.
#[derive(Serialize, Deserialize)]
pub(super) struct Genesis {
    keyhole: String,
    /// The fleet's identity, so a replica never follows two fleets.
    pub(super) fleet: String,
    /// The entry key, sealed under the master key (base64).
    fleet_key: String,
}

/// The key change entries are authenticated with, known to whoever holds
/// the master key.
pub(super) struct EntryKey(Zeroizing<[u8; 32]>);

impl EntryKey {
    /// A fresh random key.
    pub(super) fn generate() -> Self {
        use rand::Rng as _;
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        EntryKey(key)
    }
}

/// Every entry key the fleet has used, each with the first entry it
/// authenticates: the genesis's, and one more per master-key rotation.
///
/// Why a new entry key at each rotation: the genesis, which seals the
/// first one under the first master key, stays in the log for good; a
/// retired master key would otherwise still open it, and whoever held that
/// key could forge entries for ever. After a rotation, only holders of the
/// new master key know the key later entries are checked with.
pub(super) struct Keyring {
    keys: Vec<(u64, std::sync::Arc<EntryKey>)>,
}

/// A keyring as sealed into a rotation entry.
#[derive(Serialize, Deserialize)]
struct SealedKeyring {
    keys: Vec<(u64, String)>,
}

impl Keyring {
    /// A fleet's keyring before any rotation: the genesis's key, from
    /// entry 2 on.
    pub(super) fn first(key: EntryKey) -> Self {
        Self {
            keys: vec![(2, std::sync::Arc::new(key))],
        }
    }

    /// The key entry `seq` is authenticated with.
    pub(super) fn for_entry(&self, seq: u64) -> std::sync::Arc<EntryKey> {
        let (_, key) = self
            .keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .unwrap_or(&self.keys[0]);
        std::sync::Arc::clone(key)
    }

    /// The genesis's key: nodes' audit chain keys stay sealed under a key
    /// derived from it, so every holder of a current master key reads the
    /// whole trail. (What nodes publish is MAC'd under the newest key, so
    /// a retired master key vouches for nothing new: `keyed`.)
    pub(super) fn origin(&self) -> std::sync::Arc<EntryKey> {
        std::sync::Arc::clone(&self.keys[0].1)
    }

    /// This keyring with a fresh key for the entries from `from` on.
    pub(super) fn rotated(&self, from: u64) -> Self {
        let mut keys = self.keys.clone();
        keys.push((from, std::sync::Arc::new(EntryKey::generate())));
        Self { keys }
    }

    /// Whether `self` and `other` hold the same keys at the same places as
    /// far as both go (a rotation entry's keyring must continue the one a
    /// replica holds, or be the start of it).
    pub(super) fn agrees_with(&self, other: &Keyring) -> bool {
        self.keys
            .iter()
            .zip(&other.keys)
            .all(|((a, ka), (b, kb))| a == b && ka.0.as_ref() == kb.0.as_ref())
    }

    /// The newest key and the first entry it authenticates: what this
    /// replica keys what it publishes besides entries with.
    pub(super) fn newest(&self) -> (u64, std::sync::Arc<EntryKey>) {
        let (from, key) = self.keys.last().expect("a keyring is never empty");
        (*from, std::sync::Arc::clone(key))
    }

    /// The key that authenticates entries from `from` on, if this keyring
    /// has one starting there.
    pub(super) fn starting_at(&self, from: u64) -> Option<std::sync::Arc<EntryKey>> {
        self.keys
            .iter()
            .find(|(f, _)| *f == from)
            .map(|(_, key)| std::sync::Arc::clone(key))
    }

    /// Where the key after the one starting at `from` starts: the entry
    /// after the rotation that retired it, if one did.
    pub(super) fn successor_of(&self, from: u64) -> Option<u64> {
        self.keys.iter().map(|(f, _)| *f).find(|f| *f > from)
    }

    /// How many keys it holds.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The first entry the newest key authenticates.
    pub(super) fn newest_from(&self) -> u64 {
        self.keys.last().map_or(2, |(from, _)| *from)
    }

    /// The keyring sealed under `master` for fleet `fleet`.
    pub(super) fn seal(&self, master: &AesKey, fleet: &str) -> Vec<u8> {
        use base64::Engine as _;
        let plain = SealedKeyring {
            keys: self
                .keys
                .iter()
                .map(|(from, key)| {
                    (
                        *from,
                        base64::engine::general_purpose::STANDARD.encode(key.0.as_ref()),
                    )
                })
                .collect(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&plain).expect("plain data"));
        master.seal(&json, &keyring_aad(fleet))
    }

    /// The keyring `sealed` holds, if `master` opens it for `fleet`.
    pub(super) fn open(sealed: &[u8], master: &AesKey, fleet: &str) -> Option<Self> {
        use base64::Engine as _;
        let json = master.open(sealed, &keyring_aad(fleet)).ok()?;
        let plain: SealedKeyring = serde_json::from_slice(&json).ok()?;
        let mut keys = Vec::with_capacity(plain.keys.len());
        for (from, text) in &plain.keys {
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?,
            );
            let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
            keys.push((*from, std::sync::Arc::new(EntryKey(Zeroizing::new(key)))));
        }
        let ordered = keys.windows(2).all(|w| w[0].0 < w[1].0);
        (!keys.is_empty() && keys[0].0 == 2 && ordered).then_some(Self { keys })
    }
}

// Its encoded keys are zeroed before their memory is freed.
impl Drop for SealedKeyring {
    fn drop(&mut self) {
        for (_, text) in &mut self.keys {
            zeroize::Zeroize::zeroize(text);
        }
    }
}

fn keyring_aad(fleet: &str) -> Vec<u8> {
    [KEYRING_AAD, fleet.as_bytes()].concat()
}

/// A master-key rotation as it travels: the change re-wrapping every data
/// key, the key check sealed under the new master key (how a replica knows
/// whether a key it holds is the new one), and the fleet's keyring, with
/// the key of the entries after this one, sealed under the new master key.
#[derive(Serialize, Deserialize)]
pub(super) struct RotationEntry {
    /// The rows the rotation changed.
    pub(super) change: ChangeSet,
    /// The key check under the new master key (base64).
    key_check: String,
    /// The keyring under the new master key (base64).
    keyring: String,
}

impl RotationEntry {
    /// A rotation entry.
    pub(super) fn new(change: ChangeSet, key_check: &[u8], sealed_keyring: &[u8]) -> Self {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            change,
            key_check: b64.encode(key_check),
            keyring: b64.encode(sealed_keyring),
        }
    }

    /// Reads one.
    pub(super) fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    /// The key check under the new master key.
    pub(super) fn key_check(&self) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.key_check)
            .unwrap_or_default()
    }

    /// The keyring, if `master` is the new master key.
    pub(super) fn keyring(&self, master: &AesKey, fleet: &str) -> Option<Keyring> {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.keyring)
            .ok()?;
        Keyring::open(&sealed, master, fleet)
    }
}

impl Genesis {
    /// A new fleet's genesis, with a fresh identity and entry key.
    pub(super) fn new(master: &AesKey) -> (Self, EntryKey) {
        use base64::Engine as _;
        use rand::Rng as _;
        let key = EntryKey::generate();
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let genesis = Genesis {
            keyhole: GENESIS_MARK.into(),
            fleet: hex::encode(id),
            fleet_key: base64::engine::general_purpose::STANDARD
                .encode(master.seal(key.0.as_ref(), FLEET_KEY_AAD)),
        };
        (genesis, key)
    }

    /// Reads a genesis entry.
    pub(super) fn decode(payload: &[u8]) -> Result<Self, StoreError> {
        let genesis: Genesis = serde_json::from_slice(payload).map_err(|_| not_keyhole())?;
        if genesis.keyhole != GENESIS_MARK {
            return Err(not_keyhole());
        }
        Ok(genesis)
    }

    /// The entry key, if `master` is the key the fleet was created with.
    pub(super) fn open(&self, master: &AesKey) -> Result<EntryKey, StoreError> {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.fleet_key)
            .map_err(|_| not_keyhole())?;
        let opened = master.open(&sealed, FLEET_KEY_AAD).map_err(|_| {
            StoreError::Cluster(format!(
                "the cluster was created under another master key, and no master-key rotation of it was to a key this node holds: supply the fleet's current master key ({}; during a rotation, the new one in {})",
                crate::crypto::master_key::MASTER_KEY_ENV,
                crate::crypto::master_key::NEW_MASTER_KEY_ENV
            ))
        })?;
        let key: [u8; 32] = opened.as_slice().try_into().map_err(|_| not_keyhole())?;
        Ok(EntryKey(Zeroizing::new(key)))
    }

    /// The payload.
    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data")
    }
}

fn not_keyhole() -> StoreError {
    StoreError::Cluster(
        "the cluster's state stream does not begin with a Keyhole fleet's genesis entry: is another application using it?".into(),
    )
}

impl EntryKey {
    /// The MAC of `payload` as entry `seq` of fleet `fleet`.
    pub(super) fn mac(&self, fleet: &str, seq: u64, payload: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(b"keyhole/v1/fleet-entry\0");
        mac.update(fleet.as_bytes());
        mac.update(&[0]);
        mac.update(&seq.to_be_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    /// An AES key for `purpose`, derived from this one: what the fleet
    /// keeps besides its entries (each node's audit chain key) is sealed
    /// under such keys, so whoever holds the master key opens it, and
    /// nobody else.
    pub(super) fn derive(&self, purpose: &str) -> AesKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(b"keyhole/v1/fleet-derived-key\0");
        mac.update(purpose.as_bytes());
        let derived = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        AesKey::from_slice(derived.as_ref()).expect("32 bytes")
    }

    /// The MAC (hex) of `parts`, for `purpose`: what the fleet keeps
    /// besides its entries (nodes' use marks) is authenticated so, keyed
    /// apart from the entries' MACs.
    pub(super) fn tag(&self, purpose: &str, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(b"keyhole/v1/fleet-tag\0");
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `tag` is [`EntryKey::tag`] of `parts` for `purpose`.
    pub(super) fn tag_verifies(&self, purpose: &str, parts: &[&[u8]], tag: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.tag(purpose, parts)
            .as_bytes()
            .ct_eq(tag.as_bytes())
            .into()
    }

    /// Whether `tag` is the MAC of `payload` as entry `seq`.
    pub(super) fn verifies(&self, fleet: &str, seq: u64, payload: &[u8], tag: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.mac(fleet, seq, payload)
            .as_bytes()
            .ct_eq(tag.as_bytes())
            .into()
    }
}

/// A change as it travels: components are not in it (they go to the object
/// store, named by their SHA-256, which stays in the row).
pub(super) fn strip_components(change: &ChangeSet) -> (ChangeSet, Vec<Vec<u8>>) {
    let mut components = Vec::new();
    let mut out = change.clone();
    for row in out.rows.iter_mut().filter(|r| r.table == "functions") {
        if let Some(columns) = row.row.as_mut() {
            columns.retain_mut(|(name, value)| {
                if name == "component" {
                    if let Value::Blob(bytes) = std::mem::replace(value, Value::Null) {
                        components.push(bytes);
                    }
                    false
                } else {
                    true
                }
            });
        }
    }
    (out, components)
}

/// The SHA-256 a function row names for its component.
fn component_digest(columns: &[(String, Value)]) -> Option<String> {
    columns
        .iter()
        .find_map(|(name, value)| match (name.as_str(), value) {
            ("component_sha256", Value::Text(sha)) => Some(sha.clone()),
            _ => None,
        })
}

/// The SHA-256 each function row in `change` names for its component.
pub(super) fn component_digests(change: &ChangeSet) -> Vec<String> {
    change
        .rows
        .iter()
        .filter(|r| r.table == "functions")
        .filter_map(|r| r.row.as_deref())
        .filter_map(component_digest)
        .collect()
}

/// Puts each function's component (fetched by the row's SHA-256 by
/// `fetch`) back into its row.
pub(super) fn restore_components(
    change: &mut ChangeSet,
    mut fetch: impl FnMut(&str) -> Result<Vec<u8>, StoreError>,
) -> Result<(), StoreError> {
    for row in change.rows.iter_mut().filter(|r| r.table == "functions") {
        let Some(columns) = row.row.as_mut() else {
            continue;
        };
        let Some(sha) = component_digest(columns) else {
            return Err(StoreError::Cluster(
                "a fleet entry deploys a function without a component digest".into(),
            ));
        };
        columns.push(("component".into(), Value::Blob(fetch(&sha)?)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_key_opens_only_under_the_fleets_master_key() {
        let master = AesKey::generate();
        let (genesis, key) = Genesis::new(&master);
        let read = Genesis::decode(&genesis.encode()).unwrap();
        let opened = read.open(&master).unwrap();
        assert_eq!(opened.0.as_ref(), key.0.as_ref());
        let err = read.open(&AesKey::generate()).err().unwrap().to_string();
        assert!(err.contains("another master key"), "{err}");
        assert!(Genesis::decode(b"{\"hello\":1}").is_err());
    }

    #[test]
    fn a_mac_binds_the_fleet_the_sequence_and_the_payload() {
        let (genesis, key) = Genesis::new(&AesKey::generate());
        let tag = key.mac(&genesis.fleet, 7, b"payload");
        assert!(key.verifies(&genesis.fleet, 7, b"payload", &tag));
        assert!(
            !key.verifies(&genesis.fleet, 8, b"payload", &tag),
            "replayed elsewhere"
        );
        assert!(
            !key.verifies(&genesis.fleet, 7, b"payloaD", &tag),
            "changed"
        );
        assert!(
            !key.verifies("another", 7, b"payload", &tag),
            "from another fleet"
        );
        let (_, other) = Genesis::new(&AesKey::generate());
        assert!(
            !other.verifies(&genesis.fleet, 7, b"payload", &tag),
            "forged without the key"
        );
    }

    #[test]
    fn a_rotation_starts_a_key_only_holders_of_the_new_master_key_learn() {
        let (genesis, first) = Genesis::new(&AesKey::generate());
        let fleet = &genesis.fleet;
        let keys = Keyring::first(first);
        let rotated = keys.rotated(10);
        assert!(rotated.agrees_with(&keys) && keys.agrees_with(&rotated));
        assert_eq!((rotated.len(), rotated.newest_from()), (2, 10));
        // Entries before the rotation keep their key; after it, the new one.
        let tag = rotated.for_entry(9).mac(fleet, 9, b"p");
        assert!(keys.for_entry(9).verifies(fleet, 9, b"p", &tag));
        let tag = rotated.for_entry(10).mac(fleet, 10, b"p");
        assert!(
            !keys.for_entry(10).verifies(fleet, 10, b"p", &tag),
            "a retired key cannot authenticate entries after the rotation"
        );
        assert!(rotated.for_entry(12).verifies(
            fleet,
            12,
            b"p",
            &rotated.for_entry(12).mac(fleet, 12, b"p")
        ));
        // Sealed under the new master key for this fleet, and nothing else.
        let new = AesKey::generate();
        let sealed = rotated.seal(&new, fleet);
        let opened = Keyring::open(&sealed, &new, fleet).unwrap();
        assert!(opened.agrees_with(&rotated) && opened.len() == 2);
        assert!(Keyring::open(&sealed, &AesKey::generate(), fleet).is_none());
        assert!(Keyring::open(&sealed, &new, "another fleet").is_none());
        // Another rotation's keyring does not agree with this one.
        let elsewhere = keys.rotated(10);
        assert!(!elsewhere.agrees_with(&rotated));
        let entry = RotationEntry::new(ChangeSet::default(), b"check", &sealed);
        let read = RotationEntry::decode(&serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(read.key_check(), b"check");
        assert!(read.keyring(&new, fleet).is_some());
    }
}
