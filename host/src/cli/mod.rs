//! Command-line parsing and dispatch. Errors become `anyhow` here, at the
//! binary's edge; the library keeps typed errors.

mod audit;
mod backend;
mod cluster;
mod dev;
mod functions;
mod grants;
mod master_key;
mod new;
mod output;
mod secrets;
mod serve;
mod status;
mod tokens;

use anyhow::bail;
use clap::{Parser, Subcommand};
use keyhole_host::crypto::master_key::{self as key, KeySource};
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
    /// Send commands to a running node's admin API instead of working on
    /// the data directory, e.g. http://127.0.0.1:8081 (with KEYHOLE_TOKEN).
    #[arg(long, global = true, env = "KEYHOLE_NODE", value_name = "URL")]
    node: Option<String>,
    /// Work on a fleet's state in NATS JetStream, through a replica in the
    /// data directory: comma-separated server URLs, e.g.
    /// nats://10.0.0.1:4222,nats://10.0.0.2:4222 (KEYHOLE_CLUSTER_CREDS
    /// names a credentials file, KEYHOLE_CLUSTER_CA a CA for TLS,
    /// KEYHOLE_CLUSTER_DOMAIN the fleet's JetStream domain at an edge site).
    #[arg(
        long,
        global = true,
        env = "KEYHOLE_CLUSTER",
        value_name = "URLS",
        hide_env_values = true
    )]
    cluster: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where a command acts: the data directory (alone, or as a fleet's
/// replica), or a node.
pub struct Target {
    data: PathBuf,
    node: Option<String>,
    cluster: Option<keyhole_host::store::fleet::ClusterConfig>,
}

impl Target {
    /// The backend for a command that reads (`Access::Existing`) or may
    /// create the store (`Access::CreateIfMissing`).
    fn backend(&self, access: Access) -> anyhow::Result<backend::Backend> {
        backend::Backend::open(
            &self.data,
            self.node.as_deref(),
            self.cluster.as_ref(),
            access,
        )
    }

    /// Whether commands go to a node.
    fn remote(&self) -> bool {
        backend::is_remote(self.node.as_deref())
    }

    /// Refuses commands that only work on the data directory.
    fn local_only(&self, command: &str) -> anyhow::Result<&Path> {
        if self.remote() {
            bail!(
                "`keyhole {command}` works on the node's data directory, not through the admin API: run it on the node without --node (unset KEYHOLE_NODE)"
            );
        }
        Ok(&self.data)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make a new function's folder, NAME/, that builds and serves
    /// unchanged: source, keyhole.toml, .gitignore and a README (developer).
    New {
        /// The function's name (and its folder's).
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
    },
    /// Run the function in this folder locally: build it, serve it on a
    /// dev store with local values for its bindings, granted what its
    /// manifest asks for, and rebuild and redeploy on every change
    /// (developer).
    Dev(dev::DevArgs),
    /// Serve deployed functions over HTTP.
    Serve(serve::ServeArgs),
    /// Store, rotate, roll back, list and remove secrets, and see who
    /// depends on them (operator).
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Deploy a function from its keyhole.toml manifest (developer).
    Deploy {
        /// Path of the function's keyhole.toml.
        manifest: PathBuf,
        /// Deploy even though the scan reports this finding (an ID such as
        /// `jwt@5123` from the refusal), after reviewing it; repeatable.
        #[arg(long, value_name = "ID")]
        allow_finding: Vec<String>,
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
    /// Approve what a deployed function asks for now: the outbound hosts
    /// in its manifest (operator).
    Approve {
        /// The function's name.
        function: String,
        /// Approve only if the deployed component's SHA-256 starts with
        /// this (at least 32 hex digits; `keyhole functions --json` shows it).
        #[arg(long, value_name = "SHA256")]
        digest: Option<String>,
    },
    /// Remove a function's grant for a binding.
    Revoke {
        /// The function's name.
        function: String,
        /// The binding name.
        binding: String,
    },
    /// Rotate the master key that protects every stored secret (operator).
    #[command(subcommand, name = "master-key")]
    MasterKey(master_key::MasterKeyCommand),
    /// Decrypt every stored secret version and report any that fail their
    /// integrity check.
    Check,
    /// Create, list and revoke admin API tokens (admin).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Read the audit trail, or verify that it was not tampered with.
    Audit(audit::AuditArgs),
    /// Work on the fleet itself (needs --cluster).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Say whether the node (with --node) or the data directory serves a
    /// state it can vouch for: what it serves, and its link to its fleet.
    /// Fails when a node is cut off from its fleet, stopped at an entry it
    /// cannot apply, or past --max-stale.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List grants, of one function or of all.
    Grants {
        /// Only this function's grants.
        function: Option<String>,
        /// Only grants given for another component than the one deployed
        /// now (they wait for `keyhole approve`).
        #[arg(long)]
        pending: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cluster = cluster::config(cli.cluster.as_deref())?;
    if cluster.is_some() && backend::is_remote(cli.node.as_deref()) {
        bail!(
            "--cluster and --node both name where commands go: give one (unset KEYHOLE_CLUSTER or KEYHOLE_NODE)"
        );
    }
    let target = Target {
        data: cli.data,
        node: cli.node,
        cluster,
    };
    let t = &target;
    match cli.command {
        Command::Serve(args) => return serve::run(&t.data, t.cluster.as_ref(), args),
        Command::Dev(args) => return dev::run(args),
        _ => {}
    }
    let outcome = run_command(t, cli.command);
    // What the command recorded in this replica's trail goes to the
    // fleet's before the process ends (or waits there for the next one).
    cluster::deliver_audit(&t.data);
    outcome
}

/// Runs one command other than `serve`.
fn run_command(t: &Target, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) | Command::Dev(_) => unreachable!("run handles serve and dev"),
        Command::New { name, lang } => new::run(&name, lang),
        Command::Secret(command) => secrets::run(t, command),
        Command::Deploy {
            manifest,
            allow_finding,
        } => functions::deploy(t, &manifest, allow_finding),
        Command::Undeploy { function } => functions::undeploy(t, function),
        Command::Functions { json } => functions::list(t, json),
        Command::Grant(args) => grants::grant(t, args),
        Command::Approve { function, digest } => grants::approve(t, function, digest),
        Command::Revoke { function, binding } => grants::revoke(t, function, binding),
        Command::Grants {
            function,
            pending,
            json,
        } => grants::list(t, function, pending, json),
        Command::MasterKey(command) => match &t.cluster {
            Some(config) => master_key::run_on_fleet(t.local_only("master-key")?, config, command),
            None => master_key::run(t.local_only("master-key")?, command),
        },
        Command::Check => master_key::check(t),
        Command::Token(command) => tokens::run(t, command),
        Command::Audit(args) => audit::run(t, args),
        Command::Status { json } => status::run(t, json),
        Command::Cluster(command) => cluster::run(t, command),
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
    Ok(open_store_with_source(data, access)?.0)
}

/// Like [`open_store`], and says where the master key came from.
fn open_store_with_source(data: &Path, access: Access) -> anyhow::Result<(SqliteStore, KeySource)> {
    let db = data.join(keyhole_host::store::DATABASE_FILE);
    let exists = db.exists();
    if !exists && access == Access::Existing {
        bail!(
            "no Keyhole store in {} (set --data or KEYHOLE_DATA; `keyhole secret put` or `keyhole deploy` creates one)",
            data.display()
        );
    }
    // Owner-only, and never one that others may write to.
    keyhole_host::store::private_dir(data)?;
    let key_file = data.join(key::MASTER_KEY_FILE);
    let key_from_env = std::env::var_os(key::MASTER_KEY_ENV).is_some();
    if exists && !key_from_env && !key_file.exists() {
        bail!(
            "the store {} exists but its master key is missing: set {} or restore {}",
            db.display(),
            key::MASTER_KEY_ENV,
            key_file.display()
        );
    }
    if exists && !key_from_env {
        master_key::finish_interrupted_rotation(data)?;
    }
    let (master, source) = key::load(data)?;
    if let KeySource::Created(path) = &source {
        eprintln!(
            "warning: created a new master key in {}; in production supply {} from outside the data directory",
            path.display(),
            key::MASTER_KEY_ENV
        );
    }
    Ok((SqliteStore::open(data, master)?, source))
}
