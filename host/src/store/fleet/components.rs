//! The fleet's components in JetStream's object store, named by their
//! SHA-256.
//!
//! Invariant: a replica applies a component only if its bytes have the
//! SHA-256 that names them, and a read that stops making progress fails
//! (the follower then resumes from where it was) instead of waiting
//! forever. A component already stored under its name with the right
//! bytes is not stored again. Why: an object is replaced by deleting its
//! old chunks, so a re-store of the same component (every deploy of a
//! component the fleet already runs) would pull the chunks from under a
//! follower reading them; and anyone who can write to NATS could place
//! other bytes under a name.

use super::{COMPONENTS_BUCKET, Shared};
use crate::store::StoreError;
use sha2::Digest as _;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

/// How long a read of a component may go without receiving anything.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The hex SHA-256 of `bytes`: a component's name in the store.
fn name_of(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Why a read failed: the store could not be read (try again later), or
/// what it holds under that name is not that component.
pub(super) enum ReadError {
    Unavailable(StoreError),
    Wrong(StoreError),
}

/// The component named `sha`, checked against its name.
pub(super) async fn fetch(shared: &Shared, sha: &str) -> Result<Vec<u8>, ReadError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ReadError::Unavailable(StoreError::ClusterUnavailable(format!(
            "cannot read component {sha} from {COMPONENTS_BUCKET}: {e}"
        )))
    };
    let stalled = || unreadable(&format!("nothing received for {STALL_TIMEOUT:?}"));
    let mut object = tokio::time::timeout(STALL_TIMEOUT, shared.components.get(sha))
        .await
        .map_err(|_| stalled())?
        .map_err(|e| unreadable(&e))?;
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 128 * 1024];
    loop {
        let read = tokio::time::timeout(STALL_TIMEOUT, object.read(&mut chunk))
            .await
            .map_err(|_| stalled())?
            .map_err(|e| unreadable(&e))?;
        if read == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    if name_of(&bytes) != sha {
        return Err(ReadError::Wrong(StoreError::Cluster(format!(
            "component {sha} in {COMPONENTS_BUCKET} does not have that SHA-256: refusing it (redeploying the function stores it again)"
        ))));
    }
    Ok(bytes)
}

/// How long a store of a component waits before it tries again.
const PUT_RETRY: Duration = Duration::from_millis(100);

/// Stores `component` under its SHA-256 unless the store holds exactly
/// those bytes under that name already. A store that fails is tried again
/// until `deadline`: right after a cluster starts (or its bucket's leader
/// changes) a server may not know the bucket's stream yet ("no stream
/// found"), and followers check what they read anyway.
pub(super) async fn upload(
    shared: &Shared,
    component: &[u8],
    deadline: tokio::time::Instant,
) -> Result<(), StoreError> {
    let name = name_of(component);
    let stored = match shared.components.info(&name).await {
        Ok(_) => fetch(shared, &name).await.is_ok(),
        Err(_) => false,
    };
    if stored {
        return Ok(());
    }
    loop {
        let mut reader = component;
        match shared.components.put(name.as_str(), &mut reader).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + PUT_RETRY < deadline => {
                tracing::debug!("storing component {name} failed ({e}); trying again");
                tokio::time::sleep(PUT_RETRY).await;
            }
            Err(e) => {
                return Err(StoreError::ClusterUnavailable(format!(
                    "cannot store component {name}: {e}"
                )));
            }
        }
    }
}
