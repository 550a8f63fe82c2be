//! The Rust project `keyhole new --lang rust` writes: a crate built for
//! wasm32-wasip2 with its own copy of the guest SDK and of the WIT.

use std::path::Path;

/// The guest SDK's sources, as `keyhole-sdk/src/…` of a new project.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../../guest-sdk/src/lib.rs")),
    ("http.rs", include_str!("../../../../guest-sdk/src/http.rs")),
    ("jwt.rs", include_str!("../../../../guest-sdk/src/jwt.rs")),
    (
        "secrets.rs",
        include_str!("../../../../guest-sdk/src/secrets.rs"),
    ),
];

/// Every WIT file the SDK's bindings read, as `wit/…` of a new project.
const WIT_FILES: &[(&str, &str)] = &[
    ("secrets.wit", include_str!("../../../../wit/secrets.wit")),
    ("deps/cli.wit", include_str!("../../../../wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../../wit/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../../wit/deps/http.wit"),
    ),
    ("deps/io.wit", include_str!("../../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../../wit/deps/sockets.wit"),
    ),
    (
        "deps/wasmcloud-secrets/secrets.wit",
        include_str!("../../../../wit/deps/wasmcloud-secrets/secrets.wit"),
    ),
    (
        "deps/wasi-config/store.wit",
        include_str!("../../../../wit/deps/wasi-config/store.wit"),
    ),
    (
        "deps/wasi-config/world.wit",
        include_str!("../../../../wit/deps/wasi-config/world.wit"),
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

/// Writes the Rust project for function `name` into `dir`.
pub(super) fn write_project(dir: &Path, name: &str) -> anyhow::Result<()> {
    let crate_name = name.to_owned();
    let artifact = name.replace('-', "_");
    let route = format!("/{name}");
    let write = |path: &str, text: &str| super::write_file(dir, path, text);
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
        &format!("/target\n{}", super::GITIGNORE_SECRETS),
    )?;
    write(
        "keyhole.toml",
        &super::manifest(
            name,
            &format!("target/wasm32-wasip2/release/{artifact}.wasm"),
            "memory-mib = 16\ntimeout-ms = 2000\n",
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
    let steps = super::run_on_a_node(
        name,
        "cargo build --release                 # needs `rustup target add wasm32-wasip2`",
    );
    format!(
        r#"# {name}

A Keyhole edge function. Run it locally, rebuilt on every change:

```sh
keyhole dev        # asks for SIGNING_KEY's value once, then serves http://127.0.0.1:8080{route}
```

Or build it and run it on a node:

{steps}

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
        let found: Vec<String> = super::super::files_under(&root, &[])
            .into_iter()
            .filter(|f| f.ends_with(".wit"))
            .collect();
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
