//! `keyhole`: the node and its command-line interface.

mod cli;

use std::process::ExitCode;

/// mimalloc rather than the system allocator: every request allocates and
/// frees its store, instance and HTTP state, and mimalloc's thread-local
/// free lists make that markedly cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
