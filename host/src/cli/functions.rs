//! `keyhole deploy`, `undeploy` and `functions`: the developer's commands.

use super::{Access, Target, output};
use anyhow::Context;
use base64::Engine as _;
use keyhole_host::admin::Request;
use keyhole_host::admin::types::{Deploy, Deployed, FunctionListing, Undeployed};
use keyhole_host::deploy::manifest;
use keyhole_host::deploy::{self, BindingState};
use keyhole_host::engine::runtime::Runtime;
use std::path::Path;

/// `keyhole deploy`: send the manifest and its component to be checked,
/// scanned and stored, and report each binding's state.
pub fn deploy(
    target: &Target,
    manifest_path: &Path,
    allow_findings: Vec<String>,
) -> anyhow::Result<()> {
    let manifest_text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
    let manifest = manifest::load(manifest_path)?;
    let component = std::fs::read(&manifest.component).with_context(|| {
        format!(
            "cannot read component {} (named by the manifest's `component`)",
            manifest.component.display()
        )
    })?;
    // A refused deploy into a data directory without a store creates none:
    // check manifest, component and scan before the store is made.
    if !target.remote()
        && !target
            .data
            .join(keyhole_host::store::DATABASE_FILE)
            .exists()
    {
        let runtime = Runtime::compile_only().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let prepared = deploy::prepare(&runtime, manifest_path)?;
        deploy::gate(
            &prepared.deployment,
            &prepared.component_path,
            &[],
            &allow_findings,
            &|_| deploy::Disclosure::Named,
        )?;
    }
    let request = Request::Deploy(Deploy {
        manifest: manifest_text,
        manifest_path: manifest_path.display().to_string(),
        component_base64: base64::engine::general_purpose::STANDARD.encode(&component),
        allow_findings,
    });
    drop(component);
    let deployed: Deployed = target.backend(Access::CreateIfMissing)?.call(request)?;
    for warning in &deployed.warnings {
        eprintln!("warning: {warning}");
    }
    for finding in &deployed.allowed_findings {
        eprintln!("warning: deployed despite {finding} (allowed by --allow-finding)");
    }
    for id in &deployed.unused_allowances {
        eprintln!("warning: --allow-finding {id} matched no finding");
    }
    let info = &deployed.function.info;
    println!(
        "deployed `{}` at {} ({} KiB, sha256 {})",
        info.name,
        info.routes.join(", "),
        info.component_size.div_ceil(1024),
        &info.component_sha256[..16]
    );
    for b in &deployed.function.binding_states {
        let line = match &b.state {
            BindingState::Granted { secret } => format!("granted (secret `{secret}`)"),
            BindingState::Partial { secret, missing } => {
                format!(
                    "partially granted (secret `{secret}`; {missing} still needs an operator's grant)"
                )
            }
            BindingState::Pending => format!(
                "pending: an operator runs `keyhole grant {} {} --secret NAME --allow {}`",
                info.name, b.binding, b.operations
            ),
            BindingState::AwaitingApproval { secret, held } => format!(
                "granted (secret `{secret}`) for other code: {held} waits until an operator reviews this component and runs `keyhole approve {}`",
                info.name
            ),
        };
        println!("  {} [{}]: {line}", b.binding, b.operations);
    }
    let pending = info.pending_outbound();
    if !info.outbound.is_empty() {
        if pending.is_empty() {
            println!("  outbound {}: approved", info.outbound);
        } else {
            println!(
                "  outbound {}: pending: an operator runs `keyhole approve {}`",
                pending, info.name
            );
        }
    }
    Ok(())
}

/// `keyhole undeploy`: remove a function and its grants.
pub fn undeploy(target: &Target, function: String) -> anyhow::Result<()> {
    let done: Undeployed = target
        .backend(Access::Existing)?
        .call(Request::Undeploy { function })?;
    println!(
        "undeployed `{}` and removed its {} grant(s)",
        done.function, done.grants
    );
    Ok(())
}

/// `keyhole functions`: deployed functions with their bindings' states.
pub fn list(target: &Target, json: bool) -> anyhow::Result<()> {
    let listings: Vec<FunctionListing> =
        target.backend(Access::Existing)?.call(Request::Functions)?;
    if json {
        return output::json(&listings);
    }
    let rows: Vec<Vec<String>> = listings
        .iter()
        .map(|l| {
            let bindings: Vec<String> = l
                .binding_states
                .iter()
                .map(|b| {
                    let word = match b.state {
                        BindingState::Granted { .. } => "granted",
                        BindingState::Partial { .. } => "partial",
                        BindingState::Pending => "pending",
                        BindingState::AwaitingApproval { .. } => "awaiting-approval",
                    };
                    format!("{}:{word}", b.binding)
                })
                .collect();
            let pending = l.info.pending_outbound();
            let outbound = if l.info.outbound.is_empty() {
                "-".to_owned()
            } else if pending.is_empty() {
                format!("{}:approved", l.info.outbound)
            } else {
                format!("{pending}:pending")
            };
            vec![
                l.info.name.clone(),
                l.info.routes.join(","),
                format!("{} MiB", l.info.memory_mib),
                format!("{} ms", l.info.timeout_ms),
                l.info
                    .max_concurrency
                    .map_or_else(|| "share".to_owned(), |n| n.to_string()),
                bindings.join(" "),
                outbound,
                output::time(l.info.deployed_at),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "ROUTES",
            "MEMORY",
            "TIMEOUT",
            "CONCURRENCY",
            "BINDINGS",
            "OUTBOUND",
            "DEPLOYED",
        ],
        &rows,
    );
    Ok(())
}
