//! `keyhole`: the node and its command-line interface.

mod cli;

use std::process::ExitCode;

/// mimalloc rather than the system allocator: every request allocates and
/// frees its store, instance and HTTP state on its worker thread, and
/// mimalloc serves that from thread-local free lists, with no lock shared
/// between worker cores.
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
