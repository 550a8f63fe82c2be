//! A request's budget of host memory held in HTTP header fields.
//!
//! Invariant: the header fields one request makes the host hold — every
//! `fields` resource it builds, appends to or clones — stay within
//! [`MAX_FIELD_BYTES_PER_REQUEST`]; the call that would go past it traps,
//! which ends that request alone.
//!
//! Why: `memory-mib` caps a guest's linear memory, not the host memory it
//! makes the host allocate. Each `fields` map may hold 128 KiB and a
//! request may hold 10 000 resources, so cloning one full map ten thousand
//! times (each clone copied on its first change) was about 1.25 GiB of
//! host heap from one request, outside every memory limit.
//!
//! How: `wasi:http/types`' `fields` constructor-from-list, `clone`,
//! `append` and `set` are shadowed in the linker by wrappers that charge
//! what they may add before calling wasmtime-wasi-http's own code, and the
//! `fields` resource's destructor credits what a map held when the guest
//! drops it. A clone is charged its source's whole size: it shares the
//! source's memory only until either changes. Other host-side state is
//! bounded elsewhere: secret operations' outputs go straight into guest
//! memory and are freed on return, outgoing bodies are buffered in a fixed
//! number of chunks, and the resource table holds at most 10 000 entries.

use crate::engine::runtime::RequestState;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{HeaderError, HostFields};

/// Bytes of header fields one request may make the host hold at once.
pub(crate) const MAX_FIELD_BYTES_PER_REQUEST: usize = 16 * 1024 * 1024;

/// The `wasi:http/types` instance the wrappers shadow (semver-compatible
/// imports of earlier 0.2 versions resolve to it).
const HTTP_TYPES: &str = "wasi:http/types@0.2.12";

/// What one request's header fields hold, by the count
/// [`field_bytes`] keeps.
#[derive(Debug, Default)]
pub(crate) struct FieldBytes {
    held: usize,
}

/// The trap for a request past [`MAX_FIELD_BYTES_PER_REQUEST`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the request's HTTP header fields would hold more than {} MiB of host memory (cloned or built too many large header maps)",
    MAX_FIELD_BYTES_PER_REQUEST >> 20
)]
pub(crate) struct FieldBudgetExceeded;

impl FieldBytes {
    /// Counts `bytes` more, or traps past the budget (counting nothing).
    pub(crate) fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let held = self.held.saturating_add(bytes);
        if held > MAX_FIELD_BYTES_PER_REQUEST {
            return Err(FieldBudgetExceeded.into());
        }
        self.held = held;
        Ok(())
    }

    /// Counts `bytes` fewer (a map dropped).
    pub(crate) fn credit(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }
}

/// What one entry costs: its bytes and the map's per-entry overhead, as
/// wasmtime-wasi-http sizes maps against their own limit.
fn entry_bytes(name: usize, value: usize) -> usize {
    name + value + size_of::<hyper::header::HeaderName>() + size_of::<hyper::header::HeaderValue>()
}

/// What a map holds: each entry's name and value bytes plus the per-entry
/// overhead wasmtime-wasi-http counts against its own map limit.
pub(crate) fn field_bytes(map: &FieldMap) -> usize {
    map.iter()
        .map(|(name, value)| entry_bytes(name.as_str().len(), value.len()))
        .sum()
}

/// A header call's result as the guest sees it: the header error, or a trap
/// for anything else.
fn header_result<T>(
    result: Result<T, wasmtime_wasi_http::p2::HeaderError>,
) -> wasmtime::Result<Result<T, HeaderError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(e.downcast()?)),
    }
}

/// Shadows `fields`' growing calls and destructor in `linker` (which must
/// already hold wasmtime-wasi-http's) with the budgeted ones.
pub(crate) fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(HTTP_TYPES)?;
    types.resource(
        "fields",
        ResourceType::host::<FieldMap>(),
        |mut store, rep| {
            let state = store.data_mut();
            let map = state
                .http()
                .table
                .delete(Resource::<FieldMap>::new_own(rep))?;
            state.field_bytes.credit(field_bytes(&map));
            Ok(())
        },
    )?;
    types.func_wrap(
        "[static]fields.from-list",
        |mut store, (entries,): (Vec<(String, Vec<u8>)>,)| {
            let state: &mut RequestState = store.data_mut();
            let bytes = entries
                .iter()
                .map(|(name, value)| entry_bytes(name.len(), value.len()))
                .sum();
            state.field_bytes.charge(bytes)?;
            let made = header_result(HostFields::from_list(&mut state.http(), entries));
            if !matches!(made, Ok(Ok(_))) {
                state.field_bytes.credit(bytes);
            }
            Ok((made?,))
        },
    )?;
    types.func_wrap(
        "[method]fields.clone",
        |mut store, (fields,): (Resource<FieldMap>,)| {
            let state: &mut RequestState = store.data_mut();
            let bytes = field_bytes(state.http().table.get(&fields)?);
            state.field_bytes.charge(bytes)?;
            Ok((HostFields::clone(&mut state.http(), fields)?,))
        },
    )?;
    types.func_wrap(
        "[method]fields.append",
        |mut store, (fields, name, value): (Resource<FieldMap>, String, Vec<u8>)| {
            let state: &mut RequestState = store.data_mut();
            let bytes = entry_bytes(name.len(), value.len());
            state.field_bytes.charge(bytes)?;
            let appended =
                header_result(HostFields::append(&mut state.http(), fields, name, value));
            if !matches!(appended, Ok(Ok(()))) {
                state.field_bytes.credit(bytes);
            }
            Ok((appended?,))
        },
    )?;
    types.func_wrap(
        "[method]fields.set",
        |mut store, (fields, name, values): (Resource<FieldMap>, String, Vec<Vec<u8>>)| {
            let state: &mut RequestState = store.data_mut();
            let bytes = values
                .iter()
                .map(|value| entry_bytes(name.len(), value.len()))
                .sum();
            state.field_bytes.charge(bytes)?;
            let set = header_result(HostFields::set(&mut state.http(), fields, name, values));
            if !matches!(set, Ok(Ok(()))) {
                state.field_bytes.credit(bytes);
            }
            Ok((set?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_traps_past_its_limit_and_counts_nothing_then() {
        let mut bytes = FieldBytes::default();
        bytes.charge(MAX_FIELD_BYTES_PER_REQUEST - 10).unwrap();
        let trap = bytes.charge(11).unwrap_err();
        assert!(trap.to_string().contains("more than 16 MiB"), "{trap}");
        assert_eq!(bytes.held(), MAX_FIELD_BYTES_PER_REQUEST - 10);
        bytes.credit(100);
        bytes.charge(11).unwrap();
    }
}
