//! The host side of `keyhole:secrets`: every call checked against the
//! calling function's grants, every key operation done on the host.
//!
//! A request's [`SecretsCtx`] holds what the function may reach; handles
//! live in the request's resource table and die with it. The only path by
//! which secret bytes enter guest memory is `reveal`, behind its grant.

use crate::bindings::secrets::{self, Error};
use crate::operations::{Operation, OperationSet};
use crate::secret_value::SecretValue;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// The longest binding name `get` accepts, in bytes.
pub const MAX_BINDING_LEN: usize = crate::names::MAX_NAME_LEN;
/// How many secret handles one request may hold open at once.
pub const MAX_OPEN_HANDLES: usize = 1024;

/// What one binding of one function resolves to right now.
#[derive(Debug, Clone)]
pub struct BoundSecret {
    /// Operations allowed: the operator's grant, narrowed to what the
    /// function's manifest requested.
    pub allowed: OperationSet,
    /// The current version and its value, or `None` when the secret has no
    /// usable version (removed, or failed its integrity check).
    pub current: Option<(u32, Arc<SecretValue>)>,
}

/// Everything one function may reach through `keyhole:secrets`, by binding.
pub type FunctionSecrets = HashMap<String, BoundSecret>;

/// Per-request state of the secrets interface.
#[derive(Debug)]
pub struct SecretsCtx {
    function: Arc<str>,
    bindings: Arc<FunctionSecrets>,
    open_handles: usize,
}

impl SecretsCtx {
    /// The context for one request of `function`, with its bindings.
    pub fn new(function: Arc<str>, bindings: Arc<FunctionSecrets>) -> Self {
        Self {
            function,
            bindings,
            open_handles: 0,
        }
    }
}

/// A handle's state on the host: one version of one bound secret.
///
/// The guest sees only the resource index; the value never leaves the host
/// except through `reveal`.
#[derive(Debug)]
pub struct SecretHandle {
    binding: String,
    version: u32,
    allowed: OperationSet,
    value: Arc<SecretValue>,
}

impl SecretHandle {
    fn require(&self, op: Operation) -> Result<(), Error> {
        if self.allowed.contains(op) {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "binding `{}` is not granted `{op}` (granted: {})",
                self.binding, self.allowed
            )))
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.value.expose())
            .expect("HMAC accepts keys of any length")
    }
}

/// The view of a store's data that the secrets interface works on.
pub struct SecretsView<'a> {
    /// This request's secrets state.
    pub ctx: &'a mut SecretsCtx,
    /// The request's resource table, shared with WASI.
    pub table: &'a mut ResourceTable,
}

/// Implemented by a store's data type to expose the secrets interface.
pub trait SecretsHost: Send {
    /// Borrows the secrets state and the resource table together.
    fn secrets(&mut self) -> SecretsView<'_>;
}

struct HasSecrets;

impl HasData for HasSecrets {
    type Data<'a> = SecretsView<'a>;
}

/// Adds `keyhole:secrets/secrets` to `linker`.
pub fn add_to_linker<T: SecretsHost + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, HasSecrets>(linker, T::secrets)
}

impl secrets::Host for SecretsView<'_> {
    fn get(&mut self, binding: String) -> wasmtime::Result<Result<Resource<SecretHandle>, Error>> {
        if binding.is_empty() || binding.len() > MAX_BINDING_LEN {
            return Ok(Err(Error::InvalidArgument(format!(
                "binding names are 1 to {MAX_BINDING_LEN} bytes long (got {})",
                binding.len()
            ))));
        }
        let Some(bound) = self.ctx.bindings.get(&binding) else {
            return Ok(Err(Error::NotGranted(format!(
                "function `{}` has no grant for binding `{}`",
                self.ctx.function,
                printable(&binding)
            ))));
        };
        let Some((version, value)) = &bound.current else {
            return Ok(Err(Error::Unavailable(format!(
                "binding `{binding}`: its secret has no usable version"
            ))));
        };
        if self.ctx.open_handles >= MAX_OPEN_HANDLES {
            return Ok(Err(Error::InvalidArgument(format!(
                "too many open secret handles (at most {MAX_OPEN_HANDLES} per request); drop handles you no longer need"
            ))));
        }
        let handle = SecretHandle {
            binding,
            version: *version,
            allowed: bound.allowed,
            value: Arc::clone(value),
        };
        let resource = self.table.push(handle)?;
        self.ctx.open_handles += 1;
        Ok(Ok(resource))
    }
}

impl secrets::HostSecret for SecretsView<'_> {
    fn name(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.binding.clone())
    }

    fn version(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&handle)?.version)
    }

    fn hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let secret = self.table.get(&handle)?;
        if let Err(e) = secret.require(Operation::Hmac) {
            return Ok(Err(e));
        }
        let mut mac = secret.mac();
        mac.update(&message);
        Ok(Ok(mac.finalize().into_bytes().to_vec()))
    }

    fn verify_hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
        tag: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let secret = self.table.get(&handle)?;
        if let Err(e) = secret.require(Operation::Hmac) {
            return Ok(Err(e));
        }
        let mut mac = secret.mac();
        mac.update(&message);
        // `verify_slice` compares in constant time and rejects wrong lengths.
        Ok(Ok(mac.verify_slice(&tag).is_ok()))
    }

    fn reveal(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let secret = self.table.get(&handle)?;
        if let Err(e) = secret.require(Operation::Reveal) {
            return Ok(Err(e));
        }
        Ok(Ok(secret.value.expose().to_vec()))
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.ctx.open_handles -= 1;
        Ok(())
    }
}

/// A guest-chosen name made safe to echo: control characters escaped.
fn printable(name: &str) -> String {
    name.escape_debug().to_string()
}
