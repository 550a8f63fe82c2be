//! Outbound: what leaves the node on a function's behalf, and where it may
//! go.
//!
//! Owns: egress lists as pure configuration, parsed and matched without
//! I/O ([`egress`]); the rules an outgoing `wasi:http` request passes —
//! approved hosts, checked addresses, hop counting (`rules`,
//! re-exported here); and header-token injection, which puts a secret into
//! an outgoing request only toward its grant's egress list
//! ([`injection`]).
//!
//! Invariant: nothing is sent before every check has passed; a refused
//! request leaves the node with nothing. Why: a token sent to the wrong
//! host cannot be called back.
//!
//! Never touches: the store or the admin API. Grants arrive already
//! resolved (from `secrets`), and refusals are reported through the
//! node's metrics and audit trail.

pub mod egress;
pub mod injection;
mod rules;

pub use rules::{
    AddressPolicy, Destination, HOPS_HEADER, IpNet, MAX_HOPS, OutboundRules, Resolver,
    SystemResolver, choose_address, non_global_reason, send,
};
