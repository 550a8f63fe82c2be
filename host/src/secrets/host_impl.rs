//! The `keyhole:secrets` host implementation over a request's
//! [`SecretsCtx`]: every call checked against the calling function's
//! grants, every key operation done on the host.
//!
//! The only path by which secret bytes enter guest memory is `reveal`,
//! behind its grant, and the host copy `reveal` hands wasmtime to lower is
//! wiped, never freed with the bytes in it ([`RevealedCopies`]).

use super::ctx::{
    MAX_BINDING_LEN, MAX_OPEN_HANDLES, SecretHandle, SecretsCtx, UnknownHandle, aes_key, in_grace,
    stale, withdrawn,
};
use crate::audit::OpOutcome;
use crate::crypto::keys::{self};
use crate::crypto::material::SecretMaterial;
use crate::engine::bindings::secrets::{self, Algorithm, Error};
use crate::node::observe::outcome_of;
use crate::operations::Operation;
use crate::outbound::injection::Issue;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource};

/// The view of a store's data that the secrets interface works on.
pub struct SecretsView<'a> {
    /// This request's secrets state.
    pub ctx: &'a mut SecretsCtx,
}

/// Implemented by a store's data type to expose the secrets interface.
pub trait SecretsHost: Send {
    /// Borrows the request's secrets state.
    fn secrets(&mut self) -> SecretsView<'_>;
}

/// The [`HasData`] marker the generated `add_to_linker`s take.
pub(super) struct HasSecrets;

impl HasData for HasSecrets {
    type Data<'a> = SecretsView<'a>;
}

/// The linker name of the interface [`add_to_linker`] provides.
const SECRETS_INTERFACE: &str = "keyhole:secrets/secrets@0.1.1";

/// Adds `keyhole:secrets/secrets` to `linker`, with `reveal` served by
/// [`SecretsView::reveal_wiped`] so its host copy is wiped
/// ([`RevealedCopies`]); and `wasmcloud:secrets` over the same grants
/// (`super::wasmcloud`).
pub fn add_to_linker<T: SecretsHost + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, HasSecrets>(linker, T::secrets)?;
    linker.allow_shadowing(true);
    linker.instance(SECRETS_INTERFACE)?.func_wrap(
        "[method]secret.reveal",
        |mut store: wasmtime::StoreContextMut<'_, T>, (handle,): (Resource<SecretHandle>,)| {
            Ok((store.data_mut().secrets().reveal_wiped(handle)?,))
        },
    )?;
    linker.allow_shadowing(false);
    super::wasmcloud::add_to_linker(linker)
}

/// The trap for `reveal` reached through the generated bindings rather
/// than [`add_to_linker`]'s wrapper: it would free an unwiped copy.
#[derive(Debug, thiserror::Error)]
#[error("`reveal` must be linked through secrets::add_to_linker, which wipes its copy")]
struct UnwipedReveal;

impl secrets::Host for SecretsView<'_> {
    fn get(&mut self, binding: String) -> wasmtime::Result<Result<Resource<SecretHandle>, Error>> {
        self.open(binding)
    }
}

impl SecretsView<'_> {
    /// Opens the secret bound to `binding` for this function, if it has a
    /// grant in force for it (any operation): `keyhole:secrets`'s `get`, and
    /// the other secrets interfaces' (`super::wasmcloud`). Audited as `get`.
    pub(super) fn open(
        &mut self,
        binding: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, Error>> {
        let refuse = |ctx: &mut SecretsCtx, secret: Option<&Arc<str>>, error: Error| {
            let shown: Arc<str> = if binding.len() > MAX_BINDING_LEN {
                format!("<{} bytes>", binding.len()).into()
            } else {
                printable(&binding).into()
            };
            ctx.report(
                "get",
                shown,
                secret.cloned(),
                None,
                outcome_of::<()>(&Err(error.clone())),
                Some(message(&error).to_owned()),
            )?;
            Ok(Err(error))
        };
        if binding.is_empty() || binding.len() > MAX_BINDING_LEN {
            let error = Error::InvalidArgument(format!(
                "binding names are 1 to {MAX_BINDING_LEN} bytes long (got {})",
                binding.len()
            ));
            return refuse(self.ctx, None, error);
        }
        let Some(entry) = self.ctx.bindings.binding(&binding).cloned() else {
            let error = Error::NotGranted(format!(
                "function `{}` has no grant for binding `{}`",
                self.ctx.function,
                printable(&binding)
            ));
            return refuse(self.ctx, None, error);
        };
        let bound = &entry.bound;
        if let Err(e) = bound.in_force.fresh() {
            return refuse(self.ctx, Some(&bound.secret), stale(&entry.name, e));
        }
        if let Err(e) = bound.in_force.check() {
            return refuse(self.ctx, Some(&bound.secret), withdrawn(&entry.name, e));
        }
        let Some(material) = bound.current.clone() else {
            let error = Error::Unavailable(format!(
                "binding `{binding}`: its secret has no usable version"
            ));
            return refuse(self.ctx, Some(&bound.secret), error);
        };
        if self.ctx.handles.len() >= MAX_OPEN_HANDLES {
            let error = Error::InvalidArgument(format!(
                "too many open secret handles (at most {MAX_OPEN_HANDLES} per request); drop handles you no longer need"
            ));
            return refuse(self.ctx, Some(&bound.secret), error);
        }
        bound.usage.record(material.version());
        self.ctx.report(
            "get",
            Arc::clone(&entry.name),
            Some(Arc::clone(&bound.secret)),
            Some(material.version()),
            OpOutcome::Allowed,
            None,
        )?;
        let handle = SecretHandle {
            binding: entry,
            material,
        };
        Ok(Ok(Resource::new_own(self.ctx.handles.insert(handle))))
    }
}

impl SecretsView<'_> {
    /// Runs `f` on the handle's state if its grant allows `op`. A handle
    /// that is not in the table traps; a refused operation is the guest's
    /// error to handle.
    ///
    /// Every call is counted and audited as `operation`.
    /// `reveal`: the secret's bytes, behind the `reveal` grant, in a copy
    /// that is wiped once wasmtime has lowered it ([`RevealedCopies`]).
    pub fn reveal_wiped(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Arc<[u8]>, Error>> {
        let material = self.reveal_checked(handle)?;
        Ok(material.map(|material| self.ctx.revealed.copy(material.value().expose())))
    }

    /// `reveal`'s check: the handle's material if its grant allows
    /// `reveal`, audited either way; the caller makes the one copy that
    /// enters guest memory.
    pub(super) fn reveal_checked(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Arc<SecretMaterial>, Error>> {
        let ctx = &mut *self.ctx;
        let secret = ctx.handle(&handle)?;
        let result = secret.require(Operation::Reveal);
        let (binding, stored, material) = (
            Arc::clone(secret.name()),
            Arc::clone(&secret.bound().secret),
            Arc::clone(&secret.material),
        );
        ctx.report(
            "reveal",
            binding,
            Some(stored),
            Some(material.version()),
            outcome_of(&result),
            result.as_ref().err().map(|e| message(e).to_owned()),
        )?;
        Ok(result.map(|()| material))
    }

    fn with_grant<T>(
        &mut self,
        handle: &Resource<SecretHandle>,
        operation: &'static str,
        op: Operation,
        f: impl FnOnce(&SecretHandle) -> Result<T, Error>,
    ) -> wasmtime::Result<Result<T, Error>> {
        let secret = self.ctx.handle(handle)?;
        let result = secret.require(op).and_then(|()| f(secret));
        let (binding, stored, version) = (
            Arc::clone(secret.name()),
            Arc::clone(&secret.bound().secret),
            secret.material.version(),
        );
        self.ctx.report(
            operation,
            binding,
            Some(stored),
            Some(version),
            outcome_of(&result),
            result.as_ref().err().map(|e| message(e).to_owned()),
        )?;
        Ok(result)
    }
}

impl secrets::HostSecret for SecretsView<'_> {
    fn name(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.ctx.handle(&handle)?.name().to_string())
    }

    fn version(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<u32> {
        Ok(self.ctx.handle(&handle)?.material.version())
    }

    fn hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "hmac-sha256", Operation::Hmac, |secret| {
            Ok(secret.material.hmac().tag(&message).to_vec())
        })
    }

    fn verify_hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
        tag: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        self.with_grant(&handle, "verify-hmac-sha256", Operation::Hmac, |secret| {
            let verifies = |material: &SecretMaterial| material.hmac().verifies(&message, &tag);
            if verifies(&secret.material) {
                return Ok(true);
            }
            match in_grace(&secret.bound().grace).find(|g| verifies(&g.material)) {
                Some(g) => {
                    secret.bound().usage.record_grace(g.material.version());
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn reveal(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let _ = handle;
        Err(UnwipedReveal.into())
    }

    fn sign(
        &mut self,
        handle: Resource<SecretHandle>,
        algorithm: Algorithm,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let algorithm = match algorithm {
            Algorithm::Ed25519 => keys::Algorithm::Ed25519,
            Algorithm::EcdsaP256Sha256 => keys::Algorithm::EcdsaP256Sha256,
            Algorithm::RsaPkcs1Sha256 => keys::Algorithm::RsaPkcs1Sha256,
        };
        self.with_grant(&handle, "sign", Operation::Sign, |secret| {
            let key = secret
                .material
                .signing_key()
                .map_err(|e| secret.unusable(e))?;
            key.sign(algorithm, &message).map_err(|e| {
                Error::InvalidArgument(format!(
                    "binding `{}`: cannot sign {}: {e}",
                    secret.name(),
                    algorithm.as_str()
                ))
            })
        })
    }

    fn public_key(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "public-key", Operation::Sign, |secret| {
            secret
                .material
                .signing_key()
                .map(|key| key.public_key_spki())
                .map_err(|e| secret.unusable(e))
        })
    }

    fn seal(
        &mut self,
        handle: Resource<SecretHandle>,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "seal", Operation::Seal, |secret| {
            let sealed = secret.aes_key()?.seal(&plaintext, &aad);
            let count = secret.material.count_seal();
            if crate::crypto::material::SEAL_WARNINGS.contains(&count) {
                tracing::warn!(
                    secret = %secret.bound().secret,
                    version = secret.material.version(),
                    seals = count,
                    "this secret version has sealed this many messages on this node: AES-GCM with random nonces should seal at most 2^32 under one key; rotate it (keyhole secret rotate)"
                );
            }
            Ok(sealed)
        })
    }

    fn open(
        &mut self,
        handle: Resource<SecretHandle>,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "open", Operation::Seal, |secret| {
            let opened = |material: &SecretMaterial| {
                let key = aes_key(material).ok()?;
                key.open(&ciphertext, &aad).ok()
            };
            if let Some(plain) = opened(&secret.material) {
                return Ok(plain.to_vec());
            }
            let from_grace =
                in_grace(&secret.bound().grace).find_map(|g| Some((g.material.version(), opened(&g.material)?)));
            if let Some((version, plain)) = from_grace {
                secret.bound().usage.record_grace(version);
                return Ok(plain.to_vec());
            }
            // A current value that is no AES-256 key says so.
            secret.aes_key()?;
            Err(Error::InvalidArgument(format!(
                "binding `{}`: the ciphertext does not open with this key and aad (tampered with, truncated, or sealed under another key or aad)",
                secret.name()
            )))
        })
    }

    fn header_token(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<String, Error>> {
        let bound = self.with_grant(&handle, "header-token", Operation::Inject, |secret| {
            if secret.bound().egress.is_empty() {
                return Err(Error::Denied(format!(
                    "binding `{}` may be injected, but its grant names no egress host",
                    secret.name()
                )));
            }
            Ok(Issue {
                binding: Arc::clone(secret.name()),
                secret: Arc::clone(&secret.bound().secret),
                material: Arc::clone(&secret.material),
                egress: Arc::clone(&secret.bound().egress),
                in_force: secret.bound().in_force.clone(),
            })
        })?;
        Ok(bound.and_then(|issue| {
            self.ctx
                .injector
                .issue(issue)
                .map_err(|e| Error::InvalidArgument(e.to_string()))
        }))
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        drop_handle(self, handle)
    }
}

/// Closes `handle` (the guest dropped it); an unknown one traps.
pub(super) fn drop_handle(
    view: &mut SecretsView<'_>,
    handle: Resource<SecretHandle>,
) -> wasmtime::Result<()> {
    match view.ctx.handles.remove(handle.rep()) {
        Some(_) => Ok(()),
        None => Err(UnknownHandle(handle.rep()).into()),
    }
}

/// The text of an error returned to the guest.
pub(crate) fn message(error: &Error) -> &str {
    match error {
        Error::NotGranted(m)
        | Error::Denied(m)
        | Error::Unavailable(m)
        | Error::InvalidArgument(m) => m,
    }
}

/// A guest-chosen name made safe to echo: control characters escaped.
fn printable(name: &str) -> String {
    name.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::SECRETS_INTERFACE;

    #[test]
    fn the_wrapped_interface_is_the_one_the_wit_declares() {
        let wit = include_str!("../../../wit/secrets.wit");
        let version = SECRETS_INTERFACE.rsplit('@').next().unwrap();
        assert!(
            wit.contains(&format!("package keyhole:secrets@{version};")),
            "reveal's wrapper is linked as {SECRETS_INTERFACE}: update it with wit/secrets.wit"
        );
    }
}
