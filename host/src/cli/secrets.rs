//! `keyhole secret …`: the operator's commands for stored secrets.

use super::{Access, Target, output};
use anyhow::{Context, bail};
use clap::Subcommand;
use keyhole_host::admin::Request;
use keyhole_host::admin::types::{
    PutSecret, Rollback, RotateSecret, SecretListing, SecretRemoved, VersionChange, WireValue,
};
use keyhole_host::crypto::keys::KeyKind;
use keyhole_host::crypto::secret_value::SecretValue;
use keyhole_host::names;
use keyhole_host::store::{
    Dependent, LastUse, MaxAgeChange, StoreError, VersionInfo, VersionState,
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
pub(super) fn parse_duration(text: &str) -> Result<i64, String> {
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
pub fn run(target: &Target, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Put { name, value, kind } => put(target, name, &value, kind),
        SecretCommand::Rotate { name, value, grace } => rotate(target, name, &value, grace),
        SecretCommand::List { json } => list(target, json),
        SecretCommand::Versions { name, json } => versions(target, name, json),
        SecretCommand::Rollback { name, to, grace } => rollback(target, name, to, grace),
        SecretCommand::Dependents { name, json } => dependents(target, name, json),
        SecretCommand::Rm { name, force } => remove(target, name, force),
    }
}

/// A `--max-age` as the admin API takes it: seconds, 0 to remove.
fn max_age_secs(change: Option<MaxAgeChange>) -> Option<i64> {
    match change.unwrap_or_default() {
        MaxAgeChange::Keep => None,
        MaxAgeChange::Set(secs) => Some(secs),
        MaxAgeChange::Clear => Some(0),
    }
}

fn put(
    target: &Target,
    name: String,
    args: &ValueArgs,
    kind: Option<KeyKind>,
) -> anyhow::Result<()> {
    names::validate("secret", &name)?;
    let value = read_value(args.from_file.as_deref())?;
    // A value that is not the kind asked for is refused before anything is
    // created (the node checks again, also against an existing kind).
    if let Some(kind) = kind {
        check_kind(kind, &value, args.from_file.as_deref())?;
    }
    let backend = target.backend(Access::CreateIfMissing)?;
    let change: VersionChange = backend.call(Request::PutSecret {
        name,
        body: PutSecret {
            value: WireValue(value),
            kind,
            max_age_secs: max_age_secs(args.max_age),
        },
    })?;
    println!(
        "stored secret `{}` version {} ({} bytes, {})",
        change.name,
        change.version,
        change.bytes.unwrap_or(0),
        change.kind
    );
    if change.replaced.is_some() {
        report_replaced(&change);
    }
    Ok(())
}

fn rotate(
    target: &Target,
    name: String,
    args: &ValueArgs,
    grace: Option<i64>,
) -> anyhow::Result<()> {
    let backend = target.backend(Access::Existing)?;
    // An unknown secret is refused before a value is asked for.
    let kind = backend
        .call::<Vec<SecretListing>>(Request::ListSecrets)?
        .into_iter()
        .find(|s| s.info.name == name)
        .map(|s| s.info.kind)
        .ok_or_else(|| StoreError::UnknownSecret(name.clone()))?;
    let value = read_value(args.from_file.as_deref())?;
    check_kind(kind, &value, args.from_file.as_deref())?;
    let change: VersionChange = backend.call(Request::RotateSecret {
        name,
        body: RotateSecret {
            value: WireValue(value),
            grace_secs: grace,
            max_age_secs: max_age_secs(args.max_age),
        },
    })?;
    println!(
        "rotated secret `{}` to version {} ({} bytes, {}); running nodes use it from their next request",
        change.name,
        change.version,
        change.bytes.unwrap_or(0),
        change.kind
    );
    report_replaced(&change);
    Ok(())
}

/// After a new current version: what became of the one it replaced, and
/// which functions the change reaches.
fn report_replaced(change: &VersionChange) {
    let Some(replaced) = change.replaced else {
        return;
    };
    match change.grace_until {
        Some(until) => println!(
            "version {replaced} stays usable for verification and decryption until {}",
            output::time(until)
        ),
        None => println!("version {replaced} is retired"),
    }
    print_affected(change);
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
fn print_affected(change: &VersionChange) {
    let name = &change.name;
    if change.affected.is_empty() {
        println!("no function is granted `{name}`");
        return;
    }
    println!(
        "affects {} binding(s){}:",
        change.affected.len(),
        if change.grace_until.is_some() {
            "; verification and decryption also accept the previous version during the grace window"
        } else {
            ""
        }
    );
    for d in &change.affected {
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

fn list(target: &Target, json: bool) -> anyhow::Result<()> {
    let secrets: Vec<SecretListing> = target
        .backend(Access::Existing)?
        .call(Request::ListSecrets)?;
    if json {
        return output::json(&secrets);
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|SecretListing { info: s, overdue }| {
            let age = match s.max_age {
                None => "-".to_owned(),
                Some(max) if *overdue => format!("{} OVERDUE", output::duration(max)),
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

fn versions(target: &Target, name: String, json: bool) -> anyhow::Result<()> {
    let versions: Vec<VersionInfo> = target
        .backend(Access::Existing)?
        .call(Request::Versions { name })?;
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

fn rollback(target: &Target, name: String, to: u32, grace: Option<i64>) -> anyhow::Result<()> {
    let change: VersionChange = target.backend(Access::Existing)?.call(Request::Rollback {
        name,
        body: Rollback {
            to,
            grace_secs: grace,
        },
    })?;
    println!(
        "secret `{}`: version {} is current again (was {}); running nodes use it from their next request",
        change.name,
        change.version,
        change.replaced.unwrap_or(0)
    );
    report_replaced(&change);
    Ok(())
}

fn dependents(target: &Target, name: String, json: bool) -> anyhow::Result<()> {
    let dependents: Vec<Dependent> = target
        .backend(Access::Existing)?
        .call(Request::Dependents { name })?;
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

fn remove(target: &Target, name: String, force: bool) -> anyhow::Result<()> {
    let removed: SecretRemoved = target
        .backend(Access::Existing)?
        .call(Request::RemoveSecret { name, force })?;
    println!(
        "removed secret `{}` ({} versions)",
        removed.name, removed.versions
    );
    for grant in &removed.dangling_grants {
        println!(
            "  function `{}` binding `{}` now gets `unavailable` (keyhole revoke {} {})",
            grant.function, grant.binding, grant.function, grant.binding
        );
    }
    Ok(())
}
