//! The data directory and the files in it: private to their owner.

use super::StoreError;

/// Creates `dir` (and its parents) readable by its owner only, or checks an
/// existing one: a data directory that others may write to is refused (they
/// could swap the database or the key file), and one that others may read
/// is narrowed to its owner, with a warning.
pub fn private_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(StoreError::InsecureDataDir {
                path: dir.to_owned(),
                mode,
            });
        }
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the data directory was readable by others (mode {mode:o}); narrowed to 700"
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(())
}

/// Creates `file` readable and writable by its owner only if it is missing,
/// or narrows an existing one to that (SQLite gives its journal files the
/// database file's mode).
pub fn private_file(file: &std::path::Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: file.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)
            .map_err(io)?;
        let mode = std::fs::metadata(file).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = io;
    Ok(())
}
