//! Keyhole: a WebAssembly edge runtime with secrets built in.
//!
//! Edge functions are Wasm components serving `wasi:http`. They reach
//! secrets only through `keyhole:secrets` (or `wasmcloud:secrets`, for
//! components written for wasmCloud), checked per call against the grants
//! an operator gave them; the host does the work with the key and hands the
//! guest an opaque handle.
//!
//! The library is a set of rooms, each a folder whose `mod.rs` says what it
//! owns and what it must never touch. In the order a request meets them:
//! [`node`] accepts it, admits it against fair shares and runs it in a
//! fresh instance of what its catalog serves, on the [`engine`] (wasmtime,
//! configured for untrusted code), whose [`secrets`] host answers
//! `keyhole:secrets` from values the [`store`] keeps sealed with
//! [`crypto`], and whose [`config`] host serves its non-secret settings; tokens and outgoing requests leave only as [`outbound`]
//! allows, and guest output reaches the log through [`redact`]. On the
//! admin path, people act through [`admin`] (the CLI on the data
//! directory, or the HTTP admin API, as the roles in [`admin::access`]
//! allow), developers' components enter through [`deploy`], and every
//! secret operation and admin action is recorded in the [`audit`] trail.
//! [`names`] and [`operations`] are the vocabulary they share.

pub mod admin;
pub mod audit;
pub mod config;
pub mod crypto;
pub mod deploy;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod names;
pub mod node;
pub mod operations;
pub mod outbound;
pub(crate) mod redact;
pub mod secrets;
pub mod store;

#[cfg(test)]
mod layout;
