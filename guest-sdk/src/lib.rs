//! Guest SDK for Keyhole edge functions.
//!
//! An edge function reaches secrets only through `keyhole:secrets`: it asks
//! for a *binding* by the name its code uses, gets an opaque [`secrets::Secret`]
//! handle, and asks the host to do the work with the key. The bytes reach
//! the function's memory only through [`secrets::Secret::reveal`], and only
//! when the operator's grant allows it.
//!
//! ```no_run
//! use keyhole_sdk::secrets;
//!
//! # fn handle(body: &[u8], signature: &[u8]) -> Result<bool, secrets::Error> {
//! let key = secrets::get("GITHUB_WEBHOOK")?;
//! let valid = key.verify_hmac_sha256(body, signature)?;
//! # Ok(valid)
//! # }
//! ```
//!
//! Beyond HMAC, the host signs ([`secrets::Secret::sign`], and [`jwt`] for
//! whole tokens), encrypts ([`secrets::Secret::seal`] / [`secrets::Secret::open`])
//! and puts bearer tokens into outgoing requests bound for allowed hosts
//! ([`secrets::Secret::header_token`] with [`http::fetch`]) — none of which
//! brings the key into the function's memory.
//!
//! Functions serve HTTP with the `wasip2` crate's `wasip2::http::proxy::export!`;
//! [`http`] has helpers for the common request and response chores.

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "keyhole:secrets/sdk",
    });
}

pub mod http;
pub mod jwt;
pub mod secrets;
