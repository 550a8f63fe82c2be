//! Engine: wasmtime, configured for untrusted components.
//!
//! Owns: the engine and its pooling allocator, the linker and the state a
//! request's store holds ([`runtime`]), the bindings generated from `wit/`
//! ([`bindings`]), the per-request budget of host memory in header fields
//! ([`fields_budget`]), and compiled components kept on disk
//! ([`module_cache`]).
//!
//! Invariant: a component is linked against exactly what the node
//! provides, and every instance runs under limits (memory, stack, tables,
//! time through epochs) set here. Why: the engine is where a hostile guest
//! meets the host.
//!
//! Never touches: the store's tables, grants or the admin API; it is given
//! component bytes and runs what it is given.

pub(crate) mod bindings;
pub(crate) mod fields_budget;
pub(crate) mod module_cache;
pub mod runtime;
