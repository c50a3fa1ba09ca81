//! Managed mode: the sidecar follows its pod's snapshot stream from the
//! controller (the contract is in [`tollgate_policy::snapshot`]).
//!
//! It compiles each snapshot with the same `compile` the controller used,
//! puts it in force, keeps a copy on disk and acknowledges it. When the
//! controller is gone it keeps enforcing the last good snapshot — also
//! across a sidecar restart, from the copy — and reconnects with
//! exponential backoff. Before it has ever had a snapshot it refuses tool
//! calls, unless started with `--fail-open`.
//!
//! The rules come from whoever answers, so the channel is TLS and the
//! controller's certificate must chain to exactly the CA the sidecar was
//! given (`--controller-ca-file`, or `TOLLGATE_CONTROLLER_CA_PEM` from the
//! injection webhook) — never the public roots. Plain `http://` needs
//! `--controller-insecure` (local tests). A snapshot that names another pod
//! is refused like one that does not compile: counted, logged, not
//! acknowledged, and the rules in force stay.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use tollgate_mcp::sse;
use tollgate_policy::budget::inflight::{Covers, MemoryInFlight};
use tollgate_policy::resources::CloneCounts;
use tollgate_policy::snapshot::{
    Ack, ClusterReport, FEATURE_STATE_FRESH, HEARTBEAT_EVENT, Heartbeat, SNAPSHOT_EVENT,
    STATE_EVENT, STATE_FRESH_EVENT, STREAM_FEATURES_HEADER, Snapshot, StateFresh, WouldDeny,
    acks_path, snapshots_path,
};
use tollgate_policy::{Problems, load};

use crate::config::{CaSource, ControllerTls, ManagedConfig, Unselected};
use crate::metrics::{Metrics, ReloadResult, SnapshotRejection, unix_now};
use crate::rules::cluster::VmLabels;
use crate::rules::store::RuleStore;

/// Reconnect delays: from the first to the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Follows the controller.
pub struct Follower {
    /// Settings.
    config: ManagedConfig,
    /// Where snapshots go into force.
    store: Arc<RuleStore>,
    /// Metrics.
    metrics: Metrics,
    /// Reconnect when the stream is silent this long (heartbeats come every
    /// 10 s by default).
    silence_timeout: Duration,
    /// Where the controller's in-flight clone counts go.
    in_flight: Arc<MemoryInFlight>,
    /// Where the controller's VM labels go.
    cluster: Arc<VmLabels>,
    /// Where the keys of rules' own notification webhooks go.
    notify_keys: Arc<crate::approvals::notify::NotifyKeys>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    acked: Option<String>,
    /// The would-be denials the controller last accepted with an ack.
    reported: Vec<WouldDeny>,
    /// The counts of the last whole state on this stream, which a
    /// `state-fresh` event vouches for again.
    last_clones: Option<CloneCounts>,
}

/// Why a follower cannot be set up; said so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The CA file cannot be read.
    #[error("cannot read --controller-ca-file {path}: {source}")]
    ReadCa {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA is not usable PEM.
    #[error("the controller's CA ({what}) {problem}")]
    BadCa {
        /// Where it came from.
        what: String,
        /// What is wrong with it.
        problem: crate::tls::BadRoots,
    },
    /// rustls refused the configuration.
    #[error("configuring TLS to the controller: {0}")]
    Tls(#[from] rustls::Error),
    /// An `http://` controller URL without `--controller-insecure`, or the
    /// other way round.
    #[error(
        "--controller {url}: the rules a sidecar enforces come from whoever answers there, so the controller must be reached over https:// and verified against its CA (--controller-ca-file, or TOLLGATE_CONTROLLER_CA_PEM); plain http:// needs --controller-insecure, for local tests only"
    )]
    Scheme {
        /// The URL given.
        url: Uri,
    },
}

/// One snapshot refused, and why (for the log line and the metric).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the snapshot is for pod {theirs}, this is {ours}")]
    OtherPod { theirs: String, ours: String },
    #[error("{0}")]
    Invalid(Problems),
}

/// Why one connection to the controller (or one ack) ended; logged, and
/// the sidecar retries with the rules in force.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("cannot read the token file {path}: {source}")]
    ReadToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    EmptyToken(std::path::PathBuf),
    #[error("bad controller URL {base}: {source}")]
    BadUrl {
        base: String,
        source: http::uri::InvalidUri,
    },
    #[error(transparent)]
    Request(#[from] http::Error),
    #[error("the controller did not answer within 10 s")]
    NoAnswer,
    #[error("cannot reach the controller at {controller}: {source}")]
    Unreachable {
        controller: Uri,
        source: Box<hyper_util::client::legacy::Error>,
    },
    #[error("the controller answered {status}: {}", .body.trim())]
    Status { status: StatusCode, body: String },
    #[error("the controller was silent for {0:?}")]
    Silent(Duration),
    #[error("the stream broke: {0}")]
    Broken(hyper::Error),
    #[error(transparent)]
    Sse(#[from] sse::SseError),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error("timed out")]
    AckTimeout,
    #[error(transparent)]
    AckSend(Box<hyper_util::client::legacy::Error>),
    #[error("the controller answered {0}")]
    AckStatus(StatusCode),
}

impl Refusal {
    fn reason(&self) -> SnapshotRejection {
        match self {
            Refusal::OtherPod { .. } => SnapshotRejection::OtherPod,
            Refusal::Invalid(_) => SnapshotRejection::Invalid,
        }
    }
}

/// The HTTP client for the controller: TLS verified against exactly the
/// configured CA, or plain HTTP when explicitly insecure.
fn controller_client(
    config: &ManagedConfig,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, FollowerError> {
    let https = config.controller.scheme_str() == Some("https");
    let (pem, what) = match (&config.controller_tls, https) {
        (ControllerTls::Verify(CaSource::File(path)), true) => (
            std::fs::read(path).map_err(|source| FollowerError::ReadCa {
                path: path.clone(),
                source,
            })?,
            format!("--controller-ca-file {}", path.display()),
        ),
        (ControllerTls::Verify(CaSource::Pem(pem)), true) => (
            pem.clone().into_bytes(),
            "TOLLGATE_CONTROLLER_CA_PEM".to_owned(),
        ),
        (ControllerTls::Insecure, false) => (Vec::new(), String::new()),
        _ => {
            return Err(FollowerError::Scheme {
                url: config.controller.clone(),
            });
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = if https {
        let roots =
            crate::tls::roots(&pem).map_err(|problem| FollowerError::BadCa { what, problem })?;
        builder
            .with_tls_config(crate::tls::client_config(roots)?)
            .https_only()
            .enable_http1()
            .wrap_connector(connector)
    } else {
        // Nothing is verified here; the config above allowed it explicitly.
        builder
            .with_tls_config(crate::tls::client_config(rustls::RootCertStore::empty())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector)
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

impl Follower {
    /// A follower for `config`; refuses a plain `http://` controller
    /// unless `config` says insecure, and a CA that is not usable PEM.
    pub fn new(
        config: ManagedConfig,
        store: Arc<RuleStore>,
        metrics: Metrics,
        in_flight: Arc<MemoryInFlight>,
        cluster: Arc<VmLabels>,
    ) -> Result<Self, FollowerError> {
        let client = controller_client(&config)?;
        Ok(Follower {
            config,
            store,
            metrics,
            silence_timeout: Duration::from_secs(35),
            in_flight,
            cluster,
            notify_keys: Default::default(),
            client,
            acked: None,
            reported: Vec::new(),
            last_clones: None,
        })
    }

    /// Hands the keys of rules' own notification webhooks to `keys`.
    pub fn with_notify_keys(self, keys: Arc<crate::approvals::notify::NotifyKeys>) -> Self {
        Follower {
            notify_keys: keys,
            ..self
        }
    }

    /// Puts the snapshot kept on disk in force, if there is one for this pod.
    pub fn restore(&self) -> Option<String> {
        let path = self.config.snapshot_file.as_ref()?;
        let text = std::fs::read(path).ok()?;
        let snapshot: Snapshot = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable snapshot file");
                return None;
            }
        };
        match self.apply(&snapshot) {
            Ok(()) => {
                tracing::info!(path = %path.display(), version = %snapshot.version, "enforcing the snapshot kept on disk until the controller answers");
                Some(snapshot.version)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring the snapshot file");
                None
            }
        }
    }

    /// Follows the controller until `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.changed() => return,
                o = self.follow_once() => o,
            };
            self.metrics.controller_lost();
            match outcome {
                Ok(true) => backoff = BACKOFF_MIN,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "lost the controller; enforcing the last good rules")
                }
            }
            let pause = jitter(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One connection: true if it delivered at least one snapshot.
    async fn follow_once(&mut self) -> Result<bool, Lost> {
        // A re-observation vouches for what its own stream sent.
        self.last_clones = None;
        let token = self.token()?;
        let path = snapshots_path(&self.config.namespace, &self.config.pod);
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri(&path)?)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "text/event-stream")
            .header(STREAM_FEATURES_HEADER, FEATURE_STATE_FRESH)
            .body(Full::new(Bytes::new()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| Lost::NoAnswer)?
            .map_err(|source| Lost::Unreachable {
                controller: self.config.controller.clone(),
                source: Box::new(source),
            })?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let text = tokio::time::timeout(Duration::from_secs(5), body.collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
                .unwrap_or_default();
            return Err(Lost::Status { status, body: text });
        }
        tracing::info!(controller = %self.config.controller, "connected to the controller");
        self.metrics.controller_connected();
        self.contact();
        let mut parser = sse::Parser::new();
        let mut delivered = false;
        loop {
            let frame = tokio::time::timeout(self.silence_timeout, body.frame())
                .await
                .map_err(|_| Lost::Silent(self.silence_timeout))?;
            let Some(frame) = frame else {
                return Ok(delivered);
            };
            let frame = frame.map_err(Lost::Broken)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for event in parser.push(&data)? {
                self.contact();
                match event.event.as_deref() {
                    Some(SNAPSHOT_EVENT) => {
                        delivered = true;
                        self.on_snapshot(&event.data).await;
                    }
                    Some(STATE_EVENT) => self.on_state(&event.data),
                    Some(STATE_FRESH_EVENT) => self.on_fresh(&event.data),
                    Some(HEARTBEAT_EVENT) => {
                        // Re-send an ack that did not get through, or one
                        // whose would-be denials changed.
                        let current = serde_json::from_str::<Heartbeat>(&event.data)
                            .ok()
                            .map(|h| h.version);
                        let tally = self.metrics.would_deny().summary(unix_now());
                        if let Some(version) = current
                            .filter(|v| self.acked.as_ref() != Some(v) || self.reported != tally)
                            && self
                                .store
                                .current()
                                .is_some_and(|r| r.set.version() == version)
                        {
                            self.ack(&version).await;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    async fn on_snapshot(&mut self, data: &str) {
        let snapshot: Snapshot = match serde_json::from_str(data) {
            Ok(s) => s,
            Err(e) => {
                self.metrics
                    .snapshot_rejected(SnapshotRejection::Unreadable);
                tracing::error!(error = %e, "the controller sent a snapshot this sidecar cannot read; keeping the current rules");
                return;
            }
        };
        if let Err(e) = self.apply(&snapshot) {
            self.metrics.snapshot_rejected(e.reason());
            match e {
                Refusal::OtherPod { .. } => {
                    tracing::error!(version = %snapshot.version, error = %e, "refusing a snapshot meant for another pod; keeping the current rules")
                }
                Refusal::Invalid(_) => {
                    tracing::error!(version = %snapshot.version, error = %e, "the controller's snapshot does not compile in this sidecar (version skew?); keeping the current rules")
                }
            }
            return;
        }
        tracing::info!(version = %snapshot.version, policies = snapshot.policies.len(), "rules from the controller in force");
        if snapshot.policies.iter().any(|p| !p.notify_keys.is_empty()) {
            // Keys stay in memory: the copy on disk goes without them (a
            // restarted sidecar signs again once the controller answers).
            let mut bare = snapshot.clone();
            for p in &mut bare.policies {
                p.notify_keys.clear();
            }
            self.persist(&serde_json::to_string(&bare).unwrap_or_default());
        } else {
            self.persist(data);
        }
        self.ack(&snapshot.version).await;
    }

    fn on_state(&mut self, data: &str) {
        let Some(state) = read_state::<ClusterReport>(data) else {
            return;
        };
        // The running set is kept by the in-flight store; a re-observation
        // only vouches for it again.
        self.in_flight
            .running_vms_are(state.running_vms.iter().cloned());
        self.observe(&state.freshness(), &state.clones);
        self.last_clones = Some(state.clones.clone());
        self.cluster.set_report(state);
    }

    /// The last whole state, observed again unchanged.
    fn on_fresh(&mut self, data: &str) {
        let Some(fresh) = read_state::<StateFresh>(data) else {
            return;
        };
        // The controller sends it only after a whole state on this stream.
        let Some(clones) = self.last_clones.take() else {
            tracing::warn!("ignoring a state re-observation before any state");
            return;
        };
        self.observe(&fresh, &clones);
        self.last_clones = Some(clones);
        self.cluster.set_freshness(fresh.vmis_observed);
    }

    /// Puts the counts, and the running VMs the store holds, observed as
    /// `fresh` says into the in-flight store.
    fn observe(&self, fresh: &StateFresh, clones: &CloneCounts) {
        let observed = fresh
            .observed_at
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .and_then(|t| u64::try_from(t.as_millisecond()).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .unwrap_or_else(SystemTime::now);
        // Each count is vouched for by its own watch: a current clone watch
        // says nothing about running VMs, nor a VMI watch about clones.
        self.in_flight.set_observed(
            clones.clone(),
            observed,
            Covers {
                clones: fresh.clones_observed,
                running: fresh.vmis_observed,
            },
        );
        if fresh.vmis_observed {
            self.in_flight.observe_running_vms(observed);
        }
    }

    /// Compiles and puts a snapshot in force.
    fn apply(&self, snapshot: &Snapshot) -> Result<(), Refusal> {
        if snapshot.namespace != self.config.namespace || snapshot.pod != self.config.pod {
            return Err(Refusal::OtherPod {
                theirs: format!("{}/{}", snapshot.namespace, snapshot.pod),
                ours: format!("{}/{}", self.config.namespace, self.config.pod),
            });
        }
        let set = load::compile_set(&snapshot.loaded())
            .map_err(|p| Refusal::Invalid(Problems(p)))?
            .with_version(snapshot.version.clone());
        let rules = set.policies().iter().map(|p| p.rules().len()).sum();
        self.notify_keys.replace(snapshot);
        if self
            .store
            .replace_with(set, self.config.unselected == Unselected::Deny)
        {
            self.metrics.set_policy(&snapshot.version, rules);
            self.metrics.reloaded(ReloadResult::Success);
        }
        Ok(())
    }

    async fn ack(&mut self, version: &str) {
        let would_deny = self.metrics.would_deny().summary(unix_now());
        let result = async {
            let token = self.token()?;
            let body = serde_json::to_vec(&Ack {
                version: version.to_owned(),
                would_deny: would_deny.clone(),
            })?;
            let request = Request::builder()
                .method(Method::POST)
                .uri(self.uri(&acks_path(&self.config.namespace, &self.config.pod))?)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let response =
                tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
                    .await
                    .map_err(|_| Lost::AckTimeout)?
                    .map_err(|e| Lost::AckSend(Box::new(e)))?;
            match response.status() {
                StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
                other => Err(Lost::AckStatus(other)),
            }
        }
        .await;
        match result {
            Ok(()) => {
                self.acked = Some(version.to_owned());
                self.reported = would_deny;
            }
            Err(e) => {
                tracing::warn!(%version, error = %e, "acknowledging the rules failed; retrying with the next heartbeat")
            }
        }
    }

    /// Keeps the snapshot for a restart: written aside, then renamed, so a
    /// crash never leaves half a file.
    fn persist(&self, data: &str) {
        let Some(path) = &self.config.snapshot_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the snapshot on disk; a restart will wait for the controller");
        }
    }

    fn token(&self) -> Result<String, Lost> {
        let token =
            std::fs::read_to_string(&self.config.token_file).map_err(|source| Lost::ReadToken {
                path: self.config.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Lost::EmptyToken(self.config.token_file.clone()));
        }
        Ok(token.to_owned())
    }

    fn uri(&self, path: &str) -> Result<Uri, Lost> {
        let base = self.config.controller.to_string();
        format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|source| Lost::BadUrl { base, source })
    }

    fn contact(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.metrics.controller_heard(now);
    }
}

/// ±25 % so a restarted controller is not hit by every sidecar at once.
/// A cluster state event's data, or `None` (logged) if it cannot be read:
/// the sidecar then keeps what it knew, which grows stale and fails closed.
fn read_state<T: serde::de::DeserializeOwned>(data: &str) -> Option<T> {
    serde_json::from_str(data)
        .inspect_err(
            |e| tracing::warn!(error = %e, "ignoring cluster state this sidecar cannot read"),
        )
        .ok()
}

fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + (f64::from(nanos % 1000) / 1000.0) * 0.5;
    d.mul_f64(factor)
}
