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

use crate::metrics::ControllerMetrics;

/// Competes for one Lease.
pub(crate) struct Elector {
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
    pub(crate) async fn run(
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
                metrics.leader(is_leader);
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
                        metrics.leader(false);
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

/// The elector against a mocked Kubernetes API (`tower_test`): each scenario
/// scripts the apiserver's answers and checks what the elector sends.
#[cfg(test)]
mod tests {
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle};

    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn elector() -> (Elector, Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "tollgate-system");
        let elector = Elector {
            api: Api::namespaced(client, "tollgate-system"),
            name: "tollgate-controller".into(),
            identity: "replica-a".into(),
            duration: DURATION,
        };
        (elector, handle)
    }

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, transitions: i32) -> Value {
        let renewed = Timestamp::now() - std::time::Duration::from_secs(renewed_secs_ago as u64);
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "tollgate-controller", "namespace": "tollgate-system", "resourceVersion": "41"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "renewTime": MicroTime(renewed),
                "acquireTime": MicroTime(renewed),
                "leaseTransitions": transitions,
            }
        })
    }

    fn respond(status: StatusCode, body: Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
    }

    /// Answers the next request with `answer`, returning its method and body.
    async fn expect(
        handle: &mut Handle<Request<Body>, Response<Body>>,
        method: Method,
        answer: Response<Body>,
    ) -> Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), method, "{}", request.uri());
        assert!(
            request
                .uri()
                .path()
                .starts_with("/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases"),
            "{}",
            request.uri()
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        send.send_response(answer);
        if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        }
    }

    /// One `acquire_or_renew` against a scripted apiserver: answers the
    /// requests in order (checking each method), then refuses any more (so a
    /// request the script did not expect fails the call instead of hanging).
    /// Returns the outcome and the bodies the elector sent.
    async fn scenario(
        script: Vec<(Method, Response<Body>)>,
    ) -> (Result<bool, kube::Error>, Vec<Value>) {
        let (e, mut api) = elector();
        let run = tokio::spawn(async move { e.acquire_or_renew().await });
        let mut sent = Vec::new();
        for (method, answer) in script {
            sent.push(expect(&mut api, method, answer).await);
        }
        drop(api);
        (run.await.unwrap(), sent)
    }

    fn not_found() -> Response<Body> {
        respond(StatusCode::NOT_FOUND, status(404, "NotFound"))
    }

    #[tokio::test]
    async fn no_lease_yet_creates_one_held_by_us() {
        let (led, sent) = scenario(vec![
            (Method::GET, not_found()),
            (
                Method::POST,
                respond(StatusCode::CREATED, lease(Some("replica-a"), 0, 0)),
            ),
        ])
        .await;
        assert!(led.unwrap(), "we lead");
        assert_eq!(sent[1]["spec"]["holderIdentity"], "replica-a");
        assert_eq!(sent[1]["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn a_lease_another_replica_renews_is_left_alone() {
        let (led, _) = scenario(vec![(
            Method::GET,
            respond(StatusCode::OK, lease(Some("replica-b"), 3, 4)),
        )])
        .await;
        assert!(!led.unwrap(), "b leads; nothing is written");
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_a_compare_and_swap() {
        let (led, sent) = scenario(vec![
            (
                Method::GET,
                respond(StatusCode::OK, lease(Some("replica-b"), 60, 4)),
            ),
            (
                Method::PUT,
                respond(StatusCode::OK, lease(Some("replica-a"), 0, 5)),
            ),
        ])
        .await;
        assert!(led.unwrap());
        assert_eq!(sent[1]["spec"]["holderIdentity"], "replica-a");
        assert_eq!(sent[1]["spec"]["leaseTransitions"], 5);
        assert_eq!(
            sent[1]["metadata"]["resourceVersion"], "41",
            "the write is conditional on the version read"
        );
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
        let (led, _) = scenario(vec![
            (
                Method::GET,
                respond(StatusCode::OK, lease(Some("replica-b"), 60, 4)),
            ),
            (
                Method::PUT,
                respond(StatusCode::CONFLICT, status(409, "Conflict")),
            ),
        ])
        .await;
        assert!(!led.unwrap(), "another replica won");
    }

    #[tokio::test]
    async fn the_leader_renews_without_counting_a_transition() {
        let (led, sent) = scenario(vec![
            (
                Method::GET,
                respond(StatusCode::OK, lease(Some("replica-a"), 5, 2)),
            ),
            (
                Method::PUT,
                respond(StatusCode::OK, lease(Some("replica-a"), 0, 2)),
            ),
        ])
        .await;
        assert!(led.unwrap());
        assert_eq!(sent[1]["spec"]["leaseTransitions"], 2);
        let renew_time: Timestamp = sent[1]["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            Timestamp::now().as_millisecond() - renew_time.as_millisecond() < 2_000,
            "renewed now, not 5 s ago: {renew_time}"
        );
    }

    #[tokio::test]
    async fn an_api_failure_is_an_error_so_the_leader_steps_down() {
        let (led, _) = scenario(vec![(
            Method::GET,
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                status(500, "InternalError"),
            ),
        )])
        .await;
        assert!(led.is_err());

        // And `run` acts on it: a leader whose renewal fails stops leading
        // at once, without waiting for its lease to run out.
        let (mut e, mut api) = elector();
        e.duration = Duration::from_millis(300);
        let mut r = leading(e, &mut api).await;
        expect(
            &mut api,
            Method::GET,
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                status(500, "InternalError"),
            ),
        )
        .await;
        tokio::time::timeout(Duration::from_secs(5), r.leader.changed())
            .await
            .expect("a failed renewal ends leadership")
            .unwrap();
        assert!(!*r.leader.borrow(), "stepped down");
        assert_eq!(r.gauge.get(), 0);
        r.stop.send(true).unwrap();
        r.run.await.unwrap();
    }

    /// An elector's `run` in the background, and how to watch and stop it.
    struct Running {
        run: tokio::task::JoinHandle<()>,
        leader: watch::Receiver<bool>,
        stop: watch::Sender<bool>,
        gauge: prometheus::IntGauge,
    }

    /// Starts `e.run` and answers its first round (no lease yet, created):
    /// it leads, says so, and sets the gauge.
    async fn leading(e: Elector, api: &mut Handle<Request<Body>, Response<Body>>) -> Running {
        let (leader_tx, mut leader) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let metrics = ControllerMetrics::new().unwrap();
        let gauge = metrics.leader_gauge();
        let run = tokio::spawn(e.run(leader_tx, metrics, stop_rx));
        expect(api, Method::GET, not_found()).await;
        expect(
            api,
            Method::POST,
            respond(StatusCode::CREATED, lease(Some("replica-a"), 0, 0)),
        )
        .await;
        leader.changed().await.unwrap();
        assert!(*leader.borrow());
        assert_eq!(gauge.get(), 1);
        Running {
            run,
            leader,
            stop,
            gauge,
        }
    }

    #[tokio::test]
    async fn run_reports_leadership_and_releases_the_lease_on_shutdown() {
        let (e, mut api) = elector();
        let r = leading(e, &mut api).await;

        r.stop.send(true).unwrap();
        expect(
            &mut api,
            Method::GET,
            respond(StatusCode::OK, lease(Some("replica-a"), 0, 0)),
        )
        .await;
        let released = expect(
            &mut api,
            Method::PUT,
            respond(StatusCode::OK, lease(None, 0, 0)),
        )
        .await;
        assert_eq!(released["spec"]["holderIdentity"], Value::Null);
        drop(api);
        r.run.await.unwrap();
        assert!(!*r.leader.borrow());
        assert_eq!(r.gauge.get(), 0);
    }
}
