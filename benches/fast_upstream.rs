//! A minimal, fast MCP server (Streamable HTTP) to put behind the proxies in
//! `scripts/bench/run.sh`, so the upstream is not what limits the data-path
//! measurement.
//!
//! ```sh
//! cargo bench --bench fast_upstream -- --port 0        # {"port":N,"mcp":"http://127.0.0.1:N/mcp"}
//! cargo bench --bench fast_upstream -- --help
//! ```
//!
//! - Listens on 127.0.0.1 only, HTTP/1.1 keep-alive, path `/mcp`.
//! - `initialize` issues an `Mcp-Session-Id`; later requests must carry a
//!   known one (404 otherwise, 400 when missing); `DELETE` ends a session.
//! - `tools/list` lists one tool, `echo {text}`; `tools/call echo` returns
//!   `{"content":[{"type":"text","text":<text>}]}`; any other tool is a
//!   JSON-RPC `-32602` error; `ping` answers `{}`; notifications and client
//!   responses get `202`.
//! - Answers `application/json`, or with `--sse` one SSE event per response
//!   (`event: message`), as kubernetes-mcp-server does.
//! - `GET /mcp` is `405` (the spec allows a server without a GET stream).
//! - Exits on stdin EOF when stdin is a pipe or socket, after `--lifetime`
//!   seconds, or on SIGTERM/SIGINT.
//! - The first stdout line is the JSON above; nothing else goes to stdout.

#[path = "common/cargo_bench.rs"]
mod cargo_bench;

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileTypeExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A minimal fast MCP server (Streamable HTTP) for data-path benchmarks.
#[derive(Parser, Debug)]
#[command(name = "fast_upstream")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0, env = "FAST_UPSTREAM_PORT")]
    port: u16,
    /// Answer requests as SSE (`text/event-stream`, one `event: message`)
    /// instead of `application/json`.
    #[arg(long, env = "FAST_UPSTREAM_SSE")]
    sse: bool,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1, env = "FAST_UPSTREAM_THREADS")]
    threads: usize,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 600, env = "FAST_UPSTREAM_LIFETIME")]
    lifetime: u64,
    /// Do not exit on stdin EOF.
    #[arg(long)]
    ignore_stdin: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

struct State {
    sse: bool,
    sessions: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    seed: u64,
}

const SESSION_HEADER: &str = "mcp-session-id";

fn main() {
    if cargo_bench::run_by_cargo_bench_suite::<Args>() {
        eprintln!(
            "fast_upstream: not a micro-benchmark; give it flags (cargo bench --bench fast_upstream -- --help) \
             or run scripts/bench/run.sh. Nothing to do."
        );
        return;
    }
    let args = Args::parse();
    watch_stdin_and_lifetime(&args);
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
    runtime.block_on(serve(args));
}

/// Stdin EOF (pipe/socket only) and the lifetime end the process.
fn watch_stdin_and_lifetime(args: &Args) {
    let lifetime = Duration::from_secs(args.lifetime);
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        eprintln!("fast_upstream: lifetime of {lifetime:?} reached; exiting");
        std::process::exit(0);
    });
    if args.ignore_stdin {
        return;
    }
    let watch = std::fs::metadata("/dev/stdin")
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false);
    if watch {
        std::thread::spawn(|| {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
}

async fn serve(args: Args) {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .await
        .unwrap_or_else(|e| {
            eprintln!(
                "fast_upstream: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            std::process::exit(1);
        });
    let port = listener.local_addr().expect("local addr").port();
    println!(
        "{}",
        json!({"port": port, "mcp": format!("http://127.0.0.1:{port}/mcp"), "sse": args.sse})
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let state = Arc::new(State {
        sse: args.sse,
        sessions: Mutex::new(HashSet::new()),
        next_session: AtomicU64::new(1),
        seed,
    });
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("fast_upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    }
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match *req.method() {
        Method::POST => {}
        Method::DELETE => {
            let Some(id) = session else {
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "DELETE requires an Mcp-Session-Id header",
                ));
            };
            let removed = state.sessions.lock().expect("sessions").remove(&id);
            return Ok(plain(
                if removed {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                },
                "",
            ));
        }
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "POST and DELETE only");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return Ok(r);
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "body read failed")),
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "malformed JSON"));
    };
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id");
    let (Some(method), Some(id)) = (method, id) else {
        // A notification or a client response.
        return Ok(plain(StatusCode::ACCEPTED, ""));
    };
    if method == "initialize" {
        let version = message
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("2025-11-25");
        let n = state.next_session.fetch_add(1, Ordering::Relaxed);
        let sid = format!(
            "{:016x}{:016x}",
            state.seed,
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        state.sessions.lock().expect("sessions").insert(sid.clone());
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "tollgate-fast-upstream", "version": "0.1.0"},
        });
        let mut r = rpc(
            &state,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
        );
        r.headers_mut()
            .insert(SESSION_HEADER, HeaderValue::from_str(&sid).expect("hex"));
        return Ok(r);
    }
    match session {
        None => return Ok(plain(StatusCode::BAD_REQUEST, "Mcp-Session-Id required")),
        Some(s) if !state.sessions.lock().expect("sessions").contains(&s) => {
            return Ok(plain(StatusCode::NOT_FOUND, "session not found"));
        }
        Some(_) => {}
    }
    let response = match method {
        "tools/call" => {
            let name = message.pointer("/params/name").and_then(Value::as_str);
            if name == Some("echo") {
                let args = message.pointer("/params/arguments");
                let text = match args.and_then(|a| a.get("text")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => args.map_or_else(|| "{}".into(), Value::to_string),
                };
                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool {:?}", name.unwrap_or(""))}})
            }
        }
        "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
            "name": "echo",
            "description": "Returns its text argument.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "annotations": {"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false},
        }]}}),
        "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        other => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method {other:?} not found")}})
        }
    };
    Ok(rpc(&state, response))
}

/// One JSON-RPC response, as JSON or as one SSE event.
fn rpc(state: &State, value: Value) -> Response<Full<Bytes>> {
    let json = serde_json::to_vec(&value).unwrap_or_default();
    let (content_type, body) = if state.sse {
        let mut b = Vec::with_capacity(json.len() + 24);
        b.extend_from_slice(b"event: message\ndata: ");
        b.extend_from_slice(&json);
        b.extend_from_slice(b"\n\n");
        ("text/event-stream", b)
    } else {
        ("application/json", json)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if state.sse {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}
