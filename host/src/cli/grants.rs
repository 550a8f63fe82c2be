//! `keyhole grant`, `revoke` and `grants`: the operator's decisions.

use super::{Access, Target, output};
use anyhow::bail;
use clap::Args;
use keyhole_host::admin::Request;
use keyhole_host::admin::types::{ApproveBody, Approved, FunctionListing, GrantBody, Granted};
use keyhole_host::names;
use keyhole_host::operations::{Operation, OperationSet};
use keyhole_host::outbound::egress::EgressList;
use keyhole_host::store::Grant;

#[derive(Args)]
pub struct GrantArgs {
    /// The function being granted.
    function: String,
    /// The binding name the function's code uses.
    binding: String,
    /// The stored secret the binding resolves to.
    #[arg(long, value_name = "NAME")]
    secret: String,
    /// Operations allowed, comma-separated: hmac, sign, seal, inject, reveal.
    #[arg(long, value_name = "OPS", value_parser = parse_ops)]
    allow: OperationSet,
    /// For `inject`: the hosts the secret may be sent to, comma-separated
    /// `host`, `host:port` or `*.example.com`. A host without a port means
    /// the scheme's default port.
    #[arg(long, value_name = "HOSTS", value_parser = parse_egress)]
    egress: Option<EgressList>,
    /// Keep the operations that cannot disclose the value (hmac, sign,
    /// seal, inject; never reveal) working when the function is redeployed
    /// with another component, until you approve it. Without it, new code
    /// gets nothing of this grant until `keyhole approve`.
    #[arg(long)]
    follow_redeploys: bool,
    /// Grant only if the deployed component's SHA-256 starts with this (at
    /// least 8 hex digits): the code you reviewed (`keyhole functions`).
    #[arg(long, value_name = "SHA256")]
    digest: Option<String>,
}

fn parse_egress(list: &str) -> Result<EgressList, String> {
    match EgressList::parse_list(list) {
        Ok(egress) if egress.is_empty() => Err("name at least one host".into()),
        Ok(egress) => Ok(egress),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_ops(list: &str) -> Result<OperationSet, String> {
    match OperationSet::parse_list(list) {
        Ok(set) if set.is_empty() => {
            Err("name at least one operation (hmac, sign, seal, inject, reveal)".into())
        }
        Ok(set) => Ok(set),
        Err(e) => Err(e.to_string()),
    }
}

/// `keyhole grant`: map a requested binding to a secret with operations.
pub fn grant(target: &Target, args: GrantArgs) -> anyhow::Result<()> {
    names::validate("binding", &args.binding)?;
    let injects = args.allow.contains(Operation::Inject);
    match (&args.egress, injects) {
        (None, true) => bail!(
            "`inject` needs --egress: the hosts the secret may be sent to, e.g. --egress api.example.com"
        ),
        (Some(_), false) => {
            bail!(
                "--egress applies only to the `inject` operation; add it to --allow or drop --egress"
            )
        }
        _ => {}
    }
    let granted: Granted = target.backend(Access::Existing)?.call(Request::Grant {
        function: args.function,
        binding: args.binding,
        body: GrantBody {
            secret: args.secret,
            allow: args.allow,
            egress: args.egress.unwrap_or_default(),
            follow_redeploys: args.follow_redeploys,
            digest: args.digest,
        },
    })?;
    let grant = &granted.grant;
    println!(
        "granted `{}` binding `{}` -> secret `{}` [{}]{} for component sha256 {}{}",
        grant.function,
        grant.binding,
        grant.secret,
        grant.allow,
        egress_note(&grant.egress),
        short(&grant.digest),
        if grant.follow_redeploys {
            " (follows redeploys, but for reveal)"
        } else {
            ""
        }
    );
    let unused = grant
        .allow
        .iter()
        .filter(|op| !granted.requested.contains(*op))
        .collect::<OperationSet>();
    if !unused.is_empty() {
        println!(
            "note: the manifest requests only [{}] for this binding, so [{unused}] stays unused until it asks for it",
            granted.requested
        );
    }
    Ok(())
}

fn egress_note(egress: &EgressList) -> String {
    if egress.is_empty() {
        String::new()
    } else {
        format!(" egress [{egress}]")
    }
}

/// `keyhole approve`: approve a function's outbound hosts.
pub fn approve(target: &Target, function: String, digest: Option<String>) -> anyhow::Result<()> {
    let approved: Approved = target.backend(Access::Existing)?.call(Request::Approve {
        function,
        body: ApproveBody { digest },
    })?;
    let info = &approved.function;
    println!(
        "approved `{}` at component sha256 {}: its grants, and outbound {}",
        info.name,
        short(&info.component_sha256),
        if info.approved_outbound.is_empty() {
            "none".to_owned()
        } else {
            info.approved_outbound.to_string()
        }
    );
    Ok(())
}

/// `keyhole revoke`: remove one grant.
pub fn revoke(target: &Target, function: String, binding: String) -> anyhow::Result<()> {
    let grant: Grant = target
        .backend(Access::Existing)?
        .call(Request::Revoke { function, binding })?;
    println!(
        "revoked `{}` binding `{}` (was secret `{}` [{}])",
        grant.function, grant.binding, grant.secret, grant.allow
    );
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..16.min(digest.len())]
}

/// `keyhole grants`: list grants, of one function or all; with `pending`,
/// only those given for another component than the one deployed now.
pub fn list(
    target: &Target,
    function: Option<String>,
    pending: bool,
    json: bool,
) -> anyhow::Result<()> {
    let backend = target.backend(Access::Existing)?;
    let mut grants: Vec<Grant> = backend.call(Request::Grants { function })?;
    let functions: Vec<FunctionListing> = backend.call(Request::Functions)?;
    let deployed = |name: &str| {
        functions
            .iter()
            .find(|f| f.info.name == name)
            .map_or("", |f| f.info.component_sha256.as_str())
    };
    if pending {
        grants.retain(|g| g.awaits_approval(deployed(&g.function)));
    }
    if json {
        return output::json(&grants);
    }
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                g.function.clone(),
                g.binding.clone(),
                g.secret.clone(),
                g.allow.to_string(),
                if g.egress.is_empty() {
                    "-".to_owned()
                } else {
                    g.egress.to_string()
                },
                short(&g.digest).to_owned(),
                match (g.awaits_approval(deployed(&g.function)), g.follow_redeploys) {
                    (false, _) => "approved".to_owned(),
                    (true, false) => "awaiting-approval".to_owned(),
                    (true, true) => "awaiting-approval (all but reveal follow)".to_owned(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "FUNCTION", "BINDING", "SECRET", "ALLOW", "EGRESS", "DIGEST", "STATE",
        ],
        &rows,
    );
    Ok(())
}
