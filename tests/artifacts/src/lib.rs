//! Paths of the guest components the tests use, built from source for
//! wasm32-wasip2 by this crate's build script (as wasmtime's test-programs
//! artifacts are): the examples with their manifests, and `probe`.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
