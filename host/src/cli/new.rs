//! `keyhole new NAME`: a function's folder that builds and serves unchanged
//! — source, manifest, a `.gitignore` that keeps local secret files out,
//! and a README with the commands.
//!
//! The project carries its own copy of the guest SDK and of the WIT it is
//! built against (both embedded in this binary when it was built), so it
//! builds anywhere Rust and the `wasm32-wasip2` target are, without this
//! repository and without a registry for the SDK.
//!
//! Invariant: a refused `new` writes nothing, and a `new` never writes into
//! a folder that exists.

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// The languages a project can be made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Rust crate built for wasm32-wasip2 with the guest SDK.
    Rust,
    /// JavaScript (not available yet).
    Js,
}

/// The guest SDK's sources, as `keyhole-sdk/src/…` of a new project.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    ("http.rs", include_str!("../../../guest-sdk/src/http.rs")),
    ("jwt.rs", include_str!("../../../guest-sdk/src/jwt.rs")),
    (
        "secrets.rs",
        include_str!("../../../guest-sdk/src/secrets.rs"),
    ),
];

/// Every WIT file the SDK's bindings read, as `wit/…` of a new project.
const WIT_FILES: &[(&str, &str)] = &[
    ("secrets.wit", include_str!("../../../wit/secrets.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../../../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
    (
        "deps/wasmcloud-secrets/secrets.wit",
        include_str!("../../../wit/deps/wasmcloud-secrets/secrets.wit"),
    ),
    (
        "deps/wasi-config/store.wit",
        include_str!("../../../wit/deps/wasi-config/store.wit"),
    ),
    (
        "deps/wasi-config/world.wit",
        include_str!("../../../wit/deps/wasi-config/world.wit"),
    ),
];

/// The SDK crate's manifest in a new project (its dependencies pinned as
/// this repository pins them).
const SDK_MANIFEST: &str = r#"[package]
name = "keyhole-sdk"
description = "Guest SDK for Keyhole edge functions (the copy `keyhole new` made)"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
wit-bindgen = "=0.62.0"
wasip2 = "=2.0.1"
base64 = "0.22"
"#;

/// Runs `keyhole new NAME --lang LANG` in the current directory.
pub fn run(name: &str, lang: Lang) -> anyhow::Result<()> {
    keyhole_host::names::validate("function", name)
        .with_context(|| format!("`{name}` cannot name a function; nothing was written"))?;
    if lang == Lang::Js {
        bail!(
            "JavaScript functions are not available in this build yet: use --lang rust; nothing was written"
        );
    }
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
    let written = write_rust_project(&staging, name);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context("nothing was written"));
    }
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("moving the new project into {}", dir.display()))?;
    println!("created {}/ (a Rust function)", dir.display());
    println!("  cd {name} && cargo build --release   # then see {name}/README.md");
    Ok(())
}

/// Writes the Rust project for function `name` into `dir`.
fn write_rust_project(dir: &Path, name: &str) -> anyhow::Result<()> {
    let crate_name = name.to_owned();
    let artifact = name.replace('-', "_");
    let route = format!("/{name}");
    let write = |path: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "Cargo.toml",
        &format!(
            r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
keyhole-sdk = {{ path = "keyhole-sdk" }}
wasip2 = "=2.0.1"

[profile.release]
opt-level = "s"
strip = true

# A project of its own, even when made inside another workspace.
[workspace]
"#
        ),
    )?;
    write(
        ".cargo/config.toml",
        "# Functions are components for wasm32-wasip2 (`rustup target add wasm32-wasip2`).\n[build]\ntarget = \"wasm32-wasip2\"\n",
    )?;
    write(
        ".gitignore",
        "/target\n# Local secret values (keyhole dev's, and any file you put a key in) never go in git.\n/.keyhole/\n*.secret\n*.key\n",
    )?;
    write(
        "keyhole.toml",
        &format!(
            r#"# What this function is and what it asks for (see Keyhole's README).
name = "{name}"
component = "target/wasm32-wasip2/release/{artifact}.wasm"
routes = ["{route}"]

[limits]
memory-mib = 16
timeout-ms = 2000

# The secret it signs with: the host does the HMAC, the key never enters
# the function's memory. An operator grants it (`keyhole grant`).
[bindings.SIGNING_KEY]
allow = ["hmac"]
"#
        ),
    )?;
    write("src/lib.rs", &function_source(name))?;
    write("README.md", &readme(name, &route))?;
    write("keyhole-sdk/Cargo.toml", SDK_MANIFEST)?;
    for (file, text) in SDK_SOURCES {
        write(&format!("keyhole-sdk/src/{file}"), text)?;
    }
    for (file, text) in WIT_FILES {
        write(&format!("wit/{file}"), text)?;
    }
    Ok(())
}

/// The new function's source: it signs the request's path with the secret
/// bound to `SIGNING_KEY`, which stays on the host.
fn function_source(name: &str) -> String {
    format!(
        r#"//! `{name}`: a Keyhole edge function. It answers with an HMAC of the
//! request's path made by the host with the secret bound to `SIGNING_KEY`;
//! the key never enters this function's memory.

use keyhole_sdk::{{http, secrets}};
use wasip2::http::types::{{IncomingRequest, ResponseOutparam}};

struct Function;

impl wasip2::exports::http::incoming_handler::Guest for Function {{
    fn handle(request: IncomingRequest, out: ResponseOutparam) {{
        let path = request.path_with_query().unwrap_or_default();
        match secrets::get("SIGNING_KEY").and_then(|key| key.hmac_sha256(path.as_bytes())) {{
            Ok(tag) => {{
                let hex: String = tag.iter().map(|b| format!("{{b:02x}}")).collect();
                let body = format!("hello from {name}: hmac-sha256({{path}}) = {{hex}}\n");
                http::respond(out, 200, "text/plain; charset=utf-8", body.as_bytes())
            }}
            // Not granted yet, or the secret is gone: say so.
            Err(e) => http::respond(out, 503, "text/plain; charset=utf-8", format!("{{e}}\n").as_bytes()),
        }}
    }}
}}

wasip2::http::proxy::export!(Function);
"#
    )
}

/// The new project's README.
fn readme(name: &str, route: &str) -> String {
    format!(
        r#"# {name}

A Keyhole edge function. Build it, then run it on a node:

```sh
cargo build --release                 # needs `rustup target add wasm32-wasip2`
keyhole deploy keyhole.toml
openssl rand 32 > signing.secret      # or any key you have; *.secret stays out of git
keyhole secret put signing-key --from-file signing.secret
keyhole grant {name} SIGNING_KEY --secret signing-key --allow hmac
keyhole serve                         # then: curl http://127.0.0.1:8080{route}
```

`keyhole-sdk/` and `wit/` are the guest SDK and the interface it binds, as the
`keyhole` that made this project had them.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every WIT file the repository has is in a new project (the SDK's
    /// bindings read the whole folder).
    #[test]
    fn a_new_project_carries_every_wit_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "wit") {
                    found.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        let mut embedded: Vec<String> = WIT_FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(found, embedded, "update WIT_FILES in cli/new.rs");
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/src");
        assert_eq!(
            std::fs::read_dir(sdk).unwrap().count(),
            SDK_SOURCES.len(),
            "update SDK_SOURCES in cli/new.rs"
        );
        // The SDK's dependencies pinned as the workspace pins them.
        let workspace =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
                .unwrap();
        for line in SDK_MANIFEST.lines().filter(|l| l.contains(" = \"")) {
            let dependency = line.split(" = ").next().unwrap();
            if ["name", "description", "version", "edition", "license"].contains(&dependency) {
                continue;
            }
            assert!(
                workspace.lines().any(|l| l == line),
                "{line} is not how the workspace pins {dependency}"
            );
        }
    }
}
