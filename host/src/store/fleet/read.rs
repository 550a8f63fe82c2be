//! Reading a stream's messages whole: what listing the fleet's audit trail,
//! its last uses and its master-key rotations all do.
//!
//! Invariant: a read returns every message the consumer had pending when
//! it began, in stream order, or fails; it never waits without bound (each
//! message is waited for at most [`ACK_TIMEOUT`]) and never returns a
//! partial list as if it were whole.

use super::ACK_TIMEOUT;
use async_nats::jetstream;
use futures_util::StreamExt as _;

/// Every message an ordered consumer made with `config` on `stream` has
/// pending, stopping early at stream sequence `last` if given (messages
/// stored after the read began are not waited for). The error says what
/// went wrong, for the caller to name the stream.
pub(super) async fn all_messages<I>(
    stream: &jetstream::stream::Stream<I>,
    config: jetstream::consumer::pull::OrderedConfig,
    last: Option<u64>,
) -> Result<Vec<jetstream::Message>, String> {
    let mut consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let message = tokio::time::timeout(ACK_TIMEOUT, messages.next())
            .await
            .map_err(|_| "reading stopped (no quorum, or unreachable)".to_owned())?
            .ok_or_else(|| "reading ended early".to_owned())?
            .map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        out.push(message);
        if pending == 0 || last.is_some_and(|last| seq >= last) {
            return Ok(out);
        }
    }
}
