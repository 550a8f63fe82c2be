//! `wasmcloud:secrets@0.1.0-draft`, the secrets interface components written
//! for wasmCloud import, served from Keyhole's grants: such a component runs
//! on Keyhole unchanged, under Keyhole's rules.
//!
//! Invariant: the same checks as `keyhole:secrets`, over the same state. A
//! key is a binding: `store.get` opens it only with a grant in force (any
//! operation), and `reveal.reveal` copies its bytes into guest memory only
//! with the `reveal` operation, through the same wiped host copy
//! ([`RevealedCopies`](super::RevealedCopies)). Every call is audited as
//! `keyhole:secrets`'s are.
//!
//! Where the interfaces differ: wasmCloud's `reveal` has no error to return,
//! so a `reveal` the grant does not allow stops the instance (a trap: the
//! request fails with 500, or its body ends if it had begun) after its
//! refusal is audited and logged with the reason; a key with no grant is
//! `not-found`, as wasmCloud says of a key a component was not given, and
//! any other refusal (a withdrawn grant, a bad key) is `upstream` with
//! Keyhole's message. A value that is UTF-8 is revealed as a `string`, any
//! other as `bytes`.

use super::SecretHandle;
use super::host_impl::{HasSecrets, SecretsHost, SecretsView, message};
use crate::engine::bindings::secrets::Error;
use crate::engine::bindings::{wasmcloud_reveal, wasmcloud_store};
use std::sync::Arc;
use wasmtime::component::{ComponentType, Linker, Lower, Resource};

/// The linker name of wasmCloud's `reveal` interface.
const REVEAL_INTERFACE: &str = "wasmcloud:secrets/reveal@0.1.0-draft";

/// Adds `wasmcloud:secrets/store` and `wasmcloud:secrets/reveal` to
/// `linker`, `reveal` through a wrapper that keeps its host copy to wipe.
pub(super) fn add_to_linker<T: SecretsHost + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmcloud_store::add_to_linker::<T, HasSecrets>(linker, T::secrets)?;
    wasmcloud_reveal::add_to_linker::<T, HasSecrets>(linker, T::secrets)?;
    linker.allow_shadowing(true);
    linker.instance(REVEAL_INTERFACE)?.func_wrap(
        "reveal",
        |mut store: wasmtime::StoreContextMut<'_, T>, (handle,): (Resource<SecretHandle>,)| {
            Ok((store.data_mut().secrets().reveal_for_wasmcloud(handle)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// wasmCloud's `secret-value`, lowered from copies the request keeps to
/// wipe (the generated type would hand wasmtime a `String` or `Vec` to
/// free unwiped).
#[derive(ComponentType, Lower)]
#[component(variant)]
enum RevealedValue {
    #[component(name = "string")]
    Text(Arc<str>),
    #[component(name = "bytes")]
    Bytes(Arc<[u8]>),
}

/// The trap that stops a component whose `reveal` its grant does not allow.
#[derive(Debug, thiserror::Error)]
#[error(
    "wasmcloud:secrets/reveal refused: {0}; that interface has no error to return, so the instance was stopped (grant the binding `reveal`, or use keyhole:secrets's operations that keep the value on the host)"
)]
struct RevealRefused(String);

/// The trap for `reveal` reached through the generated bindings rather
/// than [`add_to_linker`]'s wrapper: it would free an unwiped copy.
#[derive(Debug, thiserror::Error)]
#[error("wasmcloud `reveal` must be linked through secrets::add_to_linker, which wipes its copy")]
struct UnwipedReveal;

impl SecretsView<'_> {
    /// `reveal.reveal`: the value, if the grant allows `reveal`; otherwise a
    /// trap naming why (audited as a refused `reveal` first).
    fn reveal_for_wasmcloud(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<RevealedValue> {
        let material = match self.reveal_checked(handle)? {
            Ok(material) => material,
            Err(e) => {
                let refused = RevealRefused(message(&e).to_owned());
                // Said here too: a trap after the response has begun ends
                // its body, and is not logged where a failed request is.
                tracing::warn!(
                    function = %self.ctx.function,
                    request = self.ctx.request,
                    "{refused}"
                );
                return Err(refused.into());
            }
        };
        // One copy, of the kind that is lowered.
        let value = material.value().expose();
        Ok(match std::str::from_utf8(value) {
            Ok(text) => RevealedValue::Text(self.ctx.revealed.copy_text(text)),
            Err(_) => RevealedValue::Bytes(self.ctx.revealed.copy(value)),
        })
    }
}

impl wasmcloud_store::Host for SecretsView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, wasmcloud_store::SecretsError>> {
        use wasmcloud_store::SecretsError;
        Ok(self.open(key)?.map_err(|error| match error {
            Error::NotGranted(_) => SecretsError::NotFound,
            other => SecretsError::Upstream(message(&other).to_owned()),
        }))
    }
}

impl wasmcloud_store::HostSecret for SecretsView<'_> {
    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        super::host_impl::drop_handle(self, handle)
    }
}

impl wasmcloud_reveal::Host for SecretsView<'_> {
    fn reveal(
        &mut self,
        _handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<wasmcloud_store::SecretValue> {
        Err(UnwipedReveal.into())
    }
}

#[cfg(test)]
mod tests {
    use super::REVEAL_INTERFACE;

    #[test]
    fn the_wrapped_interface_is_the_one_the_vendored_wit_declares() {
        let wit = include_str!("../../../wit/deps/wasmcloud-secrets/secrets.wit");
        let version = REVEAL_INTERFACE.rsplit('@').next().unwrap();
        assert!(
            wit.contains(&format!("package wasmcloud:secrets@{version};")),
            "reveal's wrapper is linked as {REVEAL_INTERFACE}: update it with the vendored WIT"
        );
    }
}
