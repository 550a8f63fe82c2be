//! Who is calling: bearer tokens checked against their stored hashes (and
//! the store's integrity, before a matched token acts), and unauthenticated
//! requests limited and recorded per source address.

use super::*;

/// Source addresses tracked at once; past it the oldest windows are closed.
pub(super) const UNAUTHENTICATED_SOURCES: usize = 4096;

/// One source address's refusals in its current window.
pub(super) struct RefusalWindow {
    started: i64,
    refused: u64,
    /// Refusals not yet in the audit trail (each window's first is).
    unrecorded: u64,
}

/// Refused requests per source address: each window costs at most one
/// durable record, and one more for the count of the rest when it closes;
/// past [`UNAUTHENTICATED_PER_WINDOW`] they are answered 429.
pub(super) struct Unauthenticated {
    windows: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, RefusalWindow>>,
    pub(super) window_secs: i64,
}

impl Default for Unauthenticated {
    fn default() -> Self {
        Self {
            windows: Default::default(),
            window_secs: UNAUTHENTICATED_WINDOW_SECS,
        }
    }
}

impl Admin {
    /// Who presents `authorization` (an HTTP `Authorization` header value)
    /// in a request from `ip`: 401 for a missing, malformed, unknown,
    /// revoked or expired token. Refusals are recorded in the audit trail,
    /// one record per source address and window (the rest counted into one
    /// more when it closes), and past `UNAUTHENTICATED_PER_WINDOW` (60) of
    /// them they are answered 429. A valid token is never limited.
    pub fn authenticate(
        &self,
        ip: std::net::IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, AdminError> {
        let now = now();
        let window_secs = self.unauthenticated.window_secs;
        let mut closed = Vec::new();
        {
            let mut windows = self
                .unauthenticated
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Windows that ended are written as one record each.
            let over_capacity = windows.len() >= UNAUTHENTICATED_SOURCES;
            windows.retain(|ip, w| {
                let ended = now - w.started >= window_secs || over_capacity;
                if ended && w.unrecorded > 0 {
                    closed.push((*ip, w.started, w.unrecorded));
                }
                !ended
            });
        };
        for (ip, started, count) in closed {
            self.record_refusals(
                &format!("source/{ip}"),
                format!(
                    "{count} more refused request(s) from {ip} in the {window_secs} s from {} (coalesced)",
                    crate::audit::format_time(started)
                ),
            );
        }
        // A valid token is never limited: only refusals are counted.
        let result = self.check_token(authorization);
        let Err(e) = &result else {
            return result;
        };
        let (first, wait) = {
            let mut windows = self
                .unauthenticated
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(ip).or_insert(RefusalWindow {
                started: now,
                refused: 0,
                unrecorded: 0,
            });
            w.refused += 1;
            if w.refused > 1 {
                w.unrecorded += 1;
            }
            let over = w.refused > UNAUTHENTICATED_PER_WINDOW;
            (
                w.refused == 1,
                over.then(|| window_secs - (now - w.started)),
            )
        };
        if first {
            self.record_refusals("token", format!("{} (from {ip})", e.message));
        }
        match wait {
            Some(wait) => Err(AdminError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "too many refused requests from {ip}: at most {UNAUTHENTICATED_PER_WINDOW} in {window_secs} s; try again in {} s",
                    wait.max(1)
                ),
            )),
            None => result,
        }
    }

    /// Records a refused authentication (or a window of them) in the trail.
    pub(super) fn record_refusals(&self, target: &str, detail: String) {
        let event = AdminEvent {
            token: "(unauthenticated)".into(),
            role: "-".into(),
            action: "authenticate".into(),
            target: target.into(),
            function: None,
            secret: None,
            outcome: "denied".into(),
            detail: Some(detail),
        };
        // Refused either way; a trail that cannot take the record is logged.
        if let Err(err) = self.store.append_audit(&[Timed {
            at_ms: now_ms(),
            event: Event::Admin(Box::new(event)),
        }]) {
            tracing::error!("cannot record a refused admin request in the audit trail: {err}");
        }
    }

    pub(super) fn check_token(&self, authorization: Option<&[u8]>) -> Result<Caller, AdminError> {
        let unauthorized = |m: &str| AdminError::new(ErrorKind::Unauthenticated, m);
        let header = authorization.ok_or_else(|| {
            unauthorized("no bearer token: send `Authorization: Bearer <token>` (the CLI reads KEYHOLE_TOKEN)")
        })?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
        let presented = PresentedToken::parse(token)
            .ok_or_else(|| unauthorized("not a Keyhole token (they look like kh_<id>_<secret>)"))?;
        let (info, hash) = self
            .store
            .token_by_id(presented.id)
            .map_err(from_store)?
            .filter(|(_, hash)| presented.matches(hash))
            .ok_or_else(|| unauthorized("unknown token"))?;
        drop(hash);
        // Only now, for a token that matched, is the whole store verified: a
        // forged or restored token row must not act, and a caller without a
        // token cannot make the node do this work. Details stay in the log.
        self.store.verify_integrity().map_err(|e| {
            tracing::error!("refusing admin requests: {e}");
            AdminError::new(ErrorKind::Unavailable,
                "the store failed its integrity check; an operator runs `keyhole check` on the node",
            )
        })?;
        if let Some(at) = info.revoked_at {
            return Err(unauthorized(&format!(
                "token `{}` was revoked at {}",
                info.name,
                crate::audit::format_time(at)
            )));
        }
        if let Some(at) = info.expires_at.filter(|at| now() >= *at) {
            return Err(unauthorized(&format!(
                "token `{}` expired at {}",
                info.name,
                crate::audit::format_time(at)
            )));
        }
        Ok(Caller::Token {
            name: info.name,
            role: info.role,
            scope: info.functions,
            routes: info.routes,
        })
    }
}
