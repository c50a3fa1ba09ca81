//! Leader election on a `coordination.k8s.io` Lease.
//!
//! Every replica serves sidecars; only the holder of the lease writes
//! status, so two replicas never fight over a policy's conditions. A
//! replica that cannot renew steps down at once, before its lease can expire
//! and another replica take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::metrics::ControllerMetrics;

/// Competes for one Lease.
pub struct Elector {
    /// The Lease API in the controller's namespace.
    pub api: Api<Lease>,
    /// The Lease name.
    pub name: String,
    /// This replica.
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

impl Elector {
    /// Competes until `shutdown`, reporting leadership on `leader`; a
    /// leader releases the lease on shutdown so another replica takes over
    /// at once.
    pub async fn run(
        self,
        leader: watch::Sender<bool>,
        metrics: ControllerMetrics,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let is_leader = match self.acquire_or_renew().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "cannot renew the leader lease; stepping down");
                    false
                }
            };
            if is_leader != *leader.borrow() {
                if is_leader {
                    tracing::info!(identity = %self.identity, "became leader: writing policy status");
                } else {
                    tracing::info!(identity = %self.identity, "not leader: serving sidecars only");
                }
                let _ = leader.send(is_leader);
                metrics.leader.set(i64::from(is_leader));
            }
            let pause = if is_leader {
                self.duration / 3
            } else {
                Duration::from_secs(2)
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    if *leader.borrow() {
                        self.release().await;
                        let _ = leader.send(false);
                        metrics.leader.set(0);
                    }
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration.as_secs() as i32),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_no(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let held_by_us = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration_ms = i64::from(
            spec.lease_duration_seconds
                .unwrap_or(self.duration.as_secs() as i32),
        ) * 1000;
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0.as_millisecond() + duration_ms < now.as_millisecond());
        if !held_by_us && spec.holder_identity.is_some() && !expired {
            return Ok(false);
        }
        if !held_by_us {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.duration.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion in `lease` makes this a compare-and-swap.
        conflict_is_no(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

/// Losing a race for the lease is not an error.
fn conflict_is_no<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
