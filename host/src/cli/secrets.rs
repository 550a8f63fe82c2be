//! `keyhole secret …`: the operator's commands for stored secrets.

use super::{Access, open_store, output};
use anyhow::{Context, bail};
use clap::Subcommand;
use keyhole_host::keys::KeyKind;
use keyhole_host::names;
use keyhole_host::secret_value::SecretValue;
use keyhole_host::store::Store;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The largest secret value accepted.
const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a new version of a secret, read from standard input (never from
    /// the command line, where it would land in shell history).
    Put {
        /// The secret's name in the store, e.g. gh-webhook-prod.
        name: String,
        /// Read the value from this file, byte for byte, instead of stdin.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
        /// What the value is, checked before anything is stored: opaque (any
        /// bytes), aes-256 (exactly 32 bytes), ed25519, ecdsa-p256 or rsa (a
        /// PEM private key of that kind).
        #[arg(long, value_name = "KIND", default_value = "opaque")]
        kind: KeyKind,
    },
    /// List secrets: names, kinds, versions and dates, never values.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret and all its versions.
    Rm {
        /// The secret's name.
        name: String,
    },
}

/// Runs one `keyhole secret …` command.
pub fn run(data: &Path, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Put {
            name,
            from_file,
            kind,
        } => put(data, &name, from_file.as_deref(), kind),
        SecretCommand::List { json } => list(data, json),
        SecretCommand::Rm { name } => remove(data, &name),
    }
}

fn put(data: &Path, name: &str, from_file: Option<&Path>, kind: KeyKind) -> anyhow::Result<()> {
    names::validate("secret", name)?;
    let value = read_value(from_file)?;
    if let Err(e) = kind.validate(value.expose()) {
        let hint = match (kind, from_file) {
            (KeyKind::Aes256, None) => {
                "\nhint: standard input loses one trailing newline; pass raw key bytes with --from-file"
            }
            (KeyKind::Aes256, Some(_)) => {
                "\nhint: the file must hold the 32 raw key bytes, not hex or base64 text"
            }
            _ => "",
        };
        bail!("not a valid {kind} key: {e}; nothing was stored{hint}");
    }
    let store = open_store(data, Access::CreateIfMissing)?;
    let version = store.put_secret(name, &value, kind)?;
    println!(
        "stored secret `{name}` version {version} ({} bytes, {kind})",
        value.len()
    );
    Ok(())
}

/// Reads a secret value from `from_file` (exact bytes) or stdin (one
/// trailing newline dropped, as `echo` and editors add one).
fn read_value(from_file: Option<&Path>) -> anyhow::Result<SecretValue> {
    // Sized up front so reading never reallocates and leaves an unwiped copy behind.
    let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    match from_file {
        Some(path) => {
            let mut file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            file.by_ref()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut buffer)
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Enter the secret value, then press Ctrl-D:");
            }
            stdin
                .lock()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut buffer)
                .context("cannot read standard input")?;
            let newline = if buffer.ends_with(b"\r\n") {
                2
            } else {
                usize::from(buffer.ends_with(b"\n"))
            };
            let len = buffer.len() - newline;
            buffer.truncate(len);
        }
    }
    if buffer.len() > MAX_SECRET_BYTES {
        bail!(
            "the value is larger than {} KiB; nothing was stored",
            MAX_SECRET_BYTES / 1024
        );
    }
    if buffer.is_empty() {
        bail!("the value is empty; nothing was stored");
    }
    Ok(SecretValue::new(std::mem::take(&mut *buffer)))
}

fn list(data: &Path, json: bool) -> anyhow::Result<()> {
    let secrets = open_store(data, Access::Existing)?.list_secrets()?;
    if json {
        return output::json(&secrets);
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.to_string(),
                s.current_version.to_string(),
                s.versions.to_string(),
                output::time(s.created_at),
                output::time(s.updated_at),
            ]
        })
        .collect();
    output::table(
        &["NAME", "KIND", "CURRENT", "VERSIONS", "CREATED", "UPDATED"],
        &rows,
    );
    Ok(())
}

fn remove(data: &Path, name: &str) -> anyhow::Result<()> {
    let removed = open_store(data, Access::Existing)?.remove_secret(name)?;
    println!("removed secret `{name}` ({} versions)", removed.versions);
    for grant in &removed.dangling_grants {
        println!(
            "  function `{}` binding `{}` still names it and now gets `unavailable` (keyhole revoke {} {})",
            grant.function, grant.binding, grant.function, grant.binding
        );
    }
    Ok(())
}
