//! `keyhole status`: whether a node (through its admin API) or a data
//! directory serves a state it can vouch for. A node cut off from its
//! fleet, stopped at an entry, or past `--max-stale` makes the command
//! fail after printing, so a health check can run it as it is.

use super::{Access, Target, cluster, open_store, output};
use anyhow::bail;
use keyhole_host::admin::Request;
use keyhole_host::node::status::{FleetReport, NodeStatus};
use keyhole_host::store::fleet::Join;
use keyhole_host::store::{Changes as _, FunctionStore as _, SqliteStore};
use std::sync::Arc;

/// Prints the status (as JSON with `json`); an error when it has problems.
pub fn run(target: &Target, json: bool) -> anyhow::Result<()> {
    let status = if target.remote() {
        target.backend(Access::Existing)?.call(Request::Status)?
    } else {
        of_data_directory(target)?
    };
    if json {
        output::json(&status)?;
    } else {
        print(&status);
    }
    let problems = status.problems();
    if !problems.is_empty() {
        bail!(
            "the node does not serve a state it can vouch for: {}",
            problems.join("; ")
        );
    }
    Ok(())
}

/// The data directory's state; with `--cluster`, after catching up with
/// the fleet.
fn of_data_directory(target: &Target) -> anyhow::Result<NodeStatus> {
    let store: Arc<SqliteStore> = match &target.cluster {
        Some(config) => cluster::open_replica(&target.data, Access::Existing, config, Join::Now)?,
        None => Arc::new(open_store(&target.data, Access::Existing)?),
    };
    let fleet = match store.fleet()? {
        None => None,
        Some(id) => {
            let link = cluster::joined().map(|f| f.status());
            Some(FleetReport {
                id: Some(id),
                connected: link.as_ref().is_some_and(|l| l.connected()),
                applied: store.applied_entry()?,
                seconds_since_sync: link.as_ref().and_then(|l| l.seconds_since_sync()),
                rejected_entries: link.as_ref().map_or(0, |l| l.rejected_entries()),
                blocked: link.as_ref().and_then(|l| l.blocked()),
                max_stale_secs: None,
                stale: None,
                node: cluster::joined().and_then(|f| f.node()),
                audit_waiting: store.audit_waiting()?,
            })
        }
    };
    Ok(NodeStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        running: false,
        functions: store.functions()?.len(),
        revision: Some(store.revision()?),
        fleet,
        load_error: None,
    })
}

fn print(status: &NodeStatus) {
    let what = if status.running {
        "node"
    } else {
        "data directory"
    };
    println!("{what}: keyhole {}", status.version);
    let verb = if status.running {
        "serving"
    } else {
        "deployed"
    };
    println!("functions {verb}: {}", status.functions);
    if let Some(revision) = status.revision {
        println!("store revision: {revision}");
    }
    if let Some(why) = &status.load_error {
        println!("last load failed: {why}");
    }
    let Some(fleet) = &status.fleet else {
        println!("fleet: none (a single node)");
        return;
    };
    println!(
        "fleet: {}",
        fleet.id.as_deref().unwrap_or("(not joined yet)")
    );
    println!("  applied entry: {}", fleet.applied);
    if status.running || fleet.connected {
        println!(
            "  connected: {}",
            if fleet.connected { "yes" } else { "no" }
        );
        match fleet.seconds_since_sync {
            Some(s) => println!("  last in sync: {s:.1} s ago"),
            None => println!("  last in sync: not since it started"),
        }
    }
    if let Some(node) = &fleet.node {
        println!("  node in the fleet's audit trail: {node}");
    }
    if fleet.audit_waiting > 0 {
        println!(
            "  audit records waiting to reach the fleet: {}",
            fleet.audit_waiting
        );
    }
    if fleet.rejected_entries > 0 {
        println!("  entries rejected as forged: {}", fleet.rejected_entries);
    }
    if let Some(why) = &fleet.blocked {
        println!("  stopped at an entry: {why}");
    }
    if let Some(secs) = fleet.max_stale_secs {
        println!("  --max-stale: {}", output::duration(secs));
    }
    if let Some(why) = &fleet.stale {
        println!("  stale: {why}");
    }
}
