//! What a node publishes besides the log (its audit rows, chain key and
//! checkpoint; its use marks) is keyed to the fleet's keyring, so that a
//! retired master key stops vouching for anything new.
//!
//! Invariant: a message on the fleet's audit or use-mark streams counts
//! only if it carries a MAC under a key of the fleet's keyring and, when a
//! master-key rotation has retired that key since, JetStream stored it no
//! later than [`RETIRED_KEY_GRACE`] after it stored that rotation.
//!
//! Why: the genesis seals the first entry key under the first master key
//! and stays in the log for good, and every key after it is sealed under
//! the master key of its day. Whoever kept a retired master key (the
//! reason to rotate it, often) can still open the entry keys of its time,
//! and so the chain keys nodes sealed under them: with those alone they
//! could write records under a node's name, or a node of their own, that
//! every chain MAC vouches for. They cannot make the MAC of the entry key
//! in force now, and JetStream's storage time is not theirs to choose, so
//! what they publish after the rotation (and its grace) is named as
//! foreign by `audit verify` and left out of listings and last uses.
//!
//! The grace covers a node's shipping pass already under way when its
//! follower applied the rotation, and the clocks of two streams' leaders.
//! A node publishes only while it follows the fleet (not stopped at an
//! entry, caught up after a reconnection), so it never publishes under a
//! key the fleet has retired for longer than that: a node not given the
//! new key keeps its records until it is.
//!
//! Messages from before this keying carry no MAC: they count as the first
//! key's, which vouches for them until the first rotation, as before.

use super::Shared;
use super::entry::Keyring;
use std::collections::BTreeMap;
use std::time::Duration;

/// The header carrying `<first entry of the key>:<MAC>`.
pub(super) const HEADER: &str = "Keyhole-Mac";

/// How long after a rotation the key it retired still vouches for what
/// JetStream stores.
pub(super) const RETIRED_KEY_GRACE: Duration = Duration::from_secs(10);

/// How long a replica about to publish waits for its follower to apply
/// the entries the log holds.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// When JetStream stored each master-key rotation entry: its sequence in
/// the log and the time (Unix milliseconds, by the stream's clock).
pub(super) type RotationTimes = BTreeMap<u64, i64>;

/// The header value for `payload` on `subject`, keyed for `purpose` under
/// this replica's newest entry key.
pub(super) fn header(shared: &Shared, purpose: &str, subject: &str, payload: &[u8]) -> String {
    let (from, key) = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .newest();
    let tag = key.tag(
        purpose,
        &[subject.as_bytes(), shared.fleet.as_bytes(), payload],
    );
    format!("{from}:{tag}")
}

/// Whether this replica may publish now: only while it follows the fleet,
/// so that what it publishes is keyed under the fleet's newest entry key
/// (see the module's doc). If not, why.
pub(super) async fn may_publish(shared: &Shared) -> Result<(), String> {
    if let Some(why) = shared.status.blocked() {
        return Err(format!(
            "this node is stopped at an entry of the fleet's log, so it publishes nothing until it follows again ({why})"
        ));
    }
    if shared.status.caught_up() {
        return Ok(());
    }
    let (_, last) = super::follower::last_entry(shared)
        .await
        .map_err(|e| e.to_string())?;
    // A command's own write is applied by its follower a moment after the
    // fleet took it: that is worth a short wait, not a refusal.
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        let applied = shared.status.applied();
        if applied >= last {
            shared.status.set_caught_up(true);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "this node is catching up with the fleet (entry {applied} of {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a message (its `subject`, `payload`, [`HEADER`] value and the
/// time JetStream stored it) counts, as this replica knows the keyring;
/// if not, why, for `audit verify` to name.
pub(super) fn judge(
    shared: &Shared,
    purpose: &str,
    subject: &str,
    payload: &[u8],
    header: Option<&str>,
    stored: time::OffsetDateTime,
) -> Result<(), String> {
    let keys = shared.keys.read().unwrap_or_else(|p| p.into_inner());
    let times = shared
        .rotation_times
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let stored_ms = super::unix_ms(stored);
    judge_with(
        &keys,
        &times,
        &Message {
            fleet: &shared.fleet,
            purpose,
            subject,
            payload,
            header,
            stored_ms,
        },
    )
}

/// [`judge`] on a message read from a stream by a consumer: its subject,
/// payload, [`HEADER`] and the time JetStream stored it.
pub(super) fn judge_message(
    shared: &Shared,
    purpose: &str,
    message: &async_nats::jetstream::Message,
) -> Result<(), String> {
    let stored = message
        .info()
        .map_err(|e| format!("has no stream metadata ({e})"))?
        .published;
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER))
        .map(|v| v.as_str());
    judge(
        shared,
        purpose,
        message.subject.as_str(),
        &message.payload,
        header,
        stored,
    )
}

/// A message as [`judge_with`] weighs it.
struct Message<'a> {
    fleet: &'a str,
    purpose: &'a str,
    subject: &'a str,
    payload: &'a [u8],
    header: Option<&'a str>,
    stored_ms: i64,
}

/// [`judge`] on a keyring and rotation times given.
fn judge_with(keys: &Keyring, times: &RotationTimes, message: &Message<'_>) -> Result<(), String> {
    // Before this keying, nothing carried a MAC: the first key's, unchecked.
    let (from, tag) = match message.header {
        None => (2, None),
        Some(value) => {
            let (from, tag) = value
                .split_once(':')
                .and_then(|(from, tag)| Some((from.parse::<u64>().ok()?, tag)))
                // Use marks from before carried the first key's MAC alone.
                .unwrap_or((2, value));
            (from, Some(tag))
        }
    };
    let key = keys.starting_at(from).ok_or_else(|| {
        format!("is keyed under entry key {from}, which this fleet does not have")
    })?;
    if let Some(tag) = tag {
        let parts: [&[u8]; 3] = [
            message.subject.as_bytes(),
            message.fleet.as_bytes(),
            message.payload,
        ];
        if !key.tag_verifies(message.purpose, &parts, tag) {
            return Err("fails its MAC (published by someone without the fleet's key)".into());
        }
    }
    let Some(next) = keys.successor_of(from) else {
        return Ok(());
    };
    // The rotation that retired the key is entry `next - 1`. Unknown, it
    // cannot be weighed: every replica reads the rotations' times when it
    // joins and as it follows, so this is not a state anyone can bring about.
    let Some(retired_ms) = times.get(&(next - 1)) else {
        return Ok(());
    };
    let grace_ms = RETIRED_KEY_GRACE.as_millis() as i64;
    if message.stored_ms > retired_ms.saturating_add(grace_ms) {
        let how = if tag.is_some() {
            "is keyed under a retired master key's entry key"
        } else {
            "carries no MAC"
        };
        return Err(format!(
            "{how}, and was stored after the master-key rotation (entry {}) retired that key: it was not published by a node holding the fleet's current master key",
            next - 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fleet::entry::EntryKey;

    const FLEET: &str = "f1";
    const PURPOSE: &str = "audit messages";

    fn keyed(keys: &Keyring, from: u64, subject: &str, payload: &[u8]) -> String {
        let key = keys.starting_at(from).unwrap();
        let tag = key.tag(PURPOSE, &[subject.as_bytes(), FLEET.as_bytes(), payload]);
        format!("{from}:{tag}")
    }

    fn weigh(
        keys: &Keyring,
        times: &RotationTimes,
        subject: &str,
        header: Option<&str>,
        stored_ms: i64,
    ) -> Result<(), String> {
        judge_with(
            keys,
            times,
            &Message {
                fleet: FLEET,
                purpose: PURPOSE,
                subject,
                payload: b"rows",
                header,
                stored_ms,
            },
        )
    }

    #[test]
    fn a_retired_key_vouches_only_for_what_was_stored_before_its_rotation_and_grace() {
        let first = Keyring::first(EntryKey::generate());
        let subject = "keyhole.audit.rows.n1";
        let old = keyed(&first, 2, subject, b"rows");
        let none = RotationTimes::new();
        // No rotation yet: the first key's MAC counts, and so does no MAC.
        assert_eq!(weigh(&first, &none, subject, Some(&old), 5_000), Ok(()));
        assert_eq!(weigh(&first, &none, subject, None, 5_000), Ok(()));

        // Rotated at entry 9 (stored at t = 100 s): the new key starts at 10.
        let keys = first.rotated(10);
        let times = RotationTimes::from([(9, 100_000)]);
        let grace = RETIRED_KEY_GRACE.as_millis() as i64;
        let new = keyed(&keys, 10, subject, b"rows");
        // Before the rotation, and within its grace, the old key counts.
        assert_eq!(weigh(&keys, &times, subject, Some(&old), 99_000), Ok(()));
        assert_eq!(
            weigh(&keys, &times, subject, Some(&old), 100_000 + grace),
            Ok(())
        );
        assert_eq!(weigh(&keys, &times, subject, None, 99_000), Ok(()));
        // After it, neither the old key's MAC nor no MAC does.
        let late = 100_000 + grace + 1;
        let err = weigh(&keys, &times, subject, Some(&old), late).unwrap_err();
        assert!(err.contains("retired") && err.contains("entry 9"), "{err}");
        let err = weigh(&keys, &times, subject, None, late).unwrap_err();
        assert!(err.contains("carries no MAC"), "{err}");
        // The new key's MAC counts whenever stored.
        assert_eq!(weigh(&keys, &times, subject, Some(&new), late), Ok(()));
        assert_eq!(weigh(&keys, &times, subject, Some(&new), 1), Ok(()));
    }

    #[test]
    fn a_mac_binds_the_subject_and_payload_and_names_a_key_the_fleet_has() {
        let keys = Keyring::first(EntryKey::generate()).rotated(10);
        let times = RotationTimes::from([(9, 100_000)]);
        let header = keyed(&keys, 10, "keyhole.audit.rows.n1", b"rows");
        // Moved to another node's subject, it fails.
        let err = weigh(&keys, &times, "keyhole.audit.rows.n2", Some(&header), 1).unwrap_err();
        assert!(err.contains("fails its MAC"), "{err}");
        // Another payload fails.
        let err = judge_with(
            &keys,
            &times,
            &Message {
                fleet: FLEET,
                purpose: PURPOSE,
                subject: "keyhole.audit.rows.n1",
                payload: b"other rows",
                header: Some(&header),
                stored_ms: 1,
            },
        )
        .unwrap_err();
        assert!(err.contains("fails its MAC"), "{err}");
        // A key from a keyring of its own making is none of the fleet's.
        let mine = Keyring::first(EntryKey::generate()).rotated(10);
        let forged = keyed(&mine, 10, "keyhole.audit.rows.n1", b"rows");
        let err = weigh(&keys, &times, "keyhole.audit.rows.n1", Some(&forged), 1).unwrap_err();
        assert!(err.contains("fails its MAC"), "{err}");
        let err = weigh(&keys, &times, "keyhole.audit.rows.n1", Some("77:00"), 1).unwrap_err();
        assert!(err.contains("entry key 77"), "{err}");
    }

    #[test]
    fn a_use_mark_from_before_with_the_first_keys_mac_alone_still_counts_until_a_rotation() {
        let first = Keyring::first(EntryKey::generate());
        let subject = "keyhole.uses.n1.ab";
        let bare = first
            .starting_at(2)
            .unwrap()
            .tag(PURPOSE, &[subject.as_bytes(), FLEET.as_bytes(), b"rows"]);
        let none = RotationTimes::new();
        assert_eq!(weigh(&first, &none, subject, Some(&bare), 1), Ok(()));
        let keys = first.rotated(10);
        let times = RotationTimes::from([(9, 100_000)]);
        assert_eq!(weigh(&keys, &times, subject, Some(&bare), 1), Ok(()));
        assert!(weigh(&keys, &times, subject, Some(&bare), 200_000).is_err());
    }
}
