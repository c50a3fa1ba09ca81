//! The KubeVirt state as published to every sidecar stream: one
//! [`ClusterReport`], its `state` event encoded once for all streams, and a
//! generation that changes only when the content does.
//!
//! The state is re-published every 2 s even when nothing changed, because
//! each publication is a fresh observation sidecars need (to stop counting
//! their own admissions, and to keep trusting the running-VM count). With
//! 10,000 VMs the state is megabytes; a stream whose sidecar understands
//! [`STATE_FRESH_EVENT`] gets the whole state only when its content changed
//! and a few hundred bytes otherwise.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tollgate_mcp::sse;
use tollgate_policy::snapshot::{ClusterReport, STATE_EVENT, STATE_FRESH_EVENT};

/// One publication.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    report: ClusterReport,
    /// Changes exactly when the report's content (all but its freshness)
    /// does.
    generation: u64,
    full: OnceLock<Bytes>,
    fresh: OnceLock<Bytes>,
}

impl ClusterState {
    /// `report`, following `previous`: the same generation if only its
    /// freshness changed.
    pub(crate) fn next(report: ClusterReport, previous: &ClusterState) -> Arc<ClusterState> {
        let generation = if report.same_content(&previous.report) {
            previous.generation
        } else {
            previous.generation + 1
        };
        Arc::new(ClusterState {
            report,
            generation,
            full: OnceLock::new(),
            fresh: OnceLock::new(),
        })
    }

    /// The report.
    pub(crate) fn report(&self) -> &ClusterReport {
        &self.report
    }

    /// The whole state as an SSE event, encoded once.
    fn full(&self) -> Bytes {
        self.full
            .get_or_init(|| {
                let data = serde_json::to_string(&self.report).unwrap_or_default();
                sse::encode(Some(STATE_EVENT), None, &data)
            })
            .clone()
    }

    /// Only its freshness, as an SSE event, encoded once.
    fn fresh(&self) -> Bytes {
        self.fresh
            .get_or_init(|| {
                let data = serde_json::to_string(&self.report.freshness()).unwrap_or_default();
                sse::encode(Some(STATE_FRESH_EVENT), None, &data)
            })
            .clone()
    }
}

/// What one stream has been sent, to send the least that keeps its sidecar
/// current.
#[derive(Debug)]
pub(crate) struct StateSender {
    fresh_ok: bool,
    sent: Option<u64>,
}

impl StateSender {
    /// A stream whose sidecar understands `state-fresh` events, or not.
    pub(crate) fn new(fresh_ok: bool) -> StateSender {
        StateSender {
            fresh_ok,
            sent: None,
        }
    }

    /// The event that brings this stream's sidecar to `state`.
    pub(crate) fn event(&mut self, state: &ClusterState) -> Bytes {
        if self.fresh_ok && self.sent == Some(state.generation) {
            return state.fresh();
        }
        self.sent = Some(state.generation);
        state.full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_policy::snapshot::StateFresh;

    fn report(vms: usize, at: &str) -> ClusterReport {
        ClusterReport {
            vmis_observed: true,
            vms: (0..vms)
                .map(|i| {
                    (
                        format!("vms/vm-{i}"),
                        [("tier".into(), "dev".into())].into(),
                    )
                })
                .collect(),
            vm_sizes: (0..vms)
                .map(|i| {
                    let size = tollgate_policy::resources::sizes::Sizes {
                        cpu: Some(2000),
                        memory: Some(4096),
                        storage: Some(30 * 1024),
                    };
                    (format!("vms/vm-{i}"), size)
                })
                .collect(),
            running_vms: (0..vms).map(|i| format!("vms/vm-{i}")).collect(),
            observed_at: at.into(),
            ..Default::default()
        }
    }

    fn event_name(bytes: &Bytes) -> String {
        let text = std::str::from_utf8(bytes).unwrap();
        text.lines().next().unwrap().to_owned()
    }

    #[test]
    fn an_unchanged_state_goes_as_its_freshness_to_streams_that_understand_it() {
        let first = ClusterState::next(
            report(10_000, "2026-01-01T00:00:00Z"),
            &ClusterState::default(),
        );
        let again = ClusterState::next(report(10_000, "2026-01-01T00:00:02Z"), &first);
        let mut changed = report(10_000, "2026-01-01T00:00:04Z");
        changed.running_vms.remove("vms/vm-0");
        let changed = ClusterState::next(changed, &again);

        let mut new = StateSender::new(true);
        let mut old = StateSender::new(false);
        let full = new.event(&first);
        assert_eq!(event_name(&full), "event: state");
        assert_eq!(full, old.event(&first), "encoded once, the same bytes");
        // Unchanged but re-observed: a few hundred bytes instead of the whole.
        let fresh = new.event(&again);
        assert_eq!(event_name(&fresh), "event: state-fresh");
        let data = std::str::from_utf8(&fresh).unwrap().lines().nth(1).unwrap();
        let parsed: StateFresh = serde_json::from_str(data.trim_start_matches("data: ")).unwrap();
        assert_eq!(parsed.observed_at, "2026-01-01T00:00:02Z");
        assert!(parsed.vmis_observed);
        eprintln!(
            "10,000 VMs: state {} bytes, state-fresh {} bytes",
            full.len(),
            fresh.len()
        );
        assert!(fresh.len() < 200, "{} bytes", fresh.len());
        assert!(full.len() > 1000 * fresh.len(), "{} bytes", full.len());
        // A stream that does not understand it gets the whole state.
        assert_eq!(event_name(&old.event(&again)), "event: state");
        // Changed content goes whole to everyone.
        assert_eq!(event_name(&new.event(&changed)), "event: state");
    }
}
