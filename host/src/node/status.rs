//! What `keyhole status` reports: whether a node serves a state it can
//! vouch for, and if not, why.
//!
//! Invariant: a node that is cut off from its fleet, stopped at an entry
//! it cannot apply, or past `--max-stale` is never reported healthy. Why:
//! such a node still serves (fail static), so the only way an operator
//! learns that its grants may be out of date is by asking it — and a
//! check that said "fine" then would be worse than none.

use serde::{Deserialize, Serialize};

/// A node's (or, without a running node, a data directory's) state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The Keyhole version answering.
    pub version: String,
    /// Whether this is a running node (`false`: a data directory read by
    /// the CLI, which serves nothing).
    pub running: bool,
    /// Functions served (running) or deployed (data directory).
    pub functions: usize,
    /// The store revision loaded (running) or stored (data directory).
    pub revision: Option<u64>,
    /// The node's place in its fleet, if it is a fleet's replica.
    pub fleet: Option<FleetReport>,
    /// Why the node's last load failed, if it did: it serves what it
    /// loaded before, so a change made since may not be in force.
    #[serde(default)]
    pub load_error: Option<String>,
}

/// A fleet replica's link to its fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// The fleet's id.
    pub id: Option<String>,
    /// Whether the node reaches the fleet's servers now.
    pub connected: bool,
    /// The last entry of the fleet's log applied to this replica.
    pub applied: u64,
    /// Seconds since the node last knew it was up to date (`None`: not
    /// since it started).
    pub seconds_since_sync: Option<f64>,
    /// Entries rejected as forged since the node started.
    pub rejected_entries: u64,
    /// Why the node stopped at an entry it cannot apply, if it did.
    pub blocked: Option<String>,
    /// `--max-stale`, in seconds, if set.
    pub max_stale_secs: Option<i64>,
    /// Why secret operations are refused now, if the node is past
    /// `--max-stale`.
    pub stale: Option<String>,
    /// This replica's name in the fleet's audit trail (once it reached
    /// the fleet).
    #[serde(default)]
    pub node: Option<String>,
    /// Records of this replica's audit chain the fleet's trail does not
    /// hold yet (they wait in the replica while it is cut off).
    #[serde(default)]
    pub audit_waiting: u64,
}

impl NodeStatus {
    /// Why the node does not serve a state it can vouch for (empty: it
    /// does). A data directory read by the CLI vouches for nothing about
    /// a node, so it has no problems of this kind.
    pub fn problems(&self) -> Vec<String> {
        if !self.running {
            return Vec::new();
        }
        let mut problems = Vec::new();
        if let Some(why) = &self.load_error {
            problems.push(format!(
                "its last load failed ({why}): it serves what it loaded before, and changes made since are not in force"
            ));
        }
        let Some(fleet) = &self.fleet else {
            return problems;
        };
        if !fleet.connected {
            let since = fleet
                .seconds_since_sync
                .map_or("since it started".to_owned(), |s| format!("for {s:.0} s"));
            problems.push(format!(
                "cut off from the fleet {since}: serving its last state, which may miss revocations"
            ));
        }
        if let Some(why) = &fleet.blocked {
            problems.push(format!("stopped at an entry it cannot apply: {why}"));
        }
        if let Some(why) = &fleet.stale {
            problems.push(format!("refusing secret operations: {why}"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> FleetReport {
        FleetReport {
            id: Some("f".into()),
            connected: true,
            applied: 3,
            seconds_since_sync: Some(0.1),
            rejected_entries: 0,
            blocked: None,
            max_stale_secs: None,
            stale: None,
            node: None,
            audit_waiting: 0,
        }
    }

    fn node(fleet: Option<FleetReport>) -> NodeStatus {
        NodeStatus {
            version: "0".into(),
            running: true,
            functions: 1,
            revision: Some(1),
            fleet,
            load_error: None,
        }
    }

    #[test]
    fn a_node_cut_off_blocked_or_stale_is_never_healthy() {
        assert!(node(None).problems().is_empty());
        assert!(node(Some(fleet())).problems().is_empty());
        let cut = FleetReport {
            connected: false,
            seconds_since_sync: Some(12.0),
            ..fleet()
        };
        assert!(node(Some(cut)).problems()[0].contains("for 12 s"));
        let blocked = FleetReport {
            blocked: Some("x".into()),
            ..fleet()
        };
        assert_eq!(node(Some(blocked)).problems().len(), 1);
        let stale = FleetReport {
            stale: Some("y".into()),
            ..fleet()
        };
        assert_eq!(node(Some(stale)).problems().len(), 1);
        let stuck = NodeStatus {
            load_error: Some("tampered".into()),
            ..node(None)
        };
        assert!(stuck.problems()[0].contains("last load failed"));
    }
}
