//! Config: the host side of `wasi:config/store@0.2.0-rc.1` (the version
//! wasmtime 48 vendors, vendored in `wit/deps/wasi-config`), which serves a
//! function its manifest's `[config]`: the non-secret settings that
//! components written for Spin or wasmtime read there.
//!
//! Invariant: a function reads its own `[config]` and nothing else — not a
//! secret, not another function's settings, not the node's environment.
//! Why: configuration is what may be seen (it is stored and listed in
//! clear); whatever may not goes through a binding and its grant.
//!
//! Never touches: the store, secrets, the admin API, HTTP. Its settings
//! arrive with the function the catalog loaded.

use crate::engine::bindings::wasi_config_store::{self, Error};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// One function's settings, shared by all its requests.
#[derive(Debug, Default)]
pub struct FunctionConfig(BTreeMap<String, String>);

impl FunctionConfig {
    /// The settings `values`, by key.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self(values)
    }
}

/// The view of a store's data that `wasi:config/store` works on.
pub struct ConfigView<'a> {
    /// The calling function's settings.
    pub config: &'a Arc<FunctionConfig>,
}

/// Implemented by a store's data type to expose `wasi:config/store`.
pub trait ConfigHost: Send {
    /// Borrows the function's settings.
    fn config(&mut self) -> ConfigView<'_>;
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

/// Adds `wasi:config/store` to `linker`.
pub fn add_to_linker<T: ConfigHost + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasi_config_store::add_to_linker::<T, HasConfig>(linker, T::config)
}

impl wasi_config_store::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.config.0.get(&key).cloned()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(Ok(self
            .config
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_reads_its_own_settings_and_nothing_else() {
        let config = Arc::new(FunctionConfig::new(BTreeMap::from([
            ("greeting".to_owned(), "hello".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ])));
        let mut view = ConfigView { config: &config };
        use wasi_config_store::Host as _;
        assert_eq!(
            view.get("greeting".into()).unwrap().unwrap().as_deref(),
            Some("hello")
        );
        assert_eq!(view.get("PATH".into()).unwrap().unwrap(), None);
        assert_eq!(view.get_all().unwrap().unwrap().len(), 2);
    }
}
