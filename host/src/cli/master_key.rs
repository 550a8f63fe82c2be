//! `keyhole master-key rotate` and `keyhole check`: the operator's commands
//! for the key that protects every stored secret.

use super::{Access, Target, open_store_with_source};
use anyhow::{Context, bail};
use clap::Subcommand;
use keyhole_host::admin::Request;
use keyhole_host::admin::access::Caller;
use keyhole_host::admin::types::CheckResult;
use keyhole_host::audit::AdminEvent;
use keyhole_host::crypto::AesKey;
use keyhole_host::crypto::master_key::{self, KeySource, MASTER_KEY_ENV, NEW_MASTER_KEY_ENV};
use keyhole_host::store::fleet::{ClusterConfig, Join};
use keyhole_host::store::{SqliteStore, Store, StoreError};
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum MasterKeyCommand {
    /// Re-wrap every data key under a new master key, in one transaction.
    /// The new key comes from KEYHOLE_NEW_MASTER_KEY, or is generated into
    /// the key file. Afterwards the old key opens nothing.
    Rotate,
}

/// Runs one `keyhole master-key …` command.
pub fn run(data: &Path, command: MasterKeyCommand) -> anyhow::Result<()> {
    match command {
        MasterKeyCommand::Rotate => rotate(data),
    }
}

/// The new master key in `KEYHOLE_NEW_MASTER_KEY`, if it is set; an error
/// naming the variable if it is not a key.
pub fn new_key_from_env() -> anyhow::Result<Option<AesKey>> {
    match std::env::var_os(NEW_MASTER_KEY_ENV) {
        None => Ok(None),
        Some(text) => {
            let text = Zeroizing::new(text.into_string().unwrap_or_default());
            Ok(Some(master_key::decode(&text).with_context(|| {
                format!(
                    "{NEW_MASTER_KEY_ENV} must be the base64 encoding of exactly 32 bytes (generate one with `openssl rand -base64 32`); nothing was changed"
                )
            })?))
        }
    }
}

/// Runs `keyhole master-key …` on a fleet (`--cluster`).
pub fn run_on_fleet(
    data: &Path,
    config: &ClusterConfig,
    command: MasterKeyCommand,
) -> anyhow::Result<()> {
    match command {
        MasterKeyCommand::Rotate => rotate_fleet(data, config),
    }
}

/// Rotates the fleet's master key: one entry of the fleet's log re-wraps
/// every data key under the new key, which must have reached the nodes
/// first (it never travels through NATS).
fn rotate_fleet(data: &Path, config: &ClusterConfig) -> anyhow::Result<()> {
    let Some(new) = new_key_from_env()? else {
        bail!(
            "in a fleet the new master key must reach the nodes before the rotation: choose one (`openssl rand -base64 32`), give it to every node in {NEW_MASTER_KEY_ENV} (keeping the current key in {MASTER_KEY_ENV}) and restart them, then run this with both set; nothing was changed"
        );
    };
    let from_file = std::env::var_os(MASTER_KEY_ENV).is_none();
    let store = super::cluster::open_replica(data, Access::CreateIfMissing, config, Join::Now)?;
    // A replica whose key is its key file keeps working after the rotation:
    // the file gets the new key (written first, promoted once committed),
    // under the rotation lock, so no other command mistakes the pending key
    // for an interrupted rotation's.
    let _lock = lock_rotation(data)?;
    if from_file {
        master_key::write_pending(data, &new)?;
    }
    let count = match rotate_audited(&*store, new) {
        Ok(count) => count,
        Err(e) if from_file => {
            match e.downcast_ref::<StoreError>() {
                // Rotated before (the replica is under the new key): the
                // key file catches up.
                Some(StoreError::MasterKeyInForce) => master_key::promote_pending(data)?,
                // It may have landed: the pending key stays, and the next
                // command on this directory keeps whichever key opens it.
                Some(StoreError::ClusterOutcomeUnknown(_)) => eprintln!(
                    "note: the new key is kept in {} until the rotation is known to have landed (the next command here settles it)",
                    data.join(master_key::PENDING_KEY_FILE).display()
                ),
                _ => master_key::discard_pending(data)?,
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if from_file {
        master_key::promote_pending(data)?;
    }
    println!(
        "re-wrapped {count} secret version(s) under the new master key, as one entry of the fleet's log"
    );
    println!(
        "nodes given the new key in {NEW_MASTER_KEY_ENV} switch to it as they apply that entry; a node without it keeps serving the state before it, and says why, until it is restarted with it"
    );
    println!(
        "from now on supply {MASTER_KEY_ENV} with the new key (the value of {NEW_MASTER_KEY_ENV}) to every node and command"
    );
    Ok(())
}

fn rotate(data: &Path) -> anyhow::Result<()> {
    let new_from_env = new_key_from_env()?;
    let (store, source) = open_store_with_source(data, Access::Existing)?;
    let _lock = lock_rotation(data)?;
    match (source, new_from_env) {
        (KeySource::Environment, None) => bail!(
            "the master key comes from {MASTER_KEY_ENV}: supply the new one in {NEW_MASTER_KEY_ENV}; nothing was changed"
        ),
        (source, Some(new)) => {
            let count = rotate_audited(&store, new)?;
            println!("re-wrapped {count} secret version(s) under the new master key");
            if let KeySource::File(path) = source {
                // The file holds a key that opens nothing any more.
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the old key file {}", path.display()))?;
                println!("removed the old key file {}", path.display());
            }
            println!(
                "from now on supply {MASTER_KEY_ENV} with the new key (the value of {NEW_MASTER_KEY_ENV}), and restart running nodes with it"
            );
        }
        (_, None) => {
            let new = AesKey::generate();
            // The new key is durable before the store depends on it; an
            // interruption at any point is finished or undone by the next
            // command that opens the store.
            master_key::write_pending(data, &new)?;
            let count = rotate_audited(&store, new)?;
            master_key::promote_pending(data)?;
            println!(
                "re-wrapped {count} secret version(s) under a new master key, written to {}; running nodes pick it up within a second",
                data.join(master_key::MASTER_KEY_FILE).display()
            );
        }
    }
    Ok(())
}

/// Takes the rotation lock of the store in `data`, or says which process
/// holds it.
fn lock_rotation(data: &Path) -> anyhow::Result<master_key::RotationLock> {
    master_key::try_lock_rotation(data)?.with_context(|| {
        format!(
            "another process is rotating the master key of {} (it holds {}); nothing was changed",
            data.display(),
            master_key::ROTATION_LOCK_FILE
        )
    })
}

/// Rotates the master key, recorded in the audit trail in the same
/// transaction.
fn rotate_audited(store: &dyn Store, new: AesKey) -> anyhow::Result<usize> {
    let event = AdminEvent {
        token: Caller::Local.name().to_owned(),
        role: Caller::Local.role().as_str().to_owned(),
        action: "master-key.rotate".into(),
        target: "master-key".into(),
        function: None,
        secret: None,
        outcome: "ok".into(),
        detail: None,
    };
    Ok(keyhole_host::store::audited(store, event, |record| {
        store.rotate_master_key(new, record)
    })??)
}

/// Finishes or undoes a key-file rotation that was interrupted (its
/// process died): the store opens with exactly one of the two keys, and the
/// key file ends up holding that one.
pub fn finish_interrupted_rotation(data: &Path) -> anyhow::Result<()> {
    if !data.join(master_key::PENDING_KEY_FILE).exists() {
        return Ok(());
    }
    // A pending key under a held lock belongs to a rotation in progress:
    // leave it alone. The lock dies with its process, so a killed
    // rotation's leftovers are repaired here.
    let Some(_lock) = master_key::try_lock_rotation(data)? else {
        return Ok(());
    };
    let current = master_key::load_existing(data)?;
    match SqliteStore::open(data, current) {
        Ok(_) => {
            master_key::discard_pending(data)?;
            eprintln!(
                "note: a master-key rotation was interrupted before the store switched keys; it still uses the old key (run `keyhole master-key rotate` again)"
            );
            Ok(())
        }
        Err(StoreError::WrongMasterKey) => {
            let pending = master_key::load_pending(data)?
                .context("the pending master key vanished while in use")?;
            SqliteStore::open(data, pending).context(
                "neither the key file nor the pending key of an interrupted rotation opens the store",
            )?;
            master_key::promote_pending(data)?;
            eprintln!(
                "note: finished an interrupted master-key rotation: the key file now holds the new key"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `keyhole check`: decrypt every stored version and report any that fail.
pub fn check(target: &Target) -> anyhow::Result<()> {
    let report: CheckResult = target.backend(Access::Existing)?.call(Request::Check)?;
    for (name, version) in &report.failed {
        eprintln!(
            "secret `{name}` version {version} failed its integrity check (tampered with, or sealed under another master key)"
        );
    }
    for row in &report.forged {
        eprintln!("row `{row}` failed its authentication (forged, or edited outside keyhole)");
    }
    if let Some(state) = &report.state {
        eprintln!("the store's state does not verify: {state}");
    }
    println!(
        "checked {} secret version(s): {} ok, {} failed; rows: {} failing authentication, state {}",
        report.checked,
        report.checked - report.failed.len(),
        report.failed.len(),
        report.forged.len(),
        if report.state.is_some() {
            "NOT verified"
        } else {
            "verified"
        }
    );
    let mut problems = Vec::new();
    if !report.failed.is_empty() {
        problems.push(format!(
            "{} secret version(s) failed their integrity check",
            report.failed.len()
        ));
    }
    if !report.forged.is_empty() {
        problems.push(format!(
            "{} row(s) failed their authentication",
            report.forged.len()
        ));
    }
    if report.state.is_some() {
        problems.push("the rows' state does not verify".to_owned());
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}
