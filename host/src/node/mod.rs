//! Node: the request path of a running Keyhole node.
//!
//! Owns: the front door that accepts connections and routes requests
//! ([`server`]), admission against fair shares ([`admission`]) and body
//! pacing ([`paced_body`]), running one request in a fresh instance
//! ([`invoke`]), what the node serves right now ([`catalog`]), marks of
//! which function used which secret version ([`usage`]), metrics
//! ([`observe`]), and what the node says of its own state ([`status`]).
//!
//! Invariant: a request costs an instance only once admitted, runs in an
//! instance of its own, and sees the snapshot that was in force when it
//! began, narrowed by what was withdrawn since. Why: no tenant may starve
//! another, and nothing one request does survives it.
//!
//! Never touches: SQL or the store's representation (it reads through the
//! `Store` trait), key bytes beyond handing them to `secrets` and
//! `crypto`, or the CLI.

pub mod admission;
pub mod catalog;
pub mod invoke;
pub mod observe;
pub(crate) mod paced_body;
pub mod server;
pub mod status;
pub(crate) mod usage;
