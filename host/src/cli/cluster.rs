//! `--cluster`: commands and nodes working on a fleet's state through a
//! replica in the data directory (see `keyhole_host::store::fleet`).

use super::{Access, Target, open_store, output};
use anyhow::{Context as _, bail};
use clap::Subcommand;
use keyhole_host::admin::access::Caller;
use keyhole_host::audit::AdminEvent;
use keyhole_host::crypto::AesKey;
use keyhole_host::crypto::master_key as key;
use keyhole_host::store::fleet::{ClusterConfig, Fleet, Join};
use keyhole_host::store::{ImportReport, SqliteStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The fleet this process joined: it lives as long as the process (its
/// client and follower run on a runtime of their own).
static FLEET: OnceLock<Fleet> = OnceLock::new();

/// Parses `--cluster` / `KEYHOLE_CLUSTER` (empty: none) with the
/// credentials and CA from the environment.
pub fn config(list: Option<&str>) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    let config = ClusterConfig::parse(list)
        .and_then(ClusterConfig::with_environment)
        .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    Ok(Some(config))
}

/// Whether `e` says the master key does not open the store.
fn wrong_key(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::WrongMasterKey)
    )
}

/// Opens the replica in `data` and joins it to the fleet at `config`. For
/// a command ([`Join::Now`]) the replica is brought up to date first.
pub fn open_replica(
    data: &Path,
    access: Access,
    config: &ClusterConfig,
    join: Join,
) -> anyhow::Result<Arc<SqliteStore>> {
    // During a master-key rotation a node holds two keys: the current one
    // (KEYHOLE_MASTER_KEY or the key file) and the new one
    // (KEYHOLE_NEW_MASTER_KEY). Its replica opens under whichever it is
    // sealed under now, and it follows the fleet's rotation with the other.
    let next = super::master_key::new_key_from_env()?;
    let (store, master, next) = match open_store(data, access) {
        Ok(store) => {
            // The key the store was just opened with.
            let master = key::load_existing(data).context("cannot load the master key")?;
            (store, master, next)
        }
        Err(e) if wrong_key(&e) => match next {
            Some(next) => {
                let copy = AesKey::from_slice(next.expose()).expect("a key's own length");
                let store = SqliteStore::open(data, copy).map_err(|e| match e {
                    StoreError::WrongMasterKey => anyhow::anyhow!(
                        "the replica in {} opens under neither {} nor {}: move the data directory aside to build a new replica from the fleet",
                        data.display(),
                        key::MASTER_KEY_ENV,
                        key::NEW_MASTER_KEY_ENV
                    ),
                    e => e.into(),
                })?;
                (store, next, None)
            }
            None => {
                return Err(e.context(format!(
                    "the replica in {} is sealed under another master key: if the fleet's master key was rotated, give the new key in {} (with the one it had still in {}), or move the data directory aside to build a new replica from the fleet",
                    data.display(),
                    key::NEW_MASTER_KEY_ENV,
                    key::MASTER_KEY_ENV
                )));
            }
        },
        Err(e) => return Err(e),
    };
    let store = Arc::new(store);
    let fleet = Fleet::join(
        config.clone(),
        &master,
        next.as_ref(),
        Arc::clone(&store),
        join,
    )?;
    if FLEET.set(fleet).is_err() {
        anyhow::bail!("this process has joined a fleet already");
    }
    Ok(store)
}

/// How long a command waits, before it exits, for the fleet to take the
/// records it wrote to its replica's audit chain.
const DELIVER_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the audit records this process's replica holds, and the fleet's
/// trail lacks, to the fleet; says so on stderr if they must wait (they go
/// with the next command run on `data`, or with a node serving it).
pub fn deliver_audit(data: &Path) {
    let Some(fleet) = joined() else {
        return;
    };
    if let Err(e) = fleet.records().deliver(DELIVER_AT_EXIT) {
        eprintln!(
            "warning: audit records wait in {}: {e}; they go to the fleet the next time this data directory is used with the cluster",
            data.display()
        );
    }
}

/// The fleet this process joined, if any.
pub fn joined() -> Option<&'static Fleet> {
    FLEET.get()
}

/// `keyhole cluster …`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Copy a single node's store (secrets with every version, functions,
    /// grants, tokens) into an empty fleet, as one write; its audit trail
    /// goes to the fleet's trail as a node of its own (`imported-…`), and
    /// the import's record names its head.
    Import {
        /// The single node's data directory. Its master key is its own key
        /// file if it has one, else KEYHOLE_MASTER_KEY; data keys are
        /// re-wrapped under the fleet's key when the two differ.
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `keyhole cluster import` did.
#[derive(serde::Serialize)]
struct Imported {
    #[serde(flatten)]
    copied: ImportReport,
    /// The imported trail's node in the fleet's trail.
    audit_node: String,
    /// Its records, and its head (sequence number, MAC).
    audit_records: u64,
    audit_head: Option<(u64, String)>,
}

/// Runs `keyhole cluster …`.
pub fn run(target: &Target, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Import { from, json } = command;
    let Some(config) = &target.cluster else {
        bail!(
            "`keyhole cluster import` goes into a fleet: give --cluster URLS (or KEYHOLE_CLUSTER)"
        );
    };
    if let (Ok(from), Ok(data)) = (from.canonicalize(), target.data.canonicalize())
        && from == data
    {
        bail!(
            "--from names the data directory the command works in ({}): give the fleet's replica another --data",
            from.display()
        );
    }
    let source = Arc::new(open_source(&from)?);
    let replica = open_replica(&target.data, Access::CreateIfMissing, config, Join::Now)?;
    let fleet = joined().expect("joined above");
    // Everything that can refuse the import, before anything is shipped.
    replica.check_importable(&source)?;
    // Then the history: shipping it again is harmless (the same node, the
    // rows the stream holds are not sent again), so an import that fails
    // after it can simply be run again.
    let (node, trail) = fleet.import_trail(&source)?;
    let head = trail
        .head
        .as_ref()
        .map_or_else(|| "none".to_owned(), |(seq, mac)| format!("#{seq} {mac}"));
    let event = AdminEvent {
        token: Caller::Local.name().to_owned(),
        role: Caller::Local.role().as_str().to_owned(),
        action: "cluster.import".into(),
        target: format!("data-dir/{}", from.display()),
        function: None,
        secret: None,
        outcome: "ok".into(),
        detail: Some(format!(
            "its audit trail ({} records, head {head}) is the fleet trail's node {node}",
            trail.records
        )),
    };
    let copied = keyhole_host::store::audited(&*replica, event, |record| {
        replica.import_state(&source, record)
    })??;
    let imported = Imported {
        copied,
        audit_node: node,
        audit_records: trail.records,
        audit_head: trail.head,
    };
    if json {
        return output::json(&imported);
    }
    let c = &imported.copied;
    println!(
        "imported {} secrets ({} versions), {} functions, {} grants and {} tokens from {}",
        c.secrets,
        c.versions,
        c.functions,
        c.grants,
        c.tokens,
        from.display()
    );
    println!(
        "its audit trail ({} records, head {head}) is node {} of the fleet's trail",
        imported.audit_records, imported.audit_node
    );
    Ok(())
}

/// Opens the single node's store at `from` under its own master key: its
/// key file if it has one, else the environment's.
fn open_source(from: &Path) -> anyhow::Result<SqliteStore> {
    if !from.join(keyhole_host::store::DATABASE_FILE).exists() {
        bail!("no Keyhole store in {} (--from)", from.display());
    }
    let key_file = from.join(key::MASTER_KEY_FILE);
    let master = if key_file.exists() {
        key::read_key_file(&key_file)
    } else {
        key::load_existing(from)
    }
    .with_context(|| format!("cannot load the master key of {}", from.display()))?;
    SqliteStore::open(from, master)
        .with_context(|| format!("cannot open the store in {}", from.display()))
}
