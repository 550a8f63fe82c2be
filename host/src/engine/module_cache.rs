//! Compiled components kept on disk, so that a node starts, and loads a
//! newly deployed function, without compiling it again.
//!
//! An entry is named by the component's SHA-256 and a hash of the engine
//! (wasmtime's version and every setting that changes generated code), so
//! a different build or configuration simply misses and compiles afresh.
//! Loading a compiled artifact is trusted code execution — wasmtime maps
//! its machine code as-is — so every entry carries an HMAC-SHA256 tag under
//! a key derived from the store's secret audit-chain key, and an entry whose
//! tag does not verify is never handed to wasmtime: it is logged, removed and
//! recompiled. Entries are written to a temporary file and renamed, so a
//! crash leaves either the whole entry or none.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

/// The first bytes of every entry: format and version.
const MAGIC: &[u8; 8] = b"KHCMC01\n";
/// Length of the tag after the magic.
const TAG_LEN: usize = 32;
/// File name suffix of entries.
const SUFFIX: &str = ".cwasm";

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Wasmtime could not serialize the component.
    #[error("serializing the compiled component: {0}")]
    Serialize(String),
    /// The file system refused.
    #[error("writing the compiled-module cache in {path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A folder of authenticated compiled components for one engine.
pub struct ModuleCache {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
    engine_tag: String,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .field("engine_tag", &self.engine_tag)
            .finish_non_exhaustive()
    }
}

impl ModuleCache {
    /// A cache in `dir` (created when first written) for components
    /// compiled by `engine`, authenticated under `key`.
    pub fn new(dir: impl Into<PathBuf>, key: Zeroizing<[u8; 32]>, engine: &Engine) -> Self {
        Self {
            dir: dir.into(),
            key,
            engine_tag: engine_tag(engine),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}{SUFFIX}", self.engine_tag))
    }

    fn tag(&self, sha256: &str, artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&*self.key).expect("any key length");
        mac.update(MAGIC);
        mac.update(sha256.as_bytes());
        mac.update(self.engine_tag.as_bytes());
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }

    /// The cached compilation of the component whose SHA-256 is `sha256`,
    /// if there is one that verifies and that this engine accepts. A bad
    /// entry is logged and removed.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a compiled-module cache entry (compiling instead): {e}");
                return None;
            }
        };
        let Some(artifact) = self.verified(sha256, &bytes) else {
            tracing::warn!(
                path = %path.display(),
                "compiled-module cache entry failed its integrity check (damaged, or written under another store's key): removing it and compiling instead"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: `artifact` is exactly what `Component::serialize` produced
        // for this component on an engine with the same configuration: its
        // HMAC under this store's secret key verified, so nobody without
        // that key wrote or changed it. Wasmtime still checks its version
        // and settings and refuses a mismatch.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "compiled-module cache entry refused by wasmtime (compiling instead): {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The artifact inside `bytes` if its tag verifies.
    fn verified<'b>(&self, sha256: &str, bytes: &'b [u8]) -> Option<&'b [u8]> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < TAG_LEN {
            return None;
        }
        let (tag, artifact) = rest.split_at(TAG_LEN);
        bool::from(self.tag(sha256, artifact).ct_eq(tag)).then_some(artifact)
    }

    /// Saves the compilation of the component whose SHA-256 is `sha256`.
    pub fn store(&self, sha256: &str, component: &Component) -> Result<(), CacheError> {
        let artifact = component
            .serialize()
            .map_err(|e| CacheError::Serialize(format!("{e:#}")))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.path(sha256);
        // Unique per process and call, so concurrent writers (a deploy and
        // a node) never write into one temporary file.
        let temporary = self.dir.join(format!(
            ".{sha256}.{}.{}.tmp",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            file.write_all(MAGIC)?;
            file.write_all(&self.tag(sha256, &artifact))?;
            file.write_all(&artifact)?;
            file.sync_data()?;
            std::fs::rename(&temporary, &path)
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(CacheError::Io { path, source });
        }
        Ok(())
    }

    /// Removes the entry for the component whose SHA-256 is `sha256`, if
    /// there is one (a later load compiles it again).
    pub fn remove(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.path(sha256));
    }

    /// Removes this engine's entries for components not in `live` (their
    /// SHA-256s); entries of other engines are left to those engines.
    /// Returns how many were removed.
    pub fn retain(&self, live: &std::collections::HashSet<&str>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let ours = format!("-{}{SUFFIX}", self.engine_tag);
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(sha) = name.to_str().and_then(|n| n.strip_suffix(&ours)) else {
                continue;
            };
            if !live.contains(sha) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// A short, stable name for everything about `engine` that decides whether
/// a compiled artifact fits it.
fn engine_tag(engine: &Engine) -> String {
    // SipHash with fixed keys: the same build and configuration always give
    // the same tag; any other build at worst misses the cache.
    #[allow(
        deprecated,
        reason = "SipHash with fixed keys is what a stable tag needs; its replacement is randomly keyed"
    )]
    let mut hasher = std::hash::SipHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(engine: &Engine) -> Component {
        Component::new(engine, wat::parse_str("(component)").unwrap()).unwrap()
    }

    fn key(byte: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([byte; 32])
    }

    #[test]
    fn round_trips_and_refuses_a_changed_or_foreign_entry() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path(), key(1), &engine);
        assert!(cache.load(&engine, "abc").is_none(), "empty cache misses");
        cache.store("abc", &component(&engine)).unwrap();
        assert!(cache.load(&engine, "abc").is_some());
        assert!(cache.load(&engine, "abd").is_none(), "keyed by hash");

        // Another store's key: refused and removed.
        let foreign = ModuleCache::new(dir.path(), key(2), &engine);
        assert!(foreign.load(&engine, "abc").is_none());
        assert!(!cache.path("abc").exists(), "a bad entry is removed");

        // One flipped byte anywhere: refused.
        cache.store("abc", &component(&engine)).unwrap();
        let path = cache.path("abc");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.load(&engine, "abc").is_none());

        // Truncated to the magic: refused.
        std::fs::write(&path, MAGIC).unwrap();
        assert!(cache.load(&engine, "abc").is_none());
    }

    #[test]
    fn another_engine_configuration_misses() {
        let engine = Engine::default();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        ModuleCache::new(dir.path(), key(1), &engine)
            .store("abc", &component(&engine))
            .unwrap();
        assert!(
            ModuleCache::new(dir.path(), key(1), &other)
                .load(&other, "abc")
                .is_none()
        );
    }

    #[test]
    fn retain_removes_only_this_engines_dead_entries() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path(), key(1), &engine);
        cache.store("live", &component(&engine)).unwrap();
        cache.store("dead", &component(&engine)).unwrap();
        std::fs::write(dir.path().join("dead-0000000000000000.cwasm"), b"x").unwrap();
        let live = ["live"].into_iter().collect();
        assert_eq!(cache.retain(&live), 1);
        assert!(cache.load(&engine, "live").is_some());
        assert!(cache.load(&engine, "dead").is_none());
        assert!(dir.path().join("dead-0000000000000000.cwasm").exists());
    }
}
