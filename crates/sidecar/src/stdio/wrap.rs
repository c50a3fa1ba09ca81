//! `tollgate wrap`: tollgate between a desktop agent and a stdio MCP
//! server it starts itself.
//!
//! ```text
//! agent ──stdin──► tollgate ──stdin──► server (child process)
//! agent ◄─stdout── tollgate ◄─stdout── server
//!                           ◄─stderr── (passed through to tollgate's stderr)
//! ```
//!
//! Each line from the agent is read with the same strict parser, planned by
//! the same [`plan_message`](crate::transport::plan) and decided by the
//! same [gate](crate::gate) as a POST to the HTTP proxy; what goes on to the
//! server is tollgate's re-serialisation of what was judged. `tools/list`
//! responses are filtered on their way back. tollgate's own logs go to
//! stderr: stdout belongs to the protocol.
//!
//! Nothing waits forever: a request the server does not answer within the
//! response timeout, or that was pending when the server died, gets a
//! JSON-RPC error; a line from the server that is not JSON-RPC is not
//! passed on, and the agent gets an error (id `null`) saying so. The
//! server's exit ends tollgate with the server's exit code; the end of the
//! agent's input closes the server's; SIGTERM, SIGINT, SIGHUP and SIGQUIT
//! are forwarded to the server's process group.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use tollgate_mcp::json::{StrictJsonError, parse_strict};
use tollgate_mcp::jsonrpc::{self, INVALID_REQUEST, PARSE_ERROR, UPSTREAM_UNAVAILABLE};
use tollgate_mcp::stdio::Line;
use tollgate_mcp::tools;
use tollgate_runtime::admin::Readiness;

use crate::approvals::metrics::ApprovalMetrics;
use crate::approvals::{Approvals, admin as approvals_admin};
use crate::audit::AuditConfig;
use crate::config::SharedStoreConfig;
use crate::gate::redis::{SharedStore, StoreConfigError};
use crate::gate::{Caller, Gate, GateParts};
use crate::metrics::{McpMethod, Metrics, Rejection, UpstreamFailure};
use crate::rules::files as reload;
use crate::rules::store::RuleStore;
use crate::stdio::child::{self, Child, FromChild, SpawnError};
use crate::stdio::pending::Pending;
use crate::stdio::{request_id, unavailable};
use crate::transport::discover::ToolPages;
use crate::transport::lists::rewrite_lists;
use crate::transport::plan::{Step, plan_message};

/// Ids of the requests tollgate sends the server itself (its tool list):
/// agents may not use them.
const OWN_PREFIX: &str = "tollgate-discovery-";

/// Everything `tollgate wrap` needs.
#[derive(Clone, Debug)]
pub struct WrapConfig {
    /// McpToolPolicy files or directories, reloaded on change.
    pub policies: Vec<PathBuf>,
    /// The server: program and arguments.
    pub command: Vec<OsString>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// The longest line accepted from the agent (as `--max-body-bytes`).
    pub max_line_bytes: usize,
    /// The longest line read from the server.
    pub max_server_line_bytes: usize,
    /// How long the server may take to answer a request.
    pub response_timeout: Duration,
    /// How long the server gets to exit after its input closes, and again
    /// after SIGTERM.
    pub stop_grace: Duration,
    /// How often policy files are re-read without a change event.
    pub reload_interval: Duration,
    /// Redis for `scope: Shared` limits, if any.
    pub shared_store: Option<SharedStoreConfig>,
}

impl WrapConfig {
    /// Defaults for the given policies and command.
    pub fn new(policies: Vec<PathBuf>, command: Vec<OsString>) -> Self {
        WrapConfig {
            policies,
            command,
            admin_listen: None,
            max_line_bytes: 4 << 20,
            max_server_line_bytes: 32 << 20,
            response_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(5),
            reload_interval: Duration::from_secs(10),
            shared_store: None,
        }
    }
}

/// Why `tollgate wrap` could not run.
#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    /// The metrics could not be registered (a bug, not a setting).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The policy files do not load.
    #[error("the policy files are invalid:\n{0}")]
    Policies(#[source] tollgate_policy::Problems),
    /// The shared store (Redis) settings are unusable.
    #[error(transparent)]
    SharedStore(#[from] StoreConfigError),
    /// The server could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The admin listener could not be opened.
    #[error(transparent)]
    Bind(#[from] tollgate_runtime::serve::BindError),
    /// TLS for rules' notification webhooks could not be set up.
    #[error("setting up TLS for approval webhooks: {0}")]
    Notifier(#[source] rustls::Error),
}

/// Why a request of tollgate's own (its `tools/list`) got no result;
/// logged, and asked again before the next call.
#[derive(Debug, thiserror::Error)]
enum OwnRequestError {
    /// The server's stdin is closed.
    #[error(transparent)]
    Gone(#[from] child::Gone),
    /// The server ended before answering.
    #[error("the MCP server ended")]
    Ended,
    /// A JSON-RPC error instead of a result.
    #[error("the server refused tools/list: {0}")]
    Refused(Value),
}

/// What tollgate remembers of a request it forwarded.
#[derive(Debug)]
struct Expect {
    /// A `tools/list`: filter its result.
    list: bool,
    method: McpMethod,
    sent: Instant,
}

/// The state every task of one wrap shares.
struct Wrap {
    gate: Gate,
    metrics: Metrics,
    child: Child,
    out: mpsc::Sender<Vec<u8>>,
    pending: Mutex<Pending<Expect>>,
    /// tollgate's own requests to the server, by id.
    own: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next_own: AtomicU64,
    /// When the catalogue was last asked for.
    discovery: tokio::sync::Mutex<Option<Instant>>,
    response_timeout: Duration,
}

/// Runs the server behind the gate until it exits; returns its exit code.
pub async fn wrap(config: WrapConfig, audit: AuditConfig) -> Result<i32, WrapError> {
    let metrics = Metrics::new()?;
    let store = Arc::new(RuleStore::new());
    if let reload::Outcome::Refused(problems) = reload::reload(&config.policies, &store, &metrics) {
        return Err(WrapError::Policies(problems));
    }
    let shared = match &config.shared_store {
        Some(s) => Some(SharedStore::connect(s, metrics.clone())?),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(addr) => Some(tollgate_runtime::serve::bind(addr, "--admin-listen").await?),
        None => None,
    };
    let (child, from_child) = child::spawn(&child::Command {
        argv: config.command.clone(),
        max_line_bytes: config.max_server_line_bytes,
    })?;
    let (out, out_rx) = mpsc::channel(1024);
    let writer = write_stdout(out_rx);
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let approval_metrics = ApprovalMetrics::register(metrics.registry())?;
    // Rules' own webhooks (their keys in files); no sidecar-wide one here.
    let notifier = crate::approvals::notify::Notifier::new(
        None,
        Default::default(),
        approval_metrics.notifications(),
    )
    .map_err(WrapError::Notifier)?;
    let approvals = Arc::new(Approvals::new(
        approval_metrics,
        admin_addr.map_or_else(
            || {
                "(no admin listener: start tollgate wrap with --admin-listen 127.0.0.1:PORT)"
                    .to_owned()
            },
            |a| format!("http://{a}"),
        ),
        Some(notifier),
    ));
    // Whoever reaches the routes decides: loopback only.
    let serve_approvals = admin_addr.is_some_and(|a| a.ip().is_loopback());
    let wrap = Arc::new(Wrap {
        gate: Gate::new(GateParts {
            store: store.clone(),
            shared,
            in_flight: Default::default(),
            cluster: Default::default(),
            metrics: metrics.clone(),
            audit,
            fail_open: false,
            approvals: approvals.clone(),
        }),
        metrics: metrics.clone(),
        child,
        out,
        pending: Mutex::new(Pending::default()),
        own: Mutex::new(HashMap::new()),
        next_own: AtomicU64::new(1),
        discovery: tokio::sync::Mutex::new(None),
        response_timeout: config.response_timeout,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    if let Some(listener) = admin {
        let state = wrap.clone();
        tokio::spawn(tollgate_runtime::serve::serve(
            listener,
            move |req| {
                approvals_admin::route_or(state.clone(), approvals.clone(), serve_approvals, req)
            },
            16,
            Duration::from_secs(10),
            shutdown_rx.clone(),
            Duration::from_secs(1),
            |_| {},
        ));
    }
    tokio::spawn(reload::watch_files(
        config.policies.clone(),
        store,
        metrics,
        config.reload_interval,
        shutdown_rx.clone(),
    ));
    tokio::spawn(expire(wrap.clone(), shutdown_rx.clone()));
    tokio::spawn(forward_signals(wrap.clone(), shutdown_rx));
    let (drained, server_done) = oneshot::channel();
    tokio::spawn(read_server(wrap.clone(), from_child, drained));
    tracing::info!(command = ?config.command, "tollgate wrap ready");

    let stdin = read_stdin();
    let exit = tokio::select! {
        () = read_agent(&wrap, stdin, config.max_line_bytes) => {
            tracing::info!("the agent closed its input; stopping the MCP server");
            wrap.child.stop(config.stop_grace).await
        }
        exit = wrap.child.wait() => exit,
    };
    tracing::info!(%exit, "the MCP server ended");
    // What the server wrote before it ended still reaches the agent (a
    // grandchild holding stdout open must not hold tollgate too).
    let _ = tokio::time::timeout(Duration::from_secs(2), server_done).await;
    wrap.fail_all(&format!("the MCP server {exit} before answering"));
    let _ = shutdown.send(true);
    drop(wrap);
    // The writer thread ends when the last sender is gone; it flushes as
    // it goes, so a task still holding one only delays this, never loses
    // a line that was sent.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::task::spawn_blocking(move || writer.join()),
    )
    .await;
    Ok(exit.shell_code())
}

impl Wrap {
    /// Writes one message to the agent.
    async fn emit(&self, value: &Value) {
        let _ = self.out.send(tollgate_mcp::stdio::encode(value)).await;
    }

    /// One line from the agent.
    async fn agent_line(&self, line: Line) {
        let bytes = match line {
            Line::Complete(b) => b,
            Line::TooLong { bytes } => {
                let message = format!(
                    "a message of more than {bytes} bytes is over the limit (--max-body-bytes)"
                );
                return self
                    .refuse(PARSE_ERROR, &message, Rejection::TooLarge)
                    .await;
            }
        };
        let value = match parse_strict(&bytes) {
            Ok(v) => v,
            Err(e) => {
                // The same reasons as the HTTP proxy's, so one dashboard reads both.
                let reason = match e {
                    StrictJsonError::TooManyValues(_) => Rejection::TooComplex,
                    _ => Rejection::Malformed,
                };
                return self.refuse(PARSE_ERROR, &e.to_string(), reason).await;
            }
        };
        let (batch, messages) = match value {
            Value::Array(items) if items.is_empty() => {
                return self
                    .refuse(INVALID_REQUEST, "an empty batch", Rejection::InvalidRequest)
                    .await;
            }
            Value::Array(items) => (true, items),
            other => (false, vec![other]),
        };
        if messages
            .iter()
            .any(|m| m.get("method").and_then(Value::as_str) == Some(tools::CALL))
        {
            self.ensure_catalog().await;
        }
        let mut forward = Vec::new();
        let mut answers = Vec::new();
        let caller = Caller::default();
        for message in messages {
            let id = message.get("id").cloned();
            let method = message.get("method").and_then(Value::as_str);
            let request = id.is_some() && method.is_some();
            let label = match method {
                Some(tools::CALL) => McpMethod::ToolsCall,
                Some(tools::LIST) => McpMethod::ToolsList,
                Some("initialize") => McpMethod::Initialize,
                Some(_) => McpMethod::Other,
                None => McpMethod::Response,
            };
            if request
                && id
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with(OWN_PREFIX))
            {
                let text = format!("request ids starting with {OWN_PREFIX:?} are tollgate's own");
                self.gate
                    .malformed(&text, id.as_ref().unwrap_or(&Value::Null));
                answers.push(jsonrpc::error_response(
                    id.as_ref().unwrap_or(&Value::Null),
                    INVALID_REQUEST,
                    &text,
                    None,
                ));
                continue;
            }
            let step =
                plan_message(&self.gate, &self.metrics, message, caller, |_, _| Ok(())).await;
            let (message, list) = match step {
                Ok(Step::Forward(m) | Step::ForwardInitialize(m)) => (m, false),
                Ok(Step::ForwardList(m, _)) => (m, true),
                Ok(Step::Answer { response, .. }) => {
                    answers.push(response);
                    continue;
                }
                Err(e) => {
                    answers.push(e.to_response());
                    continue;
                }
            };
            if request && let Some(id) = &id {
                self.lock_pending().insert(
                    id,
                    Instant::now() + self.response_timeout,
                    Expect {
                        list,
                        method: label,
                        sent: Instant::now(),
                    },
                );
            }
            forward.push(message);
        }
        if !forward.is_empty() {
            let message = if batch {
                Value::Array(forward)
            } else {
                forward.pop().unwrap_or_default()
            };
            if self.child.send(&message).await.is_err() {
                // Its answers will never come: fail what was just sent.
                let ids: Vec<Value> = match &message {
                    Value::Array(items) => items.iter().filter_map(request_id).collect(),
                    single => request_id(single).into_iter().collect(),
                };
                for id in ids {
                    if self.lock_pending().take(&id).is_some() {
                        answers.push(unavailable(&id, "the MCP server is not running"));
                    }
                }
            }
        }
        match (batch, answers.len()) {
            (_, 0) => {}
            (true, _) => self.emit(&Value::Array(answers)).await,
            (false, _) => {
                for a in &answers {
                    self.emit(a).await;
                }
            }
        }
    }

    /// Refuses a line that is not one readable message.
    async fn refuse(&self, code: i64, message: &str, reason: Rejection) {
        self.metrics.reject(reason);
        self.gate.malformed(message, &Value::Null);
        self.emit(&jsonrpc::error_response(&Value::Null, code, message, None))
            .await;
    }

    /// One message (or batch) from the server.
    async fn server_message(&self, value: Value) {
        let (batch, items) = match value {
            Value::Array(items) => (true, items),
            single => (false, vec![single]),
        };
        let mut keep = Vec::with_capacity(items.len());
        for mut item in items {
            let response = item.get("method").is_none();
            if let (true, Some(id)) = (response, item.get("id").cloned())
                && !id.is_null()
            {
                let own = self
                    .own
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id.to_string());
                if let Some(reply) = own {
                    let _ = reply.send(item);
                    continue;
                }
                let Some(expect) = self.lock_pending().take(&id) else {
                    // Answered already (timed out), or never asked.
                    tracing::debug!(%id, "dropped a response no request waits for");
                    continue;
                };
                self.metrics
                    .upstream_answered(expect.method, expect.sent.elapsed().as_secs_f64());
                if expect.list {
                    rewrite_lists(&self.gate, &self.metrics, &mut item, &mut |_| Some(None));
                }
            }
            keep.push(item);
        }
        match (batch, keep.len()) {
            (_, 0) => {}
            (true, _) => self.emit(&Value::Array(keep)).await,
            (false, _) => {
                for item in &keep {
                    self.emit(item).await;
                }
            }
        }
    }

    /// Learns the server's tools from the server, before a call whose
    /// rules need them (at most once a second while it fails).
    async fn ensure_catalog(&self) {
        if self.gate.catalog().loaded() {
            return;
        }
        let needed = self
            .gate
            .rules()
            .current()
            .is_some_and(|r| r.set.needs_any_catalog());
        if !needed {
            return;
        }
        let mut last = self.discovery.lock().await;
        if self.gate.catalog().loaded()
            || last.is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(Duration::from_secs(5), self.list_tools()).await {
            Ok(Ok(tools)) => {
                self.gate.catalog().learn(&tools);
                tracing::info!(tools = tools.len(), "learned the MCP server's tools");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot list the MCP server's tools yet"),
            Err(_) => tracing::warn!("the MCP server did not list its tools within 5s"),
        }
    }

    /// The server's tools, every page, asked by tollgate itself.
    async fn list_tools(&self) -> Result<Vec<Value>, OwnRequestError> {
        let mut pages = ToolPages::default();
        while let Some((_, params)) = pages.next() {
            let response = self.ask(tools::LIST, params).await?;
            let result = response
                .get("result")
                .ok_or_else(|| OwnRequestError::Refused(response["error"].clone()))?;
            pages.take(result);
        }
        Ok(pages.tools())
    }

    /// Sends a request of tollgate's own and waits for its response.
    async fn ask(&self, method: &str, params: Option<Value>) -> Result<Value, OwnRequestError> {
        let id = json!(format!(
            "{OWN_PREFIX}{}",
            self.next_own.fetch_add(1, Ordering::Relaxed)
        ));
        let (tx, rx) = oneshot::channel();
        let key = id.to_string();
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), tx);
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            request["params"] = p;
        }
        let sent = self.child.send(&request).await;
        let answer = match sent {
            Ok(()) => rx.await.map_err(|_| OwnRequestError::Ended),
            Err(e) => Err(e.into()),
        };
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        answer
    }

    /// Fails every waiting request with `why`.
    fn fail_all(&self, why: &str) {
        let waiting = self.lock_pending().drain();
        for (id, _) in waiting {
            self.metrics.upstream_failed(UpstreamFailure::Exited);
            let _ = self
                .out
                .try_send(tollgate_mcp::stdio::encode(&unavailable(&id, why)));
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending<Expect>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl tollgate_runtime::admin::AdminState for Wrap {
    fn metrics(&self) -> Vec<u8> {
        self.metrics.encode()
    }

    fn readiness(&self) -> Readiness {
        if let Some(exit) = self.child.exited() {
            return Readiness::NotReady(format!("the MCP server {exit}"));
        }
        match self.gate.rules().current() {
            Some(rules) => Readiness::Ready(format!("rules {}", rules.set.version())),
            None => Readiness::NotReady("no rules loaded".into()),
        }
    }
}

/// Reads the agent's lines and handles them in order, until its input ends.
async fn read_agent(wrap: &Wrap, mut stdin: mpsc::Receiver<Vec<u8>>, max: usize) {
    let mut lines = tollgate_mcp::stdio::Lines::new(max);
    while let Some(chunk) = stdin.recv().await {
        for line in lines.push(&chunk) {
            wrap.agent_line(line).await;
        }
    }
    if let Some(line) = lines.finish() {
        wrap.agent_line(line).await;
    }
}

/// Passes on what the server writes, until its stdout ends.
async fn read_server(
    wrap: Arc<Wrap>,
    mut from_child: mpsc::Receiver<FromChild>,
    drained: oneshot::Sender<()>,
) {
    while let Some(m) = from_child.recv().await {
        match m {
            FromChild::Message(v) => wrap.server_message(v).await,
            FromChild::Unreadable(detail) => {
                wrap.metrics.upstream_failed(UpstreamFailure::Unreadable);
                tracing::warn!(
                    detail,
                    "the MCP server wrote a line that is not JSON-RPC; not passed on"
                );
                wrap.emit(&jsonrpc::error_response(
                    &Value::Null,
                    UPSTREAM_UNAVAILABLE,
                    &format!("tollgate: the MCP server wrote {detail}; it was not passed on"),
                    None,
                ))
                .await;
            }
            FromChild::TooLong(bytes) => {
                wrap.metrics.upstream_failed(UpstreamFailure::Unreadable);
                tracing::warn!(
                    bytes,
                    "the MCP server wrote a line over the limit; not passed on"
                );
                wrap.fail_all(&format!(
                    "the MCP server wrote a message of more than {bytes} bytes, over the limit; its answer is lost"
                ));
            }
            FromChild::Closed => break,
        }
    }
    let _ = drained.send(());
}

/// Fails requests the server has not answered in time, once a second.
async fn expire(wrap: Arc<Wrap>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let late = wrap.lock_pending().expired(Instant::now());
        for (id, _) in late {
            wrap.metrics.upstream_failed(UpstreamFailure::Timeout);
            let why = format!(
                "the MCP server did not answer within {:?}",
                wrap.response_timeout
            );
            wrap.emit(&unavailable(&id, &why)).await;
        }
    }
}

/// Forwards the signals a desktop client or a terminal sends tollgate to the
/// server's process group (which a terminal's Ctrl-C does not reach).
async fn forward_signals(wrap: Arc<Wrap>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
        ];
        let (tx, mut rx) = mpsc::channel(8);
        for (kind, number) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(number).await.is_err() {
                        return;
                    }
                }
            });
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(number) = rx.recv() => {
                    tracing::info!(signal = number, "forwarding a signal to the MCP server");
                    wrap.child.signal(number);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (wrap, shutdown.changed().await);
    }
}

/// Reads stdin on a thread of its own (a blocking read cannot be
/// cancelled; this one never holds up the runtime's shutdown).
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Writes lines to stdout on a thread of its own, flushing when nothing
/// more is queued.
fn write_stdout(mut rx: mpsc::Receiver<Vec<u8>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = rx.blocking_recv() {
            if stdout.write_all(&line).is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if stdout.write_all(&more).is_err() {
                    return;
                }
            }
            if stdout.flush().is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_answers_keep_the_request_id() {
        let v = unavailable(&json!(7), "gone");
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], UPSTREAM_UNAVAILABLE);
        assert_eq!(request_id(&json!({"id": 1, "method": "m"})), Some(json!(1)));
        assert_eq!(request_id(&json!({"id": 1, "result": {}})), None);
    }
}
