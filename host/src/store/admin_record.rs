//! An admin action's audit record, passed into the write it describes.
//!
//! Invariant: an admin action is recorded exactly once — in the same
//! transaction as the change it makes, or, for an action that changes
//! nothing (a read, a refusal, a failure), right after it — and durably
//! before the caller reports success. Why: the trail must show every
//! action, and never an action that did not happen.

use super::{AuditLog, StoreError};
use crate::audit::{AdminEvent, Event, Timed, now_ms};
use std::cell::Cell;

/// The record of one admin action, handed to the store write it belongs
/// to. A backend appends [`AdminRecord::timed`] in the write's transaction
/// unless [`AdminRecord::written`], and calls [`AdminRecord::mark_written`]
/// once that transaction has committed.
#[derive(Debug)]
pub struct AdminRecord {
    timed: Timed,
    written: Cell<bool>,
}

impl AdminRecord {
    /// The record of `event`, timed now.
    pub fn new(event: AdminEvent) -> Self {
        Self {
            timed: Timed {
                at_ms: now_ms(),
                event: Event::Admin(Box::new(event)),
            },
            written: Cell::new(false),
        }
    }

    /// The record as the trail stores it.
    pub fn timed(&self) -> &Timed {
        &self.timed
    }

    /// Whether a committed write has carried it already.
    pub fn written(&self) -> bool {
        self.written.get()
    }

    /// Says a committed transaction carried it.
    pub fn mark_written(&self) {
        self.written.set(true);
    }

    /// The same record with outcome `failed` and `detail` saying why.
    pub fn failed(&self, detail: String) -> Timed {
        let mut failed = self.timed.clone();
        if let Event::Admin(event) = &mut failed.event {
            event.outcome = "failed".into();
            event.detail = Some(detail);
        }
        failed
    }
}

/// Why an audited admin action could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written, so the action is refused: {0}")]
pub struct AuditedError(#[source] pub StoreError);

/// Runs the admin action `action` with the record of `event`, which
/// `action` passes into the write it makes. If no write carried it (a
/// read, a refusal, a failure), it is appended after, with outcome
/// `failed` and the error for a failed action. If the record cannot be
/// written the caller must not report success.
pub fn audited<T, E: std::fmt::Display>(
    log: &(impl AuditLog + ?Sized),
    event: AdminEvent,
    action: impl FnOnce(&AdminRecord) -> Result<T, E>,
) -> Result<Result<T, E>, AuditedError> {
    let record = AdminRecord::new(event);
    let result = action(&record);
    if !record.written() {
        let timed = match &result {
            Ok(_) => record.timed,
            Err(e) => record.failed(e.to_string()),
        };
        log.append_audit(std::slice::from_ref(&timed))
            .map_err(AuditedError)?;
    }
    Ok(result)
}
