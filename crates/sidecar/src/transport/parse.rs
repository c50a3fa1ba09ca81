//! Reading a client message's JSON, large ones off the I/O thread.
//!
//! `parse_strict` takes about 1 ms per MiB of ordinary JSON and up to
//! ~5 ms per MiB for the costliest shapes the value limit still lets
//! through (`cargo bench -p tollgate-mcp --bench strict_json`). The sidecar
//! serves on one worker thread by default, so a 4 MiB body parsed there
//! stalls every other connection meanwhile. Bodies above
//! [`OFFLOAD_ABOVE`] (`ProxyConfig::parse_offload_above`) are parsed on
//! tokio's blocking pool instead, at most [`PARSERS`] at a time: a client
//! sending large bodies waits for its own turn, and small messages never
//! queue behind it (`cargo bench --bench parse_offload` measures both).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;

use tollgate_mcp::json::{Limits, StrictJsonError, parse_strict_with};

/// Bodies up to this size are parsed where they arrive (well under a
/// millisecond); the default of `ProxyConfig::parse_offload_above`.
pub(crate) const OFFLOAD_ABOVE: usize = 64 << 10;

/// Large bodies parsed at once, on the blocking pool. One: with the worker
/// thread that makes two busy threads, what a sidecar usually has cores
/// for; a second parser made the honest client's p99 ten times worse on a
/// 2-core machine (`benches/parse_offload.rs`) and large honest bodies
/// parse in about a millisecond anyway.
pub(crate) const PARSERS: usize = 1;

/// Parses client messages within limits.
pub(crate) struct JsonReader {
    limits: Limits,
    offload_above: usize,
    parsers: Arc<Semaphore>,
}

impl JsonReader {
    /// A reader refusing documents of more than `max_values` values, and
    /// parsing bodies above `offload_above` bytes on the blocking pool.
    pub(crate) fn new(max_values: usize, offload_above: usize) -> Self {
        JsonReader {
            limits: Limits { max_values },
            offload_above,
            parsers: Arc::new(Semaphore::new(PARSERS)),
        }
    }

    /// Parses `bytes` as one strict JSON value.
    pub(crate) async fn parse(&self, bytes: Bytes) -> Result<Value, StrictJsonError> {
        if bytes.len() <= self.offload_above {
            return parse_strict_with(&bytes, self.limits);
        }
        // The semaphore is never closed; should it be, parse here.
        let Ok(_turn) = self.parsers.clone().acquire_owned().await else {
            return parse_strict_with(&bytes, self.limits);
        };
        let limits = self.limits;
        tokio::task::spawn_blocking(move || parse_strict_with(&bytes, limits))
            .await
            .unwrap_or_else(|e| Err(StrictJsonError::Syntax(format!("parsing failed: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_and_small_bodies_read_alike() {
        let reader = JsonReader::new(10, OFFLOAD_ABOVE);
        let small = Bytes::from_static(br#"{"a":[1,2]}"#);
        let padding = " ".repeat(OFFLOAD_ABOVE);
        let large = Bytes::from(format!(r#"{{"a":[1,2]}}{padding}"#));
        assert_eq!(
            reader.parse(small).await.unwrap(),
            reader.parse(large).await.unwrap()
        );
        let many = Bytes::from(format!("[1,2,3,4,5,6,7,8,9,10]{padding}"));
        assert_eq!(
            reader.parse(many).await,
            Err(StrictJsonError::TooManyValues(10))
        );
    }
}
