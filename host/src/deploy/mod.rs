//! Deploy: a developer's component and manifest on their way into the
//! store.
//!
//! Owns: the manifest, `keyhole.toml` ([`manifest`]), the deploy gate that
//! checks manifest and component and stores both (`gate`, re-exported
//! here), and the scan that refuses components carrying a credential
//! ([`scan`]).
//!
//! Invariant: nothing is stored that the gate did not accept, and a
//! refusal says what to change. Why: a secret hard-coded into a component
//! is the first problem Keyhole exists to end.
//!
//! Never touches: running requests or the audit trail's storage.

mod gate;
pub mod manifest;
pub mod scan;

pub use gate::{
    BindingState, DeployError, DeployReport, Disclosure, GateReport, Prepared, binding_state, gate,
    prepare, prepare_upload, store,
};
