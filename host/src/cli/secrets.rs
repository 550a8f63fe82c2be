//! `keyhole secret …`: the operator's commands for stored secrets.

use super::{Access, open_existing_store, open_store, output};
use anyhow::{Context, bail};
use clap::Subcommand;
use keyhole_host::keys::KeyKind;
use keyhole_host::names;
use keyhole_host::secret_value::SecretValue;
use keyhole_host::store::{
    LastUse, MaxAgeChange, NewVersion, SecretInfo, Store, StoreError, VersionState,
};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The largest secret value accepted.
const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a secret, or a new version of one, read from standard input
    /// (never from the command line, where it would land in shell history).
    Put {
        /// The secret's name in the store, e.g. gh-webhook-prod.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
        /// What the value is, checked before anything is stored: opaque (any
        /// bytes), aes-256 (exactly 32 bytes), ed25519, ecdsa-p256 or rsa (a
        /// PEM private key of that kind) [default: the current version's
        /// kind, or opaque for a new secret].
        #[arg(long, value_name = "KIND")]
        kind: Option<KeyKind>,
    },
    /// Store a new version of an existing secret and make it current at
    /// once; functions get it on their next request, with no redeploy.
    Rotate {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Keep the version being replaced usable for verification and
        /// decryption (never signing, sealing, injection or reveal) for this
        /// long, e.g. 24h, so peers can switch over [default: retire it now].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<i64>,
    },
    /// List secrets: names, kinds, versions, ages and dates, never values.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a secret's versions and their state: current, in grace, retired.
    Versions {
        /// The secret's name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier version current again.
    Rollback {
        /// The secret's name.
        name: String,
        /// The version to make current (see `keyhole secret versions`).
        #[arg(long, value_name = "VERSION")]
        to: u32,
        /// Keep the version being replaced usable for verification and
        /// decryption for this long [default: retire it now].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<i64>,
    },
    /// List the functions that depend on a secret: grants and last use.
    Dependents {
        /// The secret's name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret and all its versions; refused while functions are
    /// granted it.
    Rm {
        /// The secret's name.
        name: String,
        /// Remove it even though functions are granted it: they get
        /// `unavailable` for those bindings.
        #[arg(long)]
        force: bool,
    },
}

/// Where a new value comes from, and the secret's maximum age.
#[derive(clap::Args)]
pub struct ValueArgs {
    /// Read the value from this file, byte for byte, instead of stdin.
    #[arg(long, value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// How old the value may grow before it is overdue for rotation, e.g.
    /// 90d; `none` removes the limit [default: keep the secret's limit].
    #[arg(long, value_name = "DURATION", value_parser = parse_max_age)]
    max_age: Option<MaxAgeChange>,
}

/// A duration such as `90s`, `15m`, `24h` or `90d`, in whole seconds.
fn parse_duration(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 30m, 24h or 7d)"))?;
    let secs = i64::try_from(duration.as_secs()).map_err(|_| "too long".to_owned())?;
    if secs == 0 {
        return Err("must be at least one second".into());
    }
    Ok(secs)
}

fn parse_max_age(text: &str) -> Result<MaxAgeChange, String> {
    if text == "none" {
        return Ok(MaxAgeChange::Clear);
    }
    parse_duration(text).map(MaxAgeChange::Set)
}

/// Runs one `keyhole secret …` command.
pub fn run(data: &Path, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Put { name, value, kind } => put(data, &name, &value, kind),
        SecretCommand::Rotate { name, value, grace } => rotate(data, &name, &value, grace),
        SecretCommand::List { json } => list(data, json),
        SecretCommand::Versions { name, json } => versions(data, &name, json),
        SecretCommand::Rollback { name, to, grace } => rollback(data, &name, to, grace),
        SecretCommand::Dependents { name, json } => dependents(data, &name, json),
        SecretCommand::Rm { name, force } => remove(data, &name, force),
    }
}

fn put(data: &Path, name: &str, args: &ValueArgs, kind: Option<KeyKind>) -> anyhow::Result<()> {
    names::validate("secret", name)?;
    let value = read_value(args.from_file.as_deref())?;
    // The kind is checked against the value before the store is touched;
    // with no --kind, an existing secret keeps its kind.
    let existing = open_existing_store(data)?;
    let current_kind = match existing.as_ref().map(|store| store.secret(name)) {
        None | Some(Err(StoreError::UnknownSecret(_))) => None,
        Some(Ok(info)) => Some(info.kind),
        Some(Err(e)) => return Err(e.into()),
    };
    let kind = kind.or(current_kind).unwrap_or_default();
    check_kind(kind, &value, args.from_file.as_deref())?;
    let store = match existing {
        Some(store) => store,
        None => open_store(data, Access::CreateIfMissing)?,
    };
    let new = NewVersion {
        value: &value,
        kind,
        grace: None,
        max_age: args.max_age.unwrap_or_default(),
    };
    let stored = store.put_secret(name, &new)?;
    println!(
        "stored secret `{name}` version {} ({} bytes, {kind})",
        stored.version,
        value.len()
    );
    match stored.replaced {
        Some(replaced) => report_replaced(&store, name, replaced, None),
        None => Ok(()),
    }
}

fn rotate(data: &Path, name: &str, args: &ValueArgs, grace: Option<i64>) -> anyhow::Result<()> {
    // An unknown secret is refused before a value is asked for.
    let store = open_store(data, Access::Existing)?;
    let kind = store.secret(name)?.kind;
    let value = read_value(args.from_file.as_deref())?;
    check_kind(kind, &value, args.from_file.as_deref())?;
    let new = NewVersion {
        value: &value,
        kind,
        grace,
        max_age: args.max_age.unwrap_or_default(),
    };
    let stored = store.rotate_secret(name, &new)?;
    println!(
        "rotated secret `{name}` to version {} ({} bytes, {kind}); running nodes use it from their next request",
        stored.version,
        value.len()
    );
    let replaced = stored
        .replaced
        .context("a rotated secret always had a current version")?;
    report_replaced(&store, name, replaced, grace)
}

/// After a new current version: what became of the one it `replaced`, and
/// which functions the change reaches.
fn report_replaced(
    store: &dyn Store,
    name: &str,
    replaced: u32,
    grace: Option<i64>,
) -> anyhow::Result<()> {
    match grace {
        Some(secs) => println!(
            "version {replaced} stays usable for verification and decryption until {}",
            output::time(keyhole_host::store::now() + secs)
        ),
        None => println!("version {replaced} is retired"),
    }
    print_affected(store, name, grace)
}

fn check_kind(kind: KeyKind, value: &SecretValue, from_file: Option<&Path>) -> anyhow::Result<()> {
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
    Ok(())
}

/// Which functions a change of current version reaches.
fn print_affected(store: &dyn Store, name: &str, grace: Option<i64>) -> anyhow::Result<()> {
    let dependents = store.dependents(name)?;
    if dependents.is_empty() {
        println!("no function is granted `{name}`");
        return Ok(());
    }
    println!(
        "affects {} binding(s){}:",
        dependents.len(),
        if grace.is_some() {
            "; verification and decryption also accept the previous version during the grace window"
        } else {
            ""
        }
    );
    for d in &dependents {
        println!(
            "  {} (binding {}, allow {}){}",
            d.grant.function,
            d.grant.binding,
            d.grant.allow,
            d.last_use.map_or_else(
                || ", no use recorded (nodes report uses once a second)".to_owned(),
                |u| format!(
                    ", last used version {} at {}",
                    u.version,
                    output::time(u.at)
                )
            )
        );
    }
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

#[derive(serde::Serialize)]
struct SecretListing {
    #[serde(flatten)]
    info: SecretInfo,
    overdue: bool,
}

fn list(data: &Path, json: bool) -> anyhow::Result<()> {
    let secrets = open_store(data, Access::Existing)?.list_secrets()?;
    let now = keyhole_host::store::now();
    if json {
        let listing: Vec<SecretListing> = secrets
            .into_iter()
            .map(|info| SecretListing {
                overdue: info.overdue(now),
                info,
            })
            .collect();
        return output::json(&listing);
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let age = match s.max_age {
                None => "-".to_owned(),
                Some(max) if s.overdue(now) => format!("{} OVERDUE", output::duration(max)),
                Some(max) => output::duration(max),
            };
            vec![
                s.name.clone(),
                s.kind.to_string(),
                s.current_version.to_string(),
                s.versions.to_string(),
                output::time(s.created_at),
                output::time(s.updated_at),
                age,
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "KIND", "CURRENT", "VERSIONS", "CREATED", "UPDATED", "MAX-AGE",
        ],
        &rows,
    );
    Ok(())
}

fn versions(data: &Path, name: &str, json: bool) -> anyhow::Result<()> {
    let versions = open_store(data, Access::Existing)?.versions(name)?;
    if json {
        return output::json(&versions);
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let state = match v.state {
                VersionState::Current => "current".to_owned(),
                VersionState::Grace { until } => format!("grace until {}", output::time(until)),
                VersionState::Retired => "retired".to_owned(),
            };
            vec![
                v.version.to_string(),
                output::time(v.created_at),
                v.kind.to_string(),
                state,
            ]
        })
        .collect();
    output::table(&["VERSION", "CREATED", "KIND", "STATE"], &rows);
    Ok(())
}

fn rollback(data: &Path, name: &str, to: u32, grace: Option<i64>) -> anyhow::Result<()> {
    let store = open_store(data, Access::Existing)?;
    let done = store.rollback(name, to, grace)?;
    println!(
        "secret `{name}`: version {} is current again (was {}); running nodes use it from their next request",
        done.to, done.from
    );
    report_replaced(&store, name, done.from, grace)
}

fn dependents(data: &Path, name: &str, json: bool) -> anyhow::Result<()> {
    let dependents = open_store(data, Access::Existing)?.dependents(name)?;
    if json {
        return output::json(&dependents);
    }
    let last = |u: Option<LastUse>| {
        u.map_or_else(
            || "not recorded".to_owned(),
            |u| format!("{} (v{})", output::time(u.at), u.version),
        )
    };
    let rows: Vec<Vec<String>> = dependents
        .iter()
        .map(|d| {
            vec![
                d.grant.function.clone(),
                d.grant.binding.clone(),
                d.grant.allow.to_string(),
                if d.grant.egress.is_empty() {
                    "-".to_owned()
                } else {
                    d.grant.egress.to_string()
                },
                last(d.last_use),
                d.last_grace_use
                    .map_or_else(|| "-".to_owned(), |u| last(Some(u))),
            ]
        })
        .collect();
    output::table(
        &[
            "FUNCTION",
            "BINDING",
            "ALLOW",
            "EGRESS",
            "LAST-USED",
            "LAST-GRACE-USE",
        ],
        &rows,
    );
    Ok(())
}

fn remove(data: &Path, name: &str, force: bool) -> anyhow::Result<()> {
    let removed = open_store(data, Access::Existing)?.remove_secret(name, force)?;
    println!("removed secret `{name}` ({} versions)", removed.versions);
    for grant in &removed.dangling_grants {
        println!(
            "  function `{}` binding `{}` now gets `unavailable` (keyhole revoke {} {})",
            grant.function, grant.binding, grant.function, grant.binding
        );
    }
    Ok(())
}
