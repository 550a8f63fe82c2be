//! The JavaScript project `keyhole new --lang js` writes: an npm package
//! whose `npm run build` makes the component, with its own copy of the JS
//! guest SDK (`keyhole-sdk/`, a `file:` dependency) — whose WIT and build
//! script come with it, and whose build tools (ComponentizeJS, esbuild,
//! pinned by the SDK) come from the npm registry at `npm install`.

use std::path::Path;

/// The JS guest SDK's files, as `keyhole-sdk/…` of a new project.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../../../guest-sdk/js/package.json"),
    ),
    (
        "index.js",
        include_str!("../../../../guest-sdk/js/index.js"),
    ),
    (
        "index.d.ts",
        include_str!("../../../../guest-sdk/js/index.d.ts"),
    ),
    (
        "bin/build.mjs",
        include_str!("../../../../guest-sdk/js/bin/build.mjs"),
    ),
    (
        "types/sdk.d.ts",
        include_str!("../../../../guest-sdk/js/types/sdk.d.ts"),
    ),
    (
        "types/interfaces/keyhole-secrets-secrets.d.ts",
        include_str!("../../../../guest-sdk/js/types/interfaces/keyhole-secrets-secrets.d.ts"),
    ),
    (
        "wit/secrets.wit",
        include_str!("../../../../guest-sdk/js/wit/secrets.wit"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/http.wit"),
    ),
    (
        "wit/deps/io.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/io.wit"),
    ),
    (
        "wit/deps/random.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/sockets.wit"),
    ),
    (
        "wit/deps/wasi-config/store.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/wasi-config/store.wit"),
    ),
    (
        "wit/deps/wasi-config/world.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/wasi-config/world.wit"),
    ),
    (
        "wit/deps/wasmcloud-secrets/secrets.wit",
        include_str!("../../../../guest-sdk/js/wit/deps/wasmcloud-secrets/secrets.wit"),
    ),
];

/// Writes the JavaScript project for function `name` into `dir`.
pub(super) fn write_project(dir: &Path, name: &str) -> anyhow::Result<()> {
    let write = |path: &str, text: &str| super::write_file(dir, path, text);
    let route = format!("/{name}");
    write(
        "package.json",
        &format!(
            r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "keyhole-build-js"
  }},
  "dependencies": {{
    "@keyhole/sdk": "file:keyhole-sdk"
  }}
}}
"#
        ),
    )?;
    write(
        ".gitignore",
        &format!("/node_modules\n/dist\n{}", super::GITIGNORE_SECRETS),
    )?;
    write(
        "keyhole.toml",
        &super::manifest(
            name,
            &format!("dist/{name}.wasm"),
            "# A JavaScript engine runs inside the component: give it room.\nmemory-mib = 64\ntimeout-ms = 2000\n",
        ),
    )?;
    write("src/index.js", &function_source(name))?;
    write("README.md", &readme(name, &route))?;
    for (file, text) in SDK_FILES {
        write(&format!("keyhole-sdk/{file}"), text)?;
    }
    Ok(())
}

/// The new function's source: it signs the request's path with the secret
/// bound to `SIGNING_KEY`, which stays on the host.
fn function_source(name: &str) -> String {
    format!(
        r#"// {name}: a Keyhole edge function. It answers with an HMAC of the
// request's path made by the host with the secret bound to SIGNING_KEY;
// the key never enters this function's memory.

import {{ secrets, SecretError, hex }} from '@keyhole/sdk';

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

function handle(request) {{
  const url = new URL(request.url);
  const path = url.pathname + url.search;
  try {{
    const tag = secrets.get('SIGNING_KEY').hmacSha256(path);
    return text(200, `hello from {name}: hmac-sha256(${{path}}) = ${{hex(tag)}}\n`);
  }} catch (error) {{
    // Not granted yet, or the secret is gone: say so.
    if (error instanceof SecretError) return text(503, `${{error.kind}}: ${{error.message}}\n`);
    throw error;
  }}
}}

function text(status, body) {{
  return new Response(body, {{ status, headers: {{ 'content-type': 'text/plain; charset=utf-8' }} }});
}}
"#
    )
}

/// The new project's README.
fn readme(name: &str, route: &str) -> String {
    let steps = super::run_on_a_node(
        name,
        &format!("npm run build                         # dist/{name}.wasm"),
    );
    format!(
        r#"# {name}

A Keyhole edge function in JavaScript. Run it locally, rebuilt on every change:

```sh
npm install        # the SDK's build tools, from the npm registry
keyhole dev        # asks for SIGNING_KEY's value once, then serves http://127.0.0.1:8080{route}
```

Or build it and run it on a node:

{steps}

Write TypeScript by naming the entry `src/index.ts`. Call `secrets.get` while
serving a request, not at the top level of the module (the build runs the
top level once, with no host). `keyhole-sdk/` is the guest SDK, with the WIT
it binds, as the `keyhole` that made this project had it.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the JS SDK ships (its package.json's `files`, less the
    /// repository's own scripts) is in a new project.
    #[test]
    fn a_new_js_project_carries_the_whole_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/js");
        let found = super::super::files_under(&sdk, &["scripts", "node_modules"]);
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(found, embedded, "update SDK_FILES in cli/new/js.rs");
    }
}
