//! Secrets: the host side of `keyhole:secrets`, the interface through which
//! a function reaches a secret, and of `wasmcloud:secrets`, served from the
//! same grants for components written for wasmCloud (`wasmcloud`).
//!
//! Owns: a request's secrets state and the function's resolved bindings
//! (`host`: `SecretsCtx`, `FunctionSecrets`, `SecretHandle`, and the
//! checked `Host` implementation), the per-request table of open handles
//! ([`handle_slab`]), and whether a loaded grant is still in force while a
//! request runs ([`standing`]).
//!
//! Invariant: every call is checked against the calling function's grant
//! for that operation, as loaded and as in force now, and is counted and
//! audited; secret bytes enter guest memory only through a granted
//! `reveal`. Why: deny by default is the product.
//!
//! Never touches: the store's state (bindings arrive resolved from the
//! node's catalog; only the store's clock and timestamp type are shared
//! vocabulary), the admin API, or HTTP (outgoing requests are
//! `outbound`'s).

mod ctx;
pub(crate) mod handle_slab;
mod host_impl;
pub mod standing;
mod wasmcloud;

pub use ctx::{
    BoundSecret, FunctionSecrets, GraceVersion, LAST_RECORDED_REFUSAL, MAX_BINDING_LEN,
    MAX_OPEN_HANDLES, MAX_REFUSED_PER_REQUEST, Refusal, RefusalBudget, RevealedCopies,
    SecretHandle, SecretsCtx, TooManyRefusals,
};
pub(crate) use host_impl::message;
pub use host_impl::{SecretsHost, SecretsView, add_to_linker};
