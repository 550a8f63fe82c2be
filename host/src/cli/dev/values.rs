//! The dev store's key and its secret values.
//!
//! Invariant: `keyhole dev` writes no secret value in clear. Values go only
//! into the dev store, which is sealed like a real one under a key kept in
//! the user's configuration folder — not in the project, so a copied or
//! committed project folder opens nothing. A value comes from the
//! developer's own `.keyhole/dev-secrets.toml` (kept out of git by the
//! project's `.gitignore`) or from a prompt that does not echo it.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyhole_host::crypto::AesKey;
use keyhole_host::crypto::master_key;
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// The file a developer may put local values in, relative to the project.
pub const VALUES_FILE: &str = ".keyhole/dev-secrets.toml";

/// The folder of the user's Keyhole configuration: `$KEYHOLE_CONFIG_DIR`,
/// else `$XDG_CONFIG_HOME/keyhole`, else `~/.config/keyhole`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os("KEYHOLE_CONFIG_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(dir).join("keyhole")
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".config/keyhole")
    } else {
        bail!("no configuration folder for the dev store's key: set KEYHOLE_CONFIG_DIR (or HOME)")
    };
    // A relative folder would be inside the project: its key beside the
    // store it opens.
    if dir.is_relative() {
        bail!(
            "the configuration folder {} is relative: give an absolute path (KEYHOLE_CONFIG_DIR or XDG_CONFIG_HOME)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The dev store's master key (base64), from `dev-master.key` in the
/// configuration folder, made (owner-only) on first use. One key serves
/// every project's dev store of this user.
pub fn dev_master_key() -> anyhow::Result<Zeroizing<String>> {
    let dir = config_dir()?;
    keyhole_host::store::private_dir(&dir)
        .with_context(|| format!("making the configuration folder {}", dir.display()))?;
    let path = dir.join("dev-master.key");
    let key = if path.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {mode:o}): `chmod 600` it, or remove it to have keyhole dev make a new one",
                    path.display()
                );
            }
        }
        master_key::read_key_file(&path).with_context(|| {
            format!(
                "remove {} to have keyhole dev make a new key (the dev stores it sealed then open no more)",
                path.display()
            )
        })?
    } else {
        let key = AesKey::generate();
        master_key::write_new_key_file(&path, &key)
            .with_context(|| format!("creating {}", path.display()))?;
        eprintln!("keyhole dev: made the dev stores' key {}", path.display());
        key
    };
    Ok(Zeroizing::new(STANDARD.encode(key.expose())))
}

/// A binding's value as `.keyhole/dev-secrets.toml` gives it: the text, or
/// `{ file = "path" }` (relative to the project) for bytes kept in a file.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Text(String),
    File { file: PathBuf },
}

/// Where a binding's local value comes from.
pub enum Value {
    /// The bytes themselves (from the values file's text, or the prompt).
    Bytes(Zeroizing<Vec<u8>>),
    /// A file holding them, byte for byte.
    File(PathBuf),
}

/// The values in the project's `.keyhole/dev-secrets.toml`, by binding
/// (none when there is no such file).
pub fn values_from_file(project: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let path = project.join(VALUES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The parser's message may quote the line: never show it, it may hold
    // a value. The position is enough to find the mistake.
    let entries: BTreeMap<String, Entry> = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| format!(" at line {}", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{}{at} is not `BINDING = \"value\"` or `BINDING = {{ file = \"path\" }}` lines",
            path.display()
        )
    })?;
    let mut values = BTreeMap::new();
    for (binding, entry) in entries {
        let value = match entry {
            Entry::Text(text) if text.is_empty() => {
                bail!("{}: {binding}'s value is empty", path.display())
            }
            Entry::Text(text) => Value::Bytes(Zeroizing::new(text.into_bytes())),
            Entry::File { file } => Value::File(project.join(file)),
        };
        values.insert(binding, value);
    }
    Ok(values)
}

/// Asks on the terminal for `binding`'s value, without echoing it; `None`
/// when there is no terminal to ask on.
///
/// A shell reads the line: it turns the terminal's echo off, and turns it
/// back on whatever happens, Ctrl-C included (its trap). Where echo cannot
/// be turned off, nothing is read: the value would show on the screen.
pub fn prompt(binding: &str, operations: &str) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let Ok(tty) = std::fs::File::open("/dev/tty") else {
        return Ok(None);
    };
    eprint!(
        "keyhole dev: a value for {binding} ({operations}; kept only in the sealed dev store): "
    );
    let _ = std::io::stderr().flush();
    let read = Command::new("sh")
        .args([
            "-c",
            "trap 'stty echo; exit 130' INT TERM; stty -echo || exit 3; IFS= read -r value; status=$?; stty echo; [ $status -eq 0 ] && printf '%s' \"$value\"",
        ])
        .stdin(Stdio::from(tty))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .context("asking for the value (sh and stty)")?;
    eprintln!();
    let value = Zeroizing::new(read.stdout);
    match read.status.code() {
        Some(0) if !value.is_empty() => Ok(Some(value)),
        Some(0) => bail!("no value given for {binding}"),
        Some(3) => bail!(
            "cannot turn the terminal's echo off to ask for {binding}: put it in {VALUES_FILE}"
        ),
        _ => bail!("no value given for {binding} (the prompt was interrupted)"),
    }
}
