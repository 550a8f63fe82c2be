//! `keyhole audit`, `keyhole audit verify` and `keyhole audit prune`:
//! reading the trail, checking it, and removing its oldest records under a
//! signed checkpoint (retention).

use super::{Access, Target, output};
use anyhow::bail;
use clap::{Args, Subcommand};
use keyhole_host::admin::Request;
use keyhole_host::audit::{Entry, Event, PruneReport, Pruned, Query, Verification};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only records about this function.
    #[arg(long)]
    function: Option<String>,
    /// Only records about this secret.
    #[arg(long)]
    secret: Option<String>,
    /// Only records from this long ago on, e.g. 1h.
    #[arg(long, value_name = "DURATION", value_parser = super::secrets::parse_duration)]
    since: Option<i64>,
    /// At most this many records, the most recent.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the chain: every record unchanged, none deleted, inserted or
    /// reordered. Exits non-zero naming the first bad record.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove records older than a duration (retention). What goes is
    /// replaced by a checkpoint signed with the trail's key, so `verify`
    /// still proves nothing after it was changed; a trail that does not
    /// verify is not pruned. Needs the admin role.
    Prune {
        /// Remove records older than this, e.g. 90d.
        #[arg(long, value_name = "DURATION", value_parser = super::secrets::parse_duration)]
        older_than: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `keyhole audit …`.
pub fn run(target: &Target, args: AuditArgs) -> anyhow::Result<()> {
    let backend = target.backend(Access::Existing)?;
    match args.command {
        Some(AuditCommand::Verify { json }) => {
            let verification: Verification = backend.call(Request::AuditVerify)?;
            if json {
                output::json(&verification)?;
            }
            return report(&verification, json);
        }
        Some(AuditCommand::Prune { older_than, json }) => {
            let pruned: PruneReport = backend.call(Request::AuditPrune {
                older_than_secs: older_than.unsigned_abs(),
            })?;
            if json {
                return output::json(&pruned);
            }
            match &pruned.pruned {
                Some(range) if pruned.removed > 0 => {
                    println!(
                        "removed {} audit record(s); {}",
                        pruned.removed,
                        pruned_text(range)
                    )
                }
                Some(range) => println!("nothing to remove; {}", pruned_text(range)),
                None => println!("nothing to remove: no record is that old"),
            }
            return Ok(());
        }
        None => {}
    }
    let since_ms = args
        .since
        .map(|secs| keyhole_host::audit::now_ms() - secs.saturating_mul(1000));
    let entries: Vec<Entry> = backend.call(Request::Audit(Query {
        function: args.function,
        secret: args.secret,
        since_ms,
        limit: Some(args.limit),
    }))?;
    if args.json {
        return output::json(&entries);
    }
    for entry in &entries {
        println!("{}", line(entry));
    }
    Ok(())
}

fn report(v: &Verification, json: bool) -> anyhow::Result<()> {
    match v.first_bad_anywhere() {
        Some((None, bad)) => bail!(
            "the audit trail was tampered with: record {}: {} ({} records before it verify)",
            bad.seq,
            bad.problem,
            v.records
        ),
        Some((Some(node), bad)) => bail!(
            "the fleet's audit trail was tampered with: node {node} record {}: {}",
            bad.seq,
            bad.problem,
        ),
        None => {}
    }
    if json {
        return Ok(());
    }
    // In a fleet, the first line is about this replica's own chain, the
    // spool of what it recorded.
    let whose = if v.nodes.is_empty() {
        "audit trail"
    } else {
        "this replica's own audit chain"
    };
    match &v.head {
        Some((seq, mac)) => println!(
            "{whose} intact: {} records; head is record {seq} with MAC {mac} (keep it elsewhere to detect a later truncation)",
            v.records
        ),
        None => println!("{whose} intact: no records yet"),
    }
    if let Some(range) = &v.pruned {
        println!(
            "{} (verified from its signed checkpoint)",
            pruned_text(range)
        );
    }
    if !v.nodes.is_empty() {
        println!(
            "the fleet's trail ({} nodes), each node's chain verified apart:",
            v.nodes.len()
        );
    }
    for node in &v.nodes {
        match &node.verification.head {
            Some((seq, mac)) => println!(
                "  node {}: intact, {} records; head is record {seq} with MAC {mac}",
                node.node, node.verification.records
            ),
            None => println!("  node {}: intact, no records yet", node.node),
        }
    }
    Ok(())
}

/// What retention removed, in words.
fn pruned_text(range: &Pruned) -> String {
    format!(
        "records 1 to {} were removed by retention (the newest of them from {}, last pruned {})",
        range.through_seq,
        output::time(range.through_ms / 1000),
        output::time(range.pruned_at_ms / 1000),
    )
}

/// One record as a line: time, sequence, who, what, outcome.
fn line(entry: &Entry) -> String {
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.at_ms.max(0) as u64),
    );
    let what = match &entry.event {
        Event::Function(e) => format!(
            "function {} request {} {} binding {}{}{} -> {}{}{}",
            e.function,
            e.request,
            e.operation,
            e.binding,
            e.secret
                .as_ref()
                .map_or_else(String::new, |s| format!(" secret {s}")),
            e.version.map_or_else(String::new, |v| format!(" v{v}")),
            e.outcome.as_str(),
            e.destination
                .as_ref()
                .map_or_else(String::new, |d| format!(" toward {d}")),
            e.reason
                .as_ref()
                .map_or_else(String::new, |r| format!(" ({r})")),
        ),
        Event::Admin(e) => format!(
            "admin {} ({}) {} {} -> {}{}",
            e.token,
            e.role,
            e.action,
            e.target,
            e.outcome,
            e.detail
                .as_ref()
                .map_or_else(String::new, |d| format!(" ({d})")),
        ),
        Event::Cut(e) => format!(
            "CUT: records after #{} were removed, or the trail's head was edited, before this record was written",
            e.after_seq
        ),
        Event::Lost(e) => format!(
            "LOST {} function record(s): the trail could not keep up",
            e.records
        ),
    };
    match &entry.node {
        Some(node) => format!("{at} {node} #{} {what}", entry.seq),
        None => format!("{at} #{} {what}", entry.seq),
    }
}
