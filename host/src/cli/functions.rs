//! `keyhole deploy`, `undeploy` and `functions`: the developer's commands.

use super::{Access, open_existing_store, open_store, output};
use keyhole_host::deploy::{self, BindingState};
use keyhole_host::runtime::Runtime;
use keyhole_host::scan;
use keyhole_host::store::Store;
use std::path::Path;

/// `keyhole deploy`: check, scan, store, and report each binding's state.
pub fn deploy(data: &Path, manifest: &Path, allow_findings: &[String]) -> anyhow::Result<()> {
    // Check manifest and component before touching the data directory, so
    // a refused deploy creates nothing.
    let runtime = Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let (deployment, component_path) = deploy::prepare(&runtime, manifest)?;
    let existing = open_existing_store(data)?;
    let stored = match &existing {
        Some(store) => scan::stored_values(store)?,
        None => scan::StoredValues::default(),
    };
    for name in &stored.unreadable {
        eprintln!(
            "warning: secret `{name}` failed its integrity check and was not searched for (see `keyhole check`)"
        );
    }
    let gate = deploy::gate(&deployment, &component_path, &stored.values, allow_findings)?;
    drop(stored);
    let store = match existing {
        Some(store) => store,
        None => open_store(data, Access::CreateIfMissing)?,
    };
    let report = deploy::store(&store, &deployment)?;
    for finding in &gate.allowed {
        eprintln!("warning: deployed despite {finding} (allowed by --allow-finding)");
    }
    for id in &gate.unused_allowances {
        eprintln!("warning: --allow-finding {id} matched no finding");
    }
    let info = &report.info;
    println!(
        "deployed `{}` at {} ({} KiB, sha256 {})",
        info.name,
        info.routes.join(", "),
        info.component_size.div_ceil(1024),
        &info.component_sha256[..16]
    );
    for (binding, ops, state) in &report.bindings {
        let line = match state {
            BindingState::Granted { secret } => format!("granted (secret `{secret}`)"),
            BindingState::Partial { secret, missing } => {
                format!(
                    "partially granted (secret `{secret}`; {missing} still needs an operator's grant)"
                )
            }
            BindingState::Pending => format!(
                "pending: an operator runs `keyhole grant {} {binding} --secret NAME --allow {ops}`",
                info.name
            ),
        };
        println!("  {binding} [{ops}]: {line}");
    }
    Ok(())
}

/// `keyhole undeploy`: remove a function and its grants.
pub fn undeploy(data: &Path, function: &str) -> anyhow::Result<()> {
    let grants = open_store(data, Access::Existing)?.undeploy(function)?;
    println!("undeployed `{function}` and removed its {grants} grant(s)");
    Ok(())
}

#[derive(serde::Serialize)]
struct FunctionListing {
    #[serde(flatten)]
    info: keyhole_host::store::FunctionInfo,
    binding_states: Vec<(String, BindingState)>,
}

/// `keyhole functions`: deployed functions with their bindings' states.
pub fn list(data: &Path, json: bool) -> anyhow::Result<()> {
    let store = open_store(data, Access::Existing)?;
    let grants = store.grants(None)?;
    let listings: Vec<FunctionListing> = store
        .functions()?
        .into_iter()
        .map(|info| {
            let mine: Vec<_> = grants
                .iter()
                .filter(|g| g.function == info.name)
                .cloned()
                .collect();
            let binding_states = info
                .bindings
                .iter()
                .map(|b| {
                    (
                        b.binding.clone(),
                        deploy::binding_state(&b.binding, b.operations, &mine),
                    )
                })
                .collect();
            FunctionListing {
                info,
                binding_states,
            }
        })
        .collect();
    if json {
        return output::json(&listings);
    }
    let rows: Vec<Vec<String>> = listings
        .iter()
        .map(|l| {
            let bindings: Vec<String> = l
                .binding_states
                .iter()
                .map(|(name, state)| {
                    let word = match state {
                        BindingState::Granted { .. } => "granted",
                        BindingState::Partial { .. } => "partial",
                        BindingState::Pending => "pending",
                    };
                    format!("{name}:{word}")
                })
                .collect();
            vec![
                l.info.name.clone(),
                l.info.routes.join(","),
                format!("{} MiB", l.info.memory_mib),
                format!("{} ms", l.info.timeout_ms),
                bindings.join(" "),
                output::time(l.info.deployed_at),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "ROUTES", "MEMORY", "TIMEOUT", "BINDINGS", "DEPLOYED",
        ],
        &rows,
    );
    Ok(())
}
