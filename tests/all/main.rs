//! Keyhole's integration tests, in one binary (as wasmtime's `tests/all`):
//! a real `keyhole` binary on a fresh data directory, real components built
//! from source, real HTTP over loopback. One module per area; the harness
//! is `common`.

mod common;

mod admin;
mod audit;
mod cli;
mod compiled_cache;
mod console;
mod crash;
mod deploy_gate;
mod dev;
mod fleet;
mod fuzz_corpora;
mod hostile;
mod injection;
mod isolation;
mod js_functions;
mod keys;
mod new_function;
mod other_runtimes;
mod redaction;
mod reload;
mod rotation;
mod secrets;
mod tampering;
