//! `keyhole new NAME`: a function's folder that builds and serves unchanged
//! — source, manifest, a `.gitignore` that keeps local secret files out,
//! and a README with the commands.
//!
//! The project carries its own copy of the guest SDK and of the WIT it is
//! built against (both embedded in this binary when it was built), so it
//! builds without this repository and without a registry for the SDK:
//! anywhere Rust and the `wasm32-wasip2` target are ([`rust`]), or Node.js
//! and npm, which fetch the SDK's build tools from the npm registry
//! ([`js`]).
//!
//! Invariant: a refused `new` writes nothing, and a `new` never writes into
//! a folder that exists.

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

mod js;
mod rust;

/// The languages a project can be made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Rust crate built for wasm32-wasip2 with the guest SDK.
    Rust,
    /// JavaScript (or TypeScript), built with the JS guest SDK's
    /// `keyhole-build-js` (esbuild and ComponentizeJS from npm).
    Js,
}

/// Runs `keyhole new NAME --lang LANG` in the current directory.
pub fn run(name: &str, lang: Lang) -> anyhow::Result<()> {
    keyhole_host::names::validate("function", name)
        .with_context(|| format!("`{name}` cannot name a function; nothing was written"))?;
    let dir = PathBuf::from(name);
    if dir.exists() {
        bail!(
            "{} exists already: choose another name, or remove it; nothing was written",
            dir.display()
        );
    }
    // Everything is written in a hidden sibling first and renamed into
    // place, so a failure leaves no half-made project behind.
    let staging = PathBuf::from(format!(".{name}.keyhole-new"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the leftover {}", staging.display()))?;
    }
    let written = match lang {
        Lang::Rust => rust::write_project(&staging, name),
        Lang::Js => js::write_project(&staging, name),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context("nothing was written"));
    }
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("moving the new project into {}", dir.display()))?;
    match lang {
        Lang::Rust => {
            println!("created {}/ (a Rust function)", dir.display());
            println!(
                "  cd {name} && keyhole dev   # or cargo build --release; see {name}/README.md"
            );
        }
        Lang::Js => {
            println!("created {}/ (a JavaScript function)", dir.display());
            println!("  cd {name} && npm install && keyhole dev   # see {name}/README.md");
        }
    }
    Ok(())
}

/// Writes `text` to `path` inside the project folder `dir`, making the
/// folders it needs.
fn write_file(dir: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// What every new project's `.gitignore` keeps out of git: local secret
/// values (`keyhole dev`'s, and any file a key was put in).
const GITIGNORE_SECRETS: &str = "# Local secret values (keyhole dev's, and any file you put a key in) never go in git.\n/.keyhole/\n*.secret\n*.key\n";

/// The files under `root` (relative, sorted), skipping the top-level
/// entries named in `skip`: what the embedding tests compare with.
#[cfg(test)]
fn files_under(root: &Path, skip: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if skip.contains(&relative.as_str()) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

/// A new project's `keyhole.toml`: the function `name` at `/{name}`, its
/// component at `component`, `limits` (the `[limits]` lines), and the one
/// binding every new function starts with, `SIGNING_KEY` for `hmac`.
fn manifest(name: &str, component: &str, limits: &str) -> String {
    format!(
        r#"# What this function is and what it asks for (see Keyhole's README).
name = "{name}"
component = "{component}"
routes = ["/{name}"]

[limits]
{limits}
# The secret it signs with: the host does the HMAC, the key never enters
# the function's memory. An operator grants it (`keyhole grant`).
[bindings.SIGNING_KEY]
allow = ["hmac"]
"#
    )
}

/// The README lines that run a built project on a node: the same for every
/// language, after its `build` line.
fn run_on_a_node(name: &str, build: &str) -> String {
    format!(
        r#"```sh
{build}
export KEYHOLE_DATA=~/keyhole-node     # the node's store and key: outside the project
keyhole deploy keyhole.toml
openssl rand 32 > signing.secret      # or any key you have; *.secret stays out of git
keyhole secret put signing-key --from-file signing.secret
keyhole grant {name} SIGNING_KEY --secret signing-key --allow hmac
keyhole serve                         # then: curl http://127.0.0.1:8080/{name}
```"#
    )
}
