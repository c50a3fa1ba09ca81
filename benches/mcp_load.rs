//! A load generator that speaks MCP Streamable HTTP: one session per
//! concurrent worker (`initialize`, `notifications/initialized`), then
//! `tools/call` back to back on one HTTP/1.1 keep-alive connection, for a
//! fixed time or a fixed number of calls. It starts nothing itself.
//!
//! ```sh
//! cargo bench --bench mcp_load -- --url http://127.0.0.1:8080/mcp \
//!     --tool echo --args '{"text":"hi"}' --concurrency 64 --duration 10 --warmup 2
//! cargo bench --bench mcp_load -- --help
//! ```
//!
//! Prints exactly one JSON line on stdout:
//! `{"calls":N,"ok":N,"errors":N,"calls_per_s":X,"p50_us":..,"p90_us":..,"p99_us":..,"max_us":..,...}`.
//! Latency is measured per call, from just before the request is written to
//! when the whole response body has been read and parsed; every sample is
//! kept (exact percentiles, no histogram rounding).
//!
//! A call is `ok` when its response carries the JSON-RPC `result` for its id
//! and `isError` is not true. Otherwise it counts as one of `tool_errors`
//! (`isError: true`), `rpc_errors` (a JSON-RPC `error`), `http_errors` (a
//! non-2xx status, or a 2xx without the response) or `transport_errors`
//! (connection failed, timeout); `errors` is their sum. Responses may be
//! `application/json` or SSE (`text/event-stream`; the event whose data has
//! the call's id is the response, others are skipped).

#[path = "common/cargo_bench.rs"]
mod cargo_bench;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// MCP Streamable HTTP load generator: initialize once per session, then
/// tools/call repeatedly; prints one JSON line of results.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "mcp_load",
    after_help = "Examples:\n  \
                  cargo bench --bench mcp_load -- --url http://127.0.0.1:8080/mcp -c 64 -d 10\n  \
                  cargo bench --bench mcp_load -- --url http://127.0.0.1:8080/mcp --tool vm_clone \\\n      \
                  --args '{\"namespace\":\"vms\",\"name\":\"golden\",\"targetName\":\"c1\"}' -n 100\n\n\
                  The server is not started here: start it (and any proxy) first, e.g.\n  \
                  cargo bench --bench fast_upstream -- --port 0, or scripts/bench/run.sh for the whole comparison.\n\n\
                  Every flag can also be given as an environment variable (shown in brackets).\n\
                  Output: one JSON line on stdout (calls, ok, errors by kind, calls_per_s,\n\
                  p50/p90/p99/p999/max/mean latency in µs, the generator's own CPU µs per call).\n\
                  Diagnostics go to stderr. Exit status 0 when every measured call was ok,\n\
                  1 when any failed, 2 when no session could be opened."
)]
struct Args {
    /// The MCP endpoint (http:// only).
    #[arg(
        long,
        env = "MCP_LOAD_URL",
        default_value = "http://127.0.0.1:8080/mcp"
    )]
    url: Uri,
    /// Tool to call.
    #[arg(long, env = "MCP_LOAD_TOOL", default_value = "echo")]
    tool: String,
    /// Tool arguments as a JSON object.
    #[arg(
        long = "args",
        env = "MCP_LOAD_ARGS",
        default_value = r#"{"text":"hello"}"#
    )]
    arguments: String,
    /// Concurrent workers; each opens its own connection and MCP session.
    #[arg(short, long, env = "MCP_LOAD_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure (after the warm-up); ignored with --calls.
    #[arg(short, long, env = "MCP_LOAD_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Measure exactly this many calls (shared by all workers) instead of a duration.
    #[arg(short = 'n', long, env = "MCP_LOAD_CALLS")]
    calls: Option<u64>,
    /// Seconds of unmeasured calls before measuring.
    #[arg(short, long, env = "MCP_LOAD_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Generator runtime threads (1 = single-threaded runtime, the lightest
    /// load on a small machine).
    #[arg(long, env = "MCP_LOAD_THREADS", default_value_t = 1)]
    threads: usize,
    /// protocolVersion offered in initialize, then sent as MCP-Protocol-Version.
    #[arg(long, env = "MCP_LOAD_PROTOCOL_VERSION", default_value = "2025-11-25")]
    protocol_version: String,
    /// Per-call timeout in milliseconds (a timed-out call is a transport error
    /// and its connection is replaced).
    #[arg(long, env = "MCP_LOAD_TIMEOUT_MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Extra request header `Name: value` (repeatable), sent on every request.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Free text copied into the output line as "label".
    #[arg(long, env = "MCP_LOAD_LABEL", default_value = "")]
    label: String,
    /// Pause between calls of one worker, in microseconds (0 = back to back).
    #[arg(long, env = "MCP_LOAD_PAUSE_US", default_value_t = 0)]
    pause_us: u64,
    /// Also measure another process's CPU over the measured window: `NAME=PID`
    /// (repeatable); the output gets `"cpu_us_per_call":{"NAME":x}` from its
    /// /proc/PID/stat utime+stime (threads included, children not).
    #[arg(long = "watch-pid", value_name = "NAME=PID")]
    watch_pids: Vec<String>,
    /// Print the first tools/call response to stderr (to check what is measured).
    #[arg(long)]
    show_response: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How one call ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Ok,
    ToolError,
    RpcError,
    HttpError,
    TransportError,
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    ok: u64,
    tool_errors: u64,
    rpc_errors: u64,
    http_errors: u64,
    transport_errors: u64,
    reconnects: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome, ns: u64, detail: impl FnOnce() -> String) {
        self.latencies_ns.push(ns);
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::ToolError => self.tool_errors += 1,
            Outcome::RpcError => self.rpc_errors += 1,
            Outcome::HttpError => self.http_errors += 1,
            Outcome::TransportError => self.transport_errors += 1,
        }
        if outcome != Outcome::Ok && self.first_failure.is_none() {
            self.first_failure = Some(detail());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        self.ok += other.ok;
        self.tool_errors += other.tool_errors;
        self.rpc_errors += other.rpc_errors;
        self.http_errors += other.http_errors;
        self.transport_errors += other.transport_errors;
        self.reconnects += other.reconnects;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

/// Shared schedule: when measuring starts and ends, or how many calls remain.
struct Plan {
    measure_from: Instant,
    measure_until: Option<Instant>,
    remaining: Option<AtomicI64>,
    /// Last completion time of a measured call, in ns after `measure_from`.
    last_done_ns: AtomicU64,
}

impl Plan {
    /// Whether a call starting at `now` is measured; `None` = stop.
    fn admit(&self, now: Instant) -> Option<bool> {
        if now < self.measure_from {
            return Some(false);
        }
        if let Some(until) = self.measure_until {
            return (now < until).then_some(true);
        }
        let left = self.remaining.as_ref()?.fetch_sub(1, Ordering::Relaxed);
        (left > 0).then_some(true)
    }
}

struct Target {
    uri: Uri,
    addr: String,
    host: HeaderValue,
    extra: Vec<(header::HeaderName, HeaderValue)>,
}

fn main() {
    if cargo_bench::run_by_cargo_bench_suite::<Args>() {
        eprintln!(
            "mcp_load: not a micro-benchmark; give it flags (cargo bench --bench mcp_load -- --help) \
             or run scripts/bench/run.sh. Nothing to do."
        );
        return;
    }
    let args = Args::parse();
    let target = match target(&args) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("mcp_load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = serde_json::from_str::<Value>(&args.arguments)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            v.is_object()
                .then_some(())
                .ok_or_else(|| "not a JSON object".to_string())
        })
    {
        eprintln!("mcp_load: --args: {e}");
        std::process::exit(2);
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = runtime.block_on(run(args, target));
    std::process::exit(code);
}

fn target(args: &Args) -> Result<Target, String> {
    if args.url.scheme_str() != Some("http") {
        return Err(format!("--url {} must be http://", args.url));
    }
    let authority = args.url.authority().ok_or("--url needs host:port")?;
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    let mut extra = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?} must be 'Name: value'"))?;
        extra.push((
            header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?,
        ));
    }
    for w in &args.watch_pids {
        let ok = w
            .split_once('=')
            .is_some_and(|(name, pid)| !name.is_empty() && pid.parse::<u32>().is_ok());
        if !ok {
            return Err(format!("--watch-pid {w:?} must be NAME=PID"));
        }
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    Ok(Target {
        uri: args.url.clone(),
        addr,
        host,
        extra,
    })
}

async fn run(args: Args, target: Arc<Target>) -> i32 {
    // Open every session first, so the measurement sees only tools/call.
    let mut sessions = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        match Session::open(&args, target.clone()).await {
            Ok(s) => sessions.push(s),
            Err(e) => {
                eprintln!("mcp_load: session {i}: {e}");
                println!(
                    "{}",
                    json!({"label": args.label, "url": args.url.to_string(), "error": format!("session {i}: {e}")})
                );
                return 2;
            }
        }
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let plan = Arc::new(Plan {
        measure_from,
        measure_until: args
            .calls
            .is_none()
            .then(|| measure_from + Duration::from_secs_f64(args.duration.max(0.001))),
        remaining: args.calls.map(|n| AtomicI64::new(n as i64)),
        last_done_ns: AtomicU64::new(0),
    });
    let mut handles = Vec::with_capacity(sessions.len());
    for (i, session) in sessions.into_iter().enumerate() {
        let plan = plan.clone();
        let args = args.clone();
        handles.push(tokio::spawn(async move {
            session
                .drive(&args, &plan, i == 0 && args.show_response)
                .await
        }));
    }
    // CPU of the generator over the measured window only.
    let watched: Vec<(String, u32)> = args
        .watch_pids
        .iter()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(n, p)| Some((n.to_string(), p.parse().ok()?)))
        .collect();
    let (cpu_at_measure, watched_at_measure) = {
        let wait = measure_from.saturating_duration_since(Instant::now());
        tokio::time::sleep(wait).await;
        let w: Vec<u64> = watched
            .iter()
            .map(|(_, pid)| cpu_ticks_of(&format!("/proc/{pid}/stat")))
            .collect();
        (cpu_ticks(), w)
    };
    let mut total = Tally::default();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(e) => eprintln!("mcp_load: worker panicked: {e}"),
        }
    }
    let cpu_after = cpu_ticks();
    let watched_cpu: Vec<(String, u64)> = watched
        .iter()
        .zip(watched_at_measure)
        .map(|((name, pid), before)| {
            (
                name.clone(),
                cpu_ticks_of(&format!("/proc/{pid}/stat")).saturating_sub(before),
            )
        })
        .collect();
    let window_ns = match plan.measure_until {
        Some(until) => until.duration_since(measure_from).as_nanos() as u64,
        None => plan.last_done_ns.load(Ordering::Relaxed).max(1),
    };
    report(
        &args,
        total,
        window_ns,
        cpu_after.saturating_sub(cpu_at_measure),
        &watched_cpu,
    )
}

fn report(
    args: &Args,
    mut t: Tally,
    window_ns: u64,
    cpu_ticks: u64,
    watched: &[(String, u64)],
) -> i32 {
    t.latencies_ns.sort_unstable();
    let n = t.latencies_ns.len() as u64;
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        t.latencies_ns[rank.min(n as usize) - 1] as f64 / 1000.0
    };
    let mean = if n == 0 {
        0.0
    } else {
        t.latencies_ns.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0
    };
    let errors = t.tool_errors + t.rpc_errors + t.http_errors + t.transport_errors;
    let secs = window_ns as f64 / 1e9;
    let cpu_us = cpu_ticks as f64 * 1e6 / clock_ticks_per_sec();
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let per_call = |ticks: u64| {
        if n == 0 {
            0.0
        } else {
            ((ticks as f64 * 1e6 / clock_ticks_per_sec() / n as f64) * 10.0).round() / 10.0
        }
    };
    let watched: serde_json::Map<String, Value> = watched
        .iter()
        .map(|(name, ticks)| (name.clone(), json!(per_call(*ticks))))
        .collect();
    let line = json!({
        "label": args.label,
        "url": args.url.to_string(),
        "tool": args.tool,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "warmup_s": args.warmup,
        "window_s": round(secs * 100.0) / 100.0,
        "calls": n,
        "ok": t.ok,
        "errors": errors,
        "tool_errors": t.tool_errors,
        "rpc_errors": t.rpc_errors,
        "http_errors": t.http_errors,
        "transport_errors": t.transport_errors,
        "reconnects": t.reconnects,
        "calls_per_s": round(n as f64 / secs),
        "p50_us": round(pct(50.0)),
        "p90_us": round(pct(90.0)),
        "p99_us": round(pct(99.0)),
        "p999_us": round(pct(99.9)),
        "max_us": round(t.latencies_ns.last().copied().unwrap_or(0) as f64 / 1000.0),
        "min_us": round(t.latencies_ns.first().copied().unwrap_or(0) as f64 / 1000.0),
        "mean_us": round(mean),
        "gen_cpu_us_per_call": if n == 0 { 0.0 } else { round(cpu_us / n as f64) },
        "cpu_us_per_call": watched,
        "first_failure": t.first_failure,
    });
    println!("{line}");
    if n == 0 || errors > 0 { 1 } else { 0 }
}

/// One MCP session on one keep-alive connection.
struct Session {
    target: Arc<Target>,
    sender: SendRequest<Full<Bytes>>,
    session_id: Option<HeaderValue>,
    protocol_version: HeaderValue,
    reconnects: u64,
}

impl Session {
    async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", target.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn open(args: &Args, target: Arc<Target>) -> Result<Session, String> {
        let sender = Self::connect(&target).await?;
        let mut s = Session {
            target,
            sender,
            session_id: None,
            protocol_version: HeaderValue::from_str(&args.protocol_version)
                .map_err(|e| e.to_string())?,
            reconnects: 0,
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": args.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "tollgate-mcp-load", "version": "0.1.0"},
            },
        });
        let timeout = Duration::from_millis(args.timeout_ms);
        let (status, headers, body) = s
            .exchange(Bytes::from(init.to_string()), false, timeout)
            .await?;
        if !status.is_success() {
            return Err(format!(
                "initialize: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let (outcome, detail) = classify(&headers, &body, 0);
        if outcome != Outcome::Ok {
            return Err(format!("initialize: {detail}"));
        }
        s.session_id = headers.get("mcp-session-id").cloned();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, body) = s
            .exchange(Bytes::from(note.to_string()), true, timeout)
            .await?;
        if !status.is_success() {
            return Err(format!(
                "notifications/initialized: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(s)
    }

    /// Sends one POST and reads the whole response.
    async fn exchange(
        &mut self,
        body: Bytes,
        after_init: bool,
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
        let mut req = Request::post(self.target.uri.clone())
            .header(header::HOST, self.target.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(id) = &self.session_id {
            req = req.header("mcp-session-id", id.clone());
        }
        if after_init || self.session_id.is_some() {
            req = req.header("mcp-protocol-version", self.protocol_version.clone());
        }
        for (k, v) in &self.target.extra {
            req = req.header(k, v.clone());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?
                .to_bytes();
            Ok((parts.status, parts.headers, bytes))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no complete response within {timeout:?}")),
        }
    }

    /// Makes sure the connection can take a request, reconnecting if the
    /// server closed it (keep-alive limits), outside the timed section.
    async fn ready(&mut self) -> Result<(), String> {
        if !self.sender.is_closed() && self.sender.ready().await.is_ok() {
            return Ok(());
        }
        self.sender = Self::connect(&self.target).await?;
        self.reconnects += 1;
        Ok(())
    }

    async fn drive(mut self, args: &Args, plan: &Plan, mut show: bool) -> Tally {
        let mut tally = Tally::default();
        let timeout = Duration::from_millis(args.timeout_ms);
        let mut id: u64 = 0;
        let mut body = String::with_capacity(128 + args.tool.len() + args.arguments.len());
        loop {
            if let Err(e) = self.ready().await {
                // Could not even reconnect: count it (if measured) and pace.
                match plan.admit(Instant::now()) {
                    None => break,
                    Some(true) => tally.add(Outcome::TransportError, 0, || e.clone()),
                    Some(false) => {}
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let started = Instant::now();
            let Some(measured) = plan.admit(started) else {
                break;
            };
            id += 1;
            body.clear();
            let _ = write!(
                body,
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{},"arguments":{}}}}}"#,
                Value::String(args.tool.clone()),
                args.arguments
            );
            let result = self
                .exchange(Bytes::copy_from_slice(body.as_bytes()), true, timeout)
                .await;
            let (outcome, detail) = match &result {
                Ok((status, headers, bytes)) if status.is_success() => classify(headers, bytes, id),
                Ok((status, _, bytes)) => (
                    Outcome::HttpError,
                    format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    ),
                ),
                Err(e) => (Outcome::TransportError, e.clone()),
            };
            let elapsed = started.elapsed();
            if show {
                show = false;
                match &result {
                    Ok((status, headers, bytes)) => eprintln!(
                        "mcp_load: first tools/call: HTTP {status} {:?} {}",
                        headers.get(header::CONTENT_TYPE),
                        String::from_utf8_lossy(bytes)
                    ),
                    Err(e) => eprintln!("mcp_load: first tools/call failed: {e}"),
                }
            }
            if outcome == Outcome::TransportError {
                // The connection state is unknown: replace it.
                if let Ok(s) = Self::connect(&self.target).await {
                    self.sender = s;
                    self.reconnects += 1;
                }
            }
            if measured {
                tally.add(outcome, elapsed.as_nanos() as u64, || detail);
                let done = (started + elapsed)
                    .duration_since(plan.measure_from)
                    .as_nanos() as u64;
                plan.last_done_ns.fetch_max(done, Ordering::Relaxed);
            }
            if args.pause_us > 0 {
                tokio::time::sleep(Duration::from_micros(args.pause_us)).await;
            }
        }
        tally.reconnects = self.reconnects;
        tally
    }
}

/// Finds the JSON-RPC response with `id` in a JSON or SSE body and says how
/// the call went.
fn classify(headers: &http::HeaderMap, body: &[u8], id: u64) -> (Outcome, String) {
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let response = if is_sse {
        sse_messages(body).into_iter().find(|m| matches_id(m, id))
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items.into_iter().find(|m| matches_id(m, id)),
            Ok(v) if matches_id(&v, id) => Some(v),
            Ok(_) => None,
            Err(e) => {
                return (
                    Outcome::HttpError,
                    format!("response is not JSON ({e}): {}", snippet()),
                );
            }
        }
    };
    let Some(response) = response else {
        return (
            Outcome::HttpError,
            format!("no response for id {id}: {}", snippet()),
        );
    };
    if let Some(error) = response.get("error") {
        return (Outcome::RpcError, format!("JSON-RPC error: {error}"));
    }
    match response.get("result") {
        Some(r) if r.get("isError").and_then(Value::as_bool) == Some(true) => {
            (Outcome::ToolError, format!("isError result: {r}"))
        }
        Some(_) => (Outcome::Ok, String::new()),
        None => (
            Outcome::HttpError,
            format!("neither result nor error: {response}"),
        ),
    }
}

fn matches_id(message: &Value, id: u64) -> bool {
    message.get("id").and_then(Value::as_u64) == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// The JSON messages in the `data` of an SSE body's events.
fn sse_messages(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut data = String::new();
    let mut flush = |data: &mut String| {
        if !data.is_empty() {
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                out.push(v);
            }
            data.clear();
        }
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            flush(&mut data);
        } else if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    flush(&mut data);
    out
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    cpu_ticks_of("/proc/self/stat")
}

/// utime + stime from a /proc/PID/stat file, in clock ticks (0 if unreadable).
fn cpu_ticks_of(path: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(0) ppid(1) ... utime(11) stime(12).
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// USER_HZ: 100 on every Linux architecture tollgate targets.
fn clock_ticks_per_sec() -> f64 {
    std::env::var("CLK_TCK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}
