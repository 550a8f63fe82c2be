//! Keyhole: a WebAssembly edge runtime with secrets built in.
//!
//! Edge functions are Wasm components serving `wasi:http`. They reach
//! secrets only through `keyhole:secrets`, checked per call against the
//! grants an operator gave them; the host does the work with the key and
//! hands the guest an opaque handle.
//!
//! The pieces, in the order a request meets them: [`server`] routes it,
//! [`admission`] decides whether it may have an instance now (and
//! [`paced_body`] ends bodies that arrive too slowly), [`invoke`] runs a fresh instance from the [`catalog`] on the
//! [`runtime`] (whose header fields [`fields_budget`] holds to a budget),
//! whose [`secrets_host`] answers `keyhole:secrets` from values
//! the [`store`] keeps sealed with [`crypto`] (and, at every call, from
//! what [`standing`] says is still in force). Keys are used on the host
//! ([`keys`], [`material`]); bearer tokens reach only allowed hosts
//! ([`injection`], [`egress`]), and any outgoing request only approved
//! hosts at checked addresses ([`outbound`]); guest output is logged through
//! [`guest_log`], with secret values removed by [`redact`]. Rotation keeps previous
//! versions in a grace window; [`usage`] records which function last used
//! which version; [`scan`] refuses components that carry a secret inside.
//! People administer a node through [`admin`] (the CLI on the data
//! directory, or the HTTP admin API), as the roles in [`access`] allow;
//! every secret operation and admin action is recorded in the [`audit`]
//! trail (function records giving way to admin ones near a full disk:
//! [`disk_reserve`]), and [`observe`] counts what the node does for `/metrics`.

#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod bindings;
pub mod catalog;
pub mod crypto;
pub mod deploy;
pub mod disk_reserve;
pub mod egress;
pub mod fields_budget;
pub mod fuzzing;
pub mod guest_log;
pub mod handle_slab;
pub mod injection;
pub mod invoke;
pub mod keyed_hmac;
pub mod keys;
pub mod manifest;
pub mod master_key;
pub mod material;
pub mod module_cache;
pub mod names;
pub mod observe;
pub mod operations;
pub mod outbound;
pub mod paced_body;
pub mod redact;
pub mod runtime;
pub mod scan;
pub mod secret_value;
pub mod secrets_host;
pub mod server;
pub mod standing;
pub mod store;
pub mod usage;
