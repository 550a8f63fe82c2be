//! Noticing source changes: a fingerprint (path, size, modification time)
//! of every file in the function's folder but build output, taken a few
//! times a second.
//!
//! Polling rather than inotify: a function's folder is small, so a scan
//! costs microseconds, and it behaves the same on every filesystem —
//! network mounts, containers' bind mounts and editors that replace a file
//! instead of writing it — with no watch limits to run into.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The state of a folder's files, to compare with a later one.
pub type Fingerprint = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The fingerprint of `dir`, skipping what is named in `ignored` (at any
/// depth), editor droppings (`.swp`, `~` backups) and the files a new
/// project's `.gitignore` treats as secrets (`*.secret`, `*.key`): never
/// sources.
pub fn fingerprint(dir: &Path, ignored: &[&str]) -> Fingerprint {
    let mut found = Fingerprint::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let dropping = [".swp", "~", ".secret", ".key"]
                .iter()
                .any(|end| name.ends_with(end));
            if ignored.contains(&name.as_ref()) || dropping {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                found.insert(entry.path(), stamp(&meta));
            }
        }
    }
    found
}

/// What a fingerprint keeps of one file: its size and modification time.
pub fn stamp(meta: &std::fs::Metadata) -> (u64, Option<SystemTime>) {
    (meta.len(), meta.modified().ok())
}
