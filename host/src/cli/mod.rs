//! Command-line parsing and dispatch. Errors become `anyhow` here, at the
//! binary's edge; the library keeps typed errors.

mod functions;
mod grants;
mod output;
mod secrets;
mod serve;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use keyhole_host::master_key::{self, KeySource};
use keyhole_host::store::SqliteStore;
use std::path::{Path, PathBuf};

/// Keyhole: run untrusted edge functions with the secrets they need,
/// without handing them the keys.
#[derive(Parser)]
#[command(name = "keyhole", version, about)]
struct Cli {
    /// The node's data directory (store and, by default, master key).
    #[arg(long, global = true, env = "KEYHOLE_DATA", default_value = ".keyhole")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve deployed functions over HTTP.
    Serve(serve::ServeArgs),
    /// Store, list and remove secrets (operator).
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Deploy a function from its keyhole.toml manifest (developer).
    Deploy {
        /// Path of the function's keyhole.toml.
        manifest: PathBuf,
    },
    /// Remove a deployed function and its grants.
    Undeploy {
        /// The function's name.
        function: String,
    },
    /// List deployed functions and the state of their bindings.
    Functions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Grant a function's binding a secret and operations (operator).
    Grant(grants::GrantArgs),
    /// Remove a function's grant for a binding.
    Revoke {
        /// The function's name.
        function: String,
        /// The binding name.
        binding: String,
    },
    /// List grants, of one function or of all.
    Grants {
        /// Only this function's grants.
        function: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let data = cli.data.as_path();
    match cli.command {
        Command::Serve(args) => serve::run(data, args),
        Command::Secret(command) => secrets::run(data, command),
        Command::Deploy { manifest } => functions::deploy(data, &manifest),
        Command::Undeploy { function } => functions::undeploy(data, &function),
        Command::Functions { json } => functions::list(data, json),
        Command::Grant(args) => grants::grant(data, args),
        Command::Revoke { function, binding } => grants::revoke(data, &function, &binding),
        Command::Grants { function, json } => grants::list(data, function.as_deref(), json),
    }
}

/// Whether a command may create the store when there is none yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reading commands: no store is an error, and nothing is created.
    Existing,
    /// Commands that write: create the data directory, key and store.
    CreateIfMissing,
}

/// Opens the store in `data`, with the master key from the environment or
/// the key file, refusing to mint a new key for a store that already exists.
fn open_store(data: &Path, access: Access) -> anyhow::Result<SqliteStore> {
    let db = data.join(keyhole_host::store::DATABASE_FILE);
    let exists = db.exists();
    if !exists && access == Access::Existing {
        bail!(
            "no Keyhole store in {} (set --data or KEYHOLE_DATA; `keyhole secret put` or `keyhole deploy` creates one)",
            data.display()
        );
    }
    let key_file = data.join(master_key::MASTER_KEY_FILE);
    if exists && std::env::var_os(master_key::MASTER_KEY_ENV).is_none() && !key_file.exists() {
        bail!(
            "the store {} exists but its master key is missing: set {} or restore {}",
            db.display(),
            master_key::MASTER_KEY_ENV,
            key_file.display()
        );
    }
    if !exists {
        std::fs::create_dir_all(data)
            .with_context(|| format!("creating data directory {}", data.display()))?;
    }
    let (key, source) = master_key::load(data)?;
    if let KeySource::Created(path) = &source {
        eprintln!(
            "warning: created a new master key in {}; in production supply {} from outside the data directory",
            path.display(),
            master_key::MASTER_KEY_ENV
        );
    }
    Ok(SqliteStore::open(data, key)?)
}
