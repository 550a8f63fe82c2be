//! `keyhole audit` and `keyhole audit verify`: reading the trail.

use super::{Access, Target, output};
use anyhow::bail;
use clap::{Args, Subcommand};
use keyhole_host::admin::Request;
use keyhole_host::audit::{Entry, Event, Query, Verification};

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
}

/// Runs `keyhole audit …`.
pub fn run(target: &Target, args: AuditArgs) -> anyhow::Result<()> {
    let backend = target.backend(Access::Existing)?;
    if let Some(AuditCommand::Verify { json }) = args.command {
        let verification: Verification = backend.call(Request::AuditVerify)?;
        if json {
            output::json(&verification)?;
        }
        return report(&verification, json);
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
    if let Some(bad) = &v.first_bad {
        bail!(
            "the audit trail was tampered with: record {}: {} ({} records before it verify)",
            bad.seq,
            bad.problem,
            v.records
        );
    }
    if !json {
        match &v.head {
            Some((seq, mac)) => println!(
                "audit trail intact: {} records; head is record {seq} with MAC {mac} (keep it elsewhere to detect a later truncation)",
                v.records
            ),
            None => println!("audit trail intact: no records yet"),
        }
    }
    Ok(())
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
        Event::Lost(e) => format!(
            "LOST {} function record(s): the trail could not keep up",
            e.records
        ),
    };
    format!("{at} #{} {what}", entry.seq)
}
