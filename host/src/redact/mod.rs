//! Redaction: what a guest writes, with secret values taken out, before it
//! reaches the node's log.
//!
//! Owns: the redactor, which knows every encoding of every value a
//! function can open (`redactor`, re-exported here), and the capture of
//! guest stdout and stderr into tagged, capped log lines ([`guest_log`]).
//!
//! Invariant: no byte a guest writes reaches the log without passing the
//! redactor. Why: a guest that reveals a secret may print it, by mistake
//! or on purpose; the log is read by more people than the secret is.
//!
//! Never touches: the store, the engine beyond the output streams it
//! implements, or the audit trail.

pub(crate) mod guest_log;
mod redactor;

pub(crate) use redactor::Redactor;
pub(crate) use redactor::encodings;
