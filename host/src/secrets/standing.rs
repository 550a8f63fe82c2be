//! Whether what a running request loaded is still in force.
//!
//! Invariant: once the node has loaded a change that withdraws something
//! from a binding — its grant revoked, its operations narrowed, its secret
//! or egress list changed, a version it opened retired without grace, its
//! function undeployed or redeployed without approval — every request that
//! began before and is still running is refused that thing at its next
//! secret operation on the binding (and an injected token at its next
//! outgoing request).
//!
//! Why: a request keeps the snapshot it started with for up to its timeout
//! (300 s at most). Without this, a revoke or an urgent rotation after a
//! leak would not reach the requests a compromise most likely runs in.
//!
//! How: each (function, binding) has one [`Standing`], shared by every load
//! of it. A load that withdraws more than operations moves its generation
//! on, so the [`InForce`] of every earlier load stops matching; a load that
//! only narrows operations stores the new set, which every check
//! intersects. A check is two atomic loads.
//!
//! A node of a fleet may also be told how long it may go on honouring
//! grants it can no longer check for revocation (`--max-stale`): past
//! that, [`Freshness`] turns every secret operation `unavailable` until
//! the node is back in touch, without waiting for a load.

use crate::operations::OperationSet;
use crate::outbound::egress::EgressList;
use crate::store::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What one binding of one function is granted now, shared by every load
/// of it.
#[derive(Debug)]
pub struct Standing {
    /// Moved on whenever a load withdraws a version, the egress list, the
    /// secret or the grant itself.
    generation: AtomicU64,
    /// The operations the latest load allows ([`OperationSet`]'s bits).
    allowed: AtomicU8,
}

impl Standing {
    fn new(allowed: OperationSet) -> Self {
        Self {
            generation: AtomicU64::new(0),
            allowed: AtomicU8::new(allowed.bits()),
        }
    }
}

/// Whether the node's grants are still fresh enough to honour: a node cut
/// off from its fleet for longer than it may be (`--max-stale`) is marked
/// stale, and every secret operation is refused until it is fresh again.
#[derive(Debug, Default)]
pub struct Freshness {
    stale: AtomicBool,
    /// Why, for the refusal (set before `stale`).
    reason: Mutex<String>,
}

impl Freshness {
    /// Marks the node stale (with why) or fresh.
    pub fn set_stale(&self, reason: Option<String>) {
        match reason {
            Some(reason) => {
                *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
                self.stale.store(true, Ordering::Release);
            }
            None => self.stale.store(false, Ordering::Release),
        }
    }

    /// Whether the node is stale now.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// `Ok` while fresh; else why not.
    pub fn check(&self) -> Result<(), Stale> {
        if self.is_stale() {
            Err(Stale(
                self.reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ))
        } else {
            Ok(())
        }
    }
}

/// A node too long out of touch with its fleet to honour grants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Stale(pub String);

/// A load's view of a binding's [`Standing`]: in force while no later load
/// has withdrawn what this one granted.
#[derive(Debug, Clone)]
pub struct InForce {
    standing: Arc<Standing>,
    generation: u64,
    freshness: Arc<Freshness>,
}

impl Default for InForce {
    /// A standing nothing will ever withdraw from (for bindings made outside
    /// a catalog: benches, fuzzing, unit tests).
    fn default() -> Self {
        Self {
            standing: Arc::new(Standing::new(OperationSet::all())),
            generation: 0,
            freshness: Arc::default(),
        }
    }
}

/// A binding withdrawn since the request that holds it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "its grant or secret changed after this request began (revoked, given for another secret or egress list, or the version this request opened was retired without grace); it is refused for the rest of the request"
)]
pub struct Withdrawn;

impl InForce {
    /// `Ok` while no later load has withdrawn this binding.
    pub fn check(&self) -> Result<(), Withdrawn> {
        if self.standing.generation.load(Ordering::Acquire) == self.generation {
            Ok(())
        } else {
            Err(Withdrawn)
        }
    }

    /// `Ok` while the node may honour grants at all ([`Freshness`]).
    pub fn fresh(&self) -> Result<(), Stale> {
        self.freshness.check()
    }

    /// The operations the latest load allows; a request may use only those
    /// its own load allowed as well.
    pub fn allowed_now(&self) -> OperationSet {
        OperationSet::from_bits(self.standing.allowed.load(Ordering::Acquire))
    }
}

/// What a load grants one binding, as far as withdrawing goes.
#[derive(Debug, Clone)]
pub struct Terms {
    /// The secret it resolves to.
    pub secret: Arc<str>,
    /// The operations allowed.
    pub allowed: OperationSet,
    /// Where an injected value may go.
    pub egress: Arc<EgressList>,
    /// The usable versions: the current one with `None`, those in grace
    /// with the end of their window.
    pub versions: Vec<(u32, Option<Timestamp>)>,
}

impl Terms {
    /// Whether these terms (a newer load's) take away more than some
    /// operations from `old` at `now`: every operation (the grant is
    /// pending for new code), another secret, another egress list, or a
    /// version `old` could use that is no longer usable as long.
    fn withdraws_from(&self, old: &Terms, now: Timestamp) -> bool {
        if self.secret != old.secret
            || self.egress != old.egress
            || (self.allowed.is_empty() && !old.allowed.is_empty())
        {
            return true;
        }
        old.versions.iter().any(|&(version, until)| {
            if until.is_some_and(|until| until <= now) {
                return false; // its window has closed anyway
            }
            let lasts = |new_until: Option<Timestamp>| match (new_until, until) {
                (None, _) => true,
                (Some(_), None) => true, // was current, now in grace
                (Some(new), Some(old)) => new >= old,
            };
            !self
                .versions
                .iter()
                .any(|&(v, new_until)| v == version && lasts(new_until))
        })
    }
}

struct Entry {
    standing: Arc<Standing>,
    terms: Terms,
    generation: u64,
}

type Key = (Arc<str>, Arc<str>);

/// Every loaded binding's [`Standing`], kept across loads.
#[derive(Default)]
pub struct Standings {
    by_binding: Mutex<HashMap<Key, Entry>>,
    freshness: Arc<Freshness>,
}

impl Standings {
    /// Standings whose bindings are refused while `freshness` says stale.
    pub fn with_freshness(freshness: Arc<Freshness>) -> Self {
        Self {
            by_binding: Mutex::default(),
            freshness,
        }
    }

    /// Begins a load: [`StandingsUpdate::bind`] each binding it grants,
    /// then [`StandingsUpdate::commit`] once the load has succeeded and
    /// before its snapshot is installed. An update dropped uncommitted
    /// changes nothing.
    pub fn update(&self) -> StandingsUpdate<'_> {
        StandingsUpdate {
            previous: self.by_binding.lock().unwrap_or_else(|p| p.into_inner()),
            next: HashMap::new(),
            now: crate::store::now(),
            freshness: Arc::clone(&self.freshness),
            scope: None,
        }
    }

    /// Begins a load of only the functions named in `functions`: the
    /// bindings of every other function stay as they are.
    pub fn update_only(&self, functions: HashSet<Arc<str>>) -> StandingsUpdate<'_> {
        StandingsUpdate {
            scope: Some(functions),
            ..self.update()
        }
    }
}

/// One load's changes to [`Standings`].
pub struct StandingsUpdate<'a> {
    previous: MutexGuard<'a, HashMap<Key, Entry>>,
    next: HashMap<Key, Entry>,
    now: Timestamp,
    freshness: Arc<Freshness>,
    /// The functions this load reloads (`None`: all of them).
    scope: Option<HashSet<Arc<str>>>,
}

impl StandingsUpdate<'_> {
    /// The standing of `function`'s `binding` under `terms`, withdrawing
    /// (at commit) what the previous load granted beyond them.
    pub fn bind(&mut self, function: &str, binding: &str, terms: Terms) -> InForce {
        let key: Key = (function.into(), binding.into());
        let (standing, generation) = match self.previous.get(&key) {
            Some(old) if terms.withdraws_from(&old.terms, self.now) => {
                (Arc::clone(&old.standing), old.generation + 1)
            }
            Some(old) => (Arc::clone(&old.standing), old.generation),
            None => (Arc::new(Standing::new(terms.allowed)), 0),
        };
        let in_force = InForce {
            standing: Arc::clone(&standing),
            generation,
            freshness: Arc::clone(&self.freshness),
        };
        self.next.insert(
            key,
            Entry {
                standing,
                terms,
                generation,
            },
        );
        in_force
    }

    /// Puts the load's standings in force: withdraws every binding it no
    /// longer grants, moves on those it withdrew from, and stores what each
    /// allows now. Returns how many bindings lost more than operations.
    pub fn commit(mut self) -> usize {
        let mut withdrawn = 0;
        let scope = self.scope.take();
        let reloaded = self
            .previous
            .extract_if(|key, _| scope.as_ref().is_none_or(|s| s.contains(&key.0)));
        for (key, old) in reloaded.collect::<Vec<_>>() {
            match self.next.get(&key) {
                Some(new) if new.generation == old.generation => {}
                // Moved on by this load (stored below), or no longer granted.
                _ => {
                    withdrawn += 1;
                    old.standing.allowed.store(0, Ordering::Release);
                    old.standing
                        .generation
                        .store(old.generation + 1, Ordering::Release);
                }
            }
        }
        for entry in self.next.values() {
            entry
                .standing
                .allowed
                .store(entry.terms.allowed.bits(), Ordering::Release);
            entry
                .standing
                .generation
                .store(entry.generation, Ordering::Release);
        }
        self.previous.extend(self.next.drain());
        withdrawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::Operation;

    fn terms(allowed: &[Operation], versions: &[(u32, Option<Timestamp>)]) -> Terms {
        Terms {
            secret: "s".into(),
            allowed: allowed.iter().copied().collect(),
            egress: Arc::default(),
            versions: versions.to_vec(),
        }
    }

    fn load(standings: &Standings, bound: &[(&str, Terms)]) -> Vec<InForce> {
        let mut update = standings.update();
        let loaded = bound
            .iter()
            .map(|(binding, t)| update.bind("f", binding, t.clone()))
            .collect();
        update.commit();
        loaded
    }

    #[test]
    fn a_load_that_withdraws_nothing_leaves_earlier_loads_in_force() {
        let standings = Standings::default();
        let both = [Operation::Hmac, Operation::Reveal];
        let first = load(&standings, &[("K", terms(&both, &[(1, None)]))]);
        // Rotated with grace: version 1 still usable, for a while.
        let far = crate::store::now() + 3600;
        load(
            &standings,
            &[("K", terms(&both, &[(2, None), (1, Some(far))]))],
        );
        assert_eq!(first[0].check(), Ok(()));
        assert_eq!(first[0].allowed_now(), both.iter().copied().collect());
    }

    #[test]
    fn revoking_retiring_or_retargeting_withdraws_and_narrowing_only_narrows() {
        let standings = Standings::default();
        let both = [Operation::Hmac, Operation::Reveal];
        let t = terms(&both, &[(1, None)]);
        let first = load(
            &standings,
            &[("A", t.clone()), ("B", t.clone()), ("C", t.clone())],
        );
        let retargeted = Terms {
            secret: "other".into(),
            ..t.clone()
        };
        let narrowed = terms(&[Operation::Hmac], &[(1, None)]);
        load(&standings, &[("B", retargeted), ("C", narrowed)]);
        assert_eq!(first[0].check(), Err(Withdrawn), "A revoked");
        assert_eq!(first[1].check(), Err(Withdrawn), "B retargeted");
        assert_eq!(first[2].check(), Ok(()), "C narrowed");
        assert_eq!(
            first[2].allowed_now(),
            [Operation::Hmac].into_iter().collect()
        );

        // Version 1 retired with no grace.
        let second = load(&standings, &[("C", terms(&both, &[(1, None)]))]);
        load(&standings, &[("C", terms(&both, &[(2, None)]))]);
        assert_eq!(second[0].check(), Err(Withdrawn));
        assert_eq!(first[2].check(), Err(Withdrawn), "every earlier load");
    }

    #[test]
    fn an_uncommitted_load_changes_nothing() {
        let standings = Standings::default();
        let t = terms(&[Operation::Hmac], &[(1, None)]);
        let first = load(&standings, &[("A", t.clone())]);
        {
            let mut update = standings.update();
            update.bind("f", "A", terms(&[Operation::Hmac], &[(2, None)]));
        }
        assert_eq!(first[0].check(), Ok(()));
        // The next load still compares against what is in force.
        load(&standings, &[]);
        assert_eq!(first[0].check(), Err(Withdrawn));
    }

    #[test]
    fn a_load_of_some_functions_leaves_the_others_bindings_alone() {
        let standings = Standings::default();
        let t = terms(&[Operation::Hmac], &[(1, None)]);
        let mut update = standings.update();
        let f = update.bind("f", "K", t.clone());
        let g = update.bind("g", "K", t.clone());
        update.commit();

        // Only g reloads, and no longer has its grant: f keeps its own.
        assert_eq!(standings.update_only(["g".into()].into()).commit(), 1);
        assert_eq!(f.check(), Ok(()));
        assert_eq!(g.check(), Err(Withdrawn));

        // A full load still compares every function against what is in force.
        let mut update = standings.update();
        update.bind("f", "K", t);
        assert_eq!(update.commit(), 0);
        assert_eq!(f.check(), Ok(()));
    }
}
