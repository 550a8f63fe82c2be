//! How many admin requests may be in progress at once, and whose.
//!
//! Invariant: no token, and no crowd of non-admin tokens, can take every
//! admin request the node serves — an operator with an admin token can
//! always get in to revoke — and no more than a few deploy-sized bodies are
//! buffered at once.
//!
//! Why: each request holds a task, a blocking thread for its database work
//! and its buffered body (up to 64 MiB for a deploy). Without a cap, one
//! leaked deployer token could hold the admin listener, and the node's
//! memory, with slow or large requests.
//!
//! How: a request takes a slot after its token is checked and before its
//! body is read; the slot is released when the answer is ready.
//! Connections are capped apart, before any token is seen.

use crate::admin::access::{Caller, Role};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Admin requests one token may have in progress at once.
pub(crate) const MAX_REQUESTS_PER_TOKEN: usize = 8;
/// Admin requests all non-admin tokens together may have in progress at
/// once. Admin tokens are held only to their own limit, so a crowd of
/// deployer or auditor requests never locks an operator out.
pub(crate) const MAX_SHARED_REQUESTS: usize = 64;
/// Requests whose bodies may be deploy-sized (over 256 KiB) in progress at
/// once: at most this many times 64 MiB is buffered.
pub(crate) const MAX_LARGE_BODIES: usize = 4;
/// Admin connections open at once; a connection past it is closed as soon
/// as it is accepted.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// The admin requests in progress, by token.
#[derive(Default)]
pub(crate) struct AdminSlots {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    by_token: HashMap<String, usize>,
    shared: usize,
    large: usize,
}

/// Why a request got no slot: the limit it hit, for the 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NoSlot {
    /// The token has [`MAX_REQUESTS_PER_TOKEN`] in progress.
    #[error(
        "token `{0}` has {MAX_REQUESTS_PER_TOKEN} admin requests in progress already; retry when one has finished"
    )]
    Token(String),
    /// Non-admin tokens together have [`MAX_SHARED_REQUESTS`] in progress.
    #[error(
        "{MAX_SHARED_REQUESTS} admin requests from deployer and auditor tokens are in progress already; retry shortly"
    )]
    Shared,
    /// [`MAX_LARGE_BODIES`] deploy-sized bodies are being received.
    #[error("{MAX_LARGE_BODIES} deploys are being received already; retry when one has finished")]
    Large,
}

/// A request's slot, released when dropped.
pub(crate) struct Slot {
    slots: Arc<AdminSlots>,
    token: String,
    shared: bool,
    large: bool,
}

impl AdminSlots {
    /// A slot for one request by `caller`, whose body may be `large`.
    pub(crate) fn take(self: &Arc<Self>, caller: &Caller, large: bool) -> Result<Slot, NoSlot> {
        let token = caller.name().to_owned();
        let shared = caller.role() != Role::Admin;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.by_token.get(&token).copied().unwrap_or(0) >= MAX_REQUESTS_PER_TOKEN {
            return Err(NoSlot::Token(token));
        }
        if shared && held.shared >= MAX_SHARED_REQUESTS {
            return Err(NoSlot::Shared);
        }
        if large && held.large >= MAX_LARGE_BODIES {
            return Err(NoSlot::Large);
        }
        *held.by_token.entry(token.clone()).or_default() += 1;
        held.shared += usize::from(shared);
        held.large += usize::from(large);
        Ok(Slot {
            slots: Arc::clone(self),
            token,
            shared,
            large,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.by_token.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                held.by_token.remove(&self.token);
            }
        }
        held.shared -= usize::from(self.shared);
        held.large -= usize::from(self.large);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, role: Role) -> Caller {
        Caller::Token {
            name: name.to_owned(),
            role,
            scope: Default::default(),
            routes: Default::default(),
        }
    }

    #[test]
    fn a_token_a_crowd_and_large_bodies_each_have_a_limit_and_admins_get_in() {
        let slots = Arc::new(AdminSlots::default());
        let deployer = caller("ci", Role::Deployer);
        let held: Vec<Slot> = (0..MAX_REQUESTS_PER_TOKEN)
            .map(|_| slots.take(&deployer, false).unwrap())
            .collect();
        assert_eq!(
            slots.take(&deployer, false).err(),
            Some(NoSlot::Token("ci".into()))
        );
        drop(held);
        assert!(slots.take(&deployer, false).is_ok(), "released on drop");

        let crowd: Vec<Slot> = (0..MAX_SHARED_REQUESTS)
            .map(|i| {
                let caller = caller(&format!("d{i}"), Role::Auditor);
                slots.take(&caller, false).unwrap()
            })
            .collect();
        assert_eq!(
            slots.take(&caller("late", Role::Deployer), false).err(),
            Some(NoSlot::Shared)
        );
        let admin = caller("root", Role::Admin);
        let large: Vec<Slot> = (0..MAX_LARGE_BODIES)
            .map(|_| slots.take(&admin, true).unwrap())
            .collect();
        assert_eq!(slots.take(&admin, true).err(), Some(NoSlot::Large));
        assert!(slots.take(&admin, false).is_ok(), "an admin still gets in");
        drop((crowd, large));
        assert_eq!(slots.held.lock().unwrap().shared, 0);
    }
}
