//! What a running node serves right now: deployed functions, compiled and
//! linked, with their grants resolved to decrypted secret values.
//!
//! The catalog rebuilds its snapshot whenever the store's revision changes,
//! so grants, secrets and deployments written by the CLI take effect on the
//! next request, without a restart. A request holds the snapshot it started
//! with, so it finishes on the versions it opened.

use crate::material::SecretMaterial;
use crate::operations::OperationSet;
use crate::runtime::{FunctionPre, Runtime};
use crate::secrets_host::{BoundSecret, FunctionSecrets};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A deployed function, ready to serve.
pub struct LoadedFunction {
    /// The function's name.
    pub name: Arc<str>,
    /// The compiled, linked component.
    pub pre: FunctionPre,
    /// Memory limit per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit per request.
    pub timeout: Duration,
    /// What its bindings resolve to.
    pub secrets: Arc<FunctionSecrets>,
}

/// One consistent view of everything the node serves.
#[derive(Default)]
pub struct Snapshot {
    /// Route prefixes, longest first, with the function serving each.
    routes: Vec<(String, Arc<LoadedFunction>)>,
}

impl Snapshot {
    /// The function serving `path`: the longest route that equals `path` or
    /// is a prefix of it ending at a `/`.
    pub fn route(&self, path: &str) -> Option<&Arc<LoadedFunction>> {
        self.routes
            .iter()
            .find(|(prefix, _)| route_matches(prefix, path))
            .map(|(_, f)| f)
    }

    /// How many functions are being served.
    pub fn function_count(&self) -> usize {
        let mut names: Vec<&str> = self.routes.iter().map(|(_, f)| &*f.name).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

fn route_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The node's live set of functions, refreshed from the store.
pub struct Catalog {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    compiled: Mutex<HashMap<String, FunctionPre>>,
    snapshot: RwLock<Arc<Snapshot>>,
    loaded_revision: Mutex<Option<u64>>,
}

impl Catalog {
    /// An empty catalog over `store`; call [`Catalog::refresh`] to load it.
    pub fn new(store: Arc<dyn Store>, runtime: Arc<Runtime>) -> Self {
        Self {
            store,
            runtime,
            compiled: Mutex::default(),
            snapshot: RwLock::default(),
            loaded_revision: Mutex::default(),
        }
    }

    /// The runtime functions run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reloads from the store if it changed since the last load. Blocking:
    /// it reads the database and may compile components. Returns whether a
    /// new snapshot was installed.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        // Held throughout, so concurrent refreshes load one at a time.
        let mut loaded = self
            .loaded_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let revision = self.store.revision()?;
        if *loaded == Some(revision) {
            return Ok(false);
        }
        let snapshot = self.load()?;
        let count = snapshot.function_count();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        *loaded = Some(revision);
        tracing::info!(revision, functions = count, "loaded functions and grants");
        Ok(true)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let functions = self.store.functions()?;
        let grants = self.store.grants(None)?;
        let mut values: HashMap<String, Option<Arc<SecretMaterial>>> = HashMap::new();
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let mut still_used = HashMap::new();
        let mut routes = Vec::new();

        for info in functions {
            let pre = match compiled.get(&info.component_sha256) {
                Some(pre) => pre.clone(),
                None => match self.runtime.prepare(&self.store.component(&info.name)?) {
                    Ok(pre) => pre,
                    Err(e) => {
                        tracing::error!(function = %info.name, "cannot load function: {e}");
                        continue;
                    }
                },
            };
            still_used.insert(info.component_sha256.clone(), pre.clone());

            let mut secrets = HashMap::new();
            for requested in &info.bindings {
                let Some(grant) = grants
                    .iter()
                    .find(|g| g.function == info.name && g.binding == requested.binding)
                else {
                    continue;
                };
                let allowed: OperationSet = grant.allow.intersect(requested.operations);
                let current = values
                    .entry(grant.secret.clone())
                    .or_insert_with(|| self.decrypt(&grant.secret))
                    .clone();
                let egress = Arc::new(grant.egress.clone());
                secrets.insert(
                    requested.binding.clone(),
                    BoundSecret {
                        allowed,
                        egress,
                        current,
                    },
                );
            }

            let function = Arc::new(LoadedFunction {
                name: info.name.as_str().into(),
                pre,
                memory_bytes: info.memory_mib as usize * 1024 * 1024,
                timeout: Duration::from_millis(info.timeout_ms.into()),
                secrets: Arc::new(FunctionSecrets::new(secrets)),
            });
            for route in info.routes {
                routes.push((route, Arc::clone(&function)));
            }
        }
        *compiled = still_used;
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Snapshot { routes })
    }

    /// The current value of secret `name`, or `None` (logged) when it has no
    /// usable version.
    fn decrypt(&self, name: &str) -> Option<Arc<SecretMaterial>> {
        match self.store.current_secret(name) {
            Ok(Some((version, value))) => Some(Arc::new(SecretMaterial::new(version, value))),
            Ok(None) => {
                tracing::warn!(
                    secret = name,
                    "a grant names a secret that does not exist; its bindings are unavailable"
                );
                None
            }
            Err(e) => {
                tracing::error!(secret = name, "secret is unavailable: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_matches;

    #[test]
    fn routes_match_whole_segments() {
        assert!(route_matches("/hello", "/hello"));
        assert!(route_matches("/hello", "/hello/there"));
        assert!(!route_matches("/hello", "/helloworld"));
        assert!(!route_matches("/hello", "/"));
        assert!(route_matches("/", "/anything"));
    }
}
