//! `--cluster`: commands and nodes working on a fleet's state through a
//! replica in the data directory (see `keyhole_host::store::fleet`).

use super::{Access, open_store};
use anyhow::Context as _;
use keyhole_host::crypto::master_key as key;
use keyhole_host::store::SqliteStore;
use keyhole_host::store::fleet::{ClusterConfig, Fleet, Join};
use std::path::Path;
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

/// Opens the replica in `data` and joins it to the fleet at `config`. For
/// a command ([`Join::Now`]) the replica is brought up to date first.
pub fn open_replica(
    data: &Path,
    access: Access,
    config: &ClusterConfig,
    join: Join,
) -> anyhow::Result<Arc<SqliteStore>> {
    let store = Arc::new(open_store(data, access)?);
    // The key the store was just opened with (from the environment or the
    // data directory's key file).
    let master = key::load_existing(data).context("cannot load the master key")?;
    let fleet = Fleet::join(config.clone(), &master, Arc::clone(&store), join)?;
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
