//! Host bindings generated from the WIT package in `wit/` (its `node`
//! world: the function world, `wasmcloud:secrets` and `wasi:config/store`).
//!
//! `wasi:*` interfaces map to wasmtime-wasi's and wasmtime-wasi-http's own
//! bindings, so their host implementations are used unchanged; the
//! `secret` resource maps to [`crate::secrets::SecretHandle`].

#![allow(missing_docs, reason = "bindgen-generated code")]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keyhole:secrets/node",
    imports: { default: trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:cli": wasmtime_wasi::p2::bindings::cli,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "keyhole:secrets/secrets.secret": crate::secrets::SecretHandle,
        // The same host state behind wasmCloud's handle: one table of open
        // secrets per request, whichever interface opened them.
        "wasmcloud:secrets/store.secret": crate::secrets::SecretHandle,
    },
});

pub(crate) use keyhole::secrets::secrets;
pub(crate) use wasi::config::store as wasi_config_store;
pub(crate) use wasmcloud::secrets::{reveal as wasmcloud_reveal, store as wasmcloud_store};
