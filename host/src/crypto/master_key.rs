//! Where the node's master key comes from.
//!
//! Production supplies the key from outside the data directory through
//! `KEYHOLE_MASTER_KEY` (base64 of 32 bytes). Without it, a key file is
//! created in the data directory on first use, readable by its owner only,
//! so a single machine works with no set-up at all.

use crate::crypto::{AesKey, KEY_LEN};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that carries the master key, base64-encoded.
pub const MASTER_KEY_ENV: &str = "KEYHOLE_MASTER_KEY";
/// The key file's name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The environment variable that carries the new key for
/// `keyhole master-key rotate`, base64-encoded.
pub const NEW_MASTER_KEY_ENV: &str = "KEYHOLE_NEW_MASTER_KEY";
/// Where a rotation writes the new key before the store switches to it; it
/// replaces [`MASTER_KEY_FILE`] once the store has committed.
pub const PENDING_KEY_FILE: &str = "master.key.new";
/// Held (locked) by a process rotating the master key, so nothing else
/// mistakes its pending key for the leftover of an interrupted rotation.
/// The kernel releases the lock when the process dies, however it dies.
pub const ROTATION_LOCK_FILE: &str = "master.key.lock";

/// Proof that this process alone is rotating the master key (or repairing
/// an interrupted rotation); released on drop.
#[derive(Debug)]
pub struct RotationLock {
    _file: std::fs::File,
}

/// Takes the rotation lock of the store in `data_dir`, or `None` when
/// another process holds it.
pub fn try_lock_rotation(data_dir: &Path) -> Result<Option<RotationLock>, MasterKeyError> {
    let path = data_dir.join(ROTATION_LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(|source| MasterKeyError::Io {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(RotationLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => Err(MasterKeyError::Io { path, source }),
    }
}

/// Why the master key could not be had. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The environment variable is set but is not base64 of 32 bytes.
    #[error(
        "{MASTER_KEY_ENV} must be the base64 encoding of exactly {KEY_LEN} bytes (generate one with `openssl rand -base64 32`)"
    )]
    BadEnv,
    /// The key file exists but does not hold a valid key.
    #[error(
        "master key file {0} is not the base64 encoding of exactly {KEY_LEN} bytes; restore it from backup"
    )]
    BadFile(PathBuf),
    /// Reading or creating the key file failed.
    #[error("cannot use master key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Where the key in use came from; the node says so once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// From `KEYHOLE_MASTER_KEY`.
    Environment,
    /// From an existing key file.
    File(PathBuf),
    /// Generated just now into a new key file.
    Created(PathBuf),
}

/// Decodes a base64 master key, as found in the environment or a key file.
pub fn decode(text: &str) -> Option<AesKey> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
    AesKey::from_slice(&bytes)
}

/// Loads the master key for the store in `data_dir`: from the environment if
/// set, else from `data_dir/master.key`, creating that file (mode 0600) if
/// it does not exist yet.
pub fn load(data_dir: &Path) -> Result<(AesKey, KeySource), MasterKeyError> {
    if let Some(value) = std::env::var_os(MASTER_KEY_ENV) {
        let value = Zeroizing::new(value.into_string().map_err(|_| MasterKeyError::BadEnv)?);
        return decode(&value)
            .map(|k| (k, KeySource::Environment))
            .ok_or(MasterKeyError::BadEnv);
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    let io = |source| MasterKeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            decode(&text)
                .map(|k| (k, KeySource::File(path.clone())))
                .ok_or_else(|| MasterKeyError::BadFile(path.clone()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = AesKey::generate();
            write_new_key_file(&path, &key).map_err(io)?;
            Ok((key, KeySource::Created(path.clone())))
        }
        Err(e) => Err(io(e)),
    }
}

/// The master key from the environment or the existing key file; never
/// creates one.
pub fn load_existing(data_dir: &Path) -> Result<AesKey, MasterKeyError> {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return load(data_dir).map(|(key, _)| key);
    }
    read_key_file(&data_dir.join(MASTER_KEY_FILE))
}

/// The key a rotation left in [`PENDING_KEY_FILE`], if any.
pub fn load_pending(data_dir: &Path) -> Result<Option<AesKey>, MasterKeyError> {
    let path = data_dir.join(PENDING_KEY_FILE);
    match read_key_file(&path) {
        Ok(key) => Ok(Some(key)),
        Err(MasterKeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The key in the key file at `path` (a store's own, whatever the
/// environment says: `keyhole cluster import` opens a store this way).
pub fn read_key_file(path: &Path) -> Result<AesKey, MasterKeyError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| MasterKeyError::Io {
                path: path.to_owned(),
                source,
            })?,
        );
    decode(&text).ok_or_else(|| MasterKeyError::BadFile(path.to_owned()))
}

/// Writes `key` as the pending key of a rotation, durably, replacing any
/// pending key an earlier, interrupted rotation left.
pub fn write_pending(data_dir: &Path, key: &AesKey) -> Result<(), MasterKeyError> {
    let path = data_dir.join(PENDING_KEY_FILE);
    let io = |source| MasterKeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    write_new_key_file(&path, key).map_err(io)?;
    sync_dir(data_dir).map_err(io)
}

/// Makes the pending key the key file (an atomic rename), once the store
/// is sealed under it.
pub fn promote_pending(data_dir: &Path) -> Result<(), MasterKeyError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    std::fs::rename(data_dir.join(PENDING_KEY_FILE), &path)
        .and_then(|()| sync_dir(data_dir))
        .map_err(|source| MasterKeyError::Io { path, source })
}

/// Removes the pending key of a rotation that never reached the store.
pub fn discard_pending(data_dir: &Path) -> Result<(), MasterKeyError> {
    let path = data_dir.join(PENDING_KEY_FILE);
    std::fs::remove_file(&path)
        .and_then(|()| sync_dir(data_dir))
        .map_err(|source| MasterKeyError::Io { path, source })
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes a fresh key file that only its owner can read; never overwrites.
/// The format [`read_key_file`] reads (`keyhole dev` keeps its dev stores'
/// key this way too).
pub fn write_new_key_file(path: &Path, key: &AesKey) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let encoded = Zeroizing::new(STANDARD.encode(key.expose()));
    file.write_all(encoded.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_key_is_promoted_or_discarded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let old = AesKey::generate();
        write_new_key_file(&dir.path().join(MASTER_KEY_FILE), &old).unwrap();
        assert!(load_pending(dir.path()).unwrap().is_none());
        let new = AesKey::generate();
        write_pending(dir.path(), &new).unwrap();
        // A second, interrupted attempt replaces the first pending key.
        let newer = AesKey::generate();
        write_pending(dir.path(), &newer).unwrap();
        assert_eq!(
            load_pending(dir.path()).unwrap().unwrap().expose(),
            newer.expose()
        );
        discard_pending(dir.path()).unwrap();
        assert!(load_pending(dir.path()).unwrap().is_none());
        write_pending(dir.path(), &new).unwrap();
        promote_pending(dir.path()).unwrap();
        assert!(load_pending(dir.path()).unwrap().is_none());
        let text = std::fs::read_to_string(dir.path().join(MASTER_KEY_FILE)).unwrap();
        assert_eq!(decode(&text).unwrap().expose(), new.expose());
    }

    #[test]
    fn the_rotation_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_lock_rotation(dir.path()).unwrap().expect("free");
        assert!(try_lock_rotation(dir.path()).unwrap().is_none(), "held");
        drop(held);
        assert!(try_lock_rotation(dir.path()).unwrap().is_some(), "released");
    }

    #[test]
    fn decode_accepts_only_32_bytes() {
        assert!(decode(&STANDARD.encode([7u8; 32])).is_some());
        assert!(decode(&STANDARD.encode([7u8; 31])).is_none());
        assert!(decode("not base64!").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let key = AesKey::generate();
        write_new_key_file(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            write_new_key_file(&path, &key).is_err(),
            "must never overwrite a key"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(decode(&text).unwrap().expose(), key.expose());
    }
}
