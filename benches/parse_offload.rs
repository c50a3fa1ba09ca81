//! What large request bodies cost everyone else: an honest client's small
//! `tools/call` latency on the sidecar's one worker thread while two other
//! clients send 2 MB bodies of a million JSON values back to back (each
//! refused after its first 100,000), with those bodies parsed on the worker
//! thread or on the blocking pool. A plain program, not criterion:
//!
//! ```sh
//! cargo bench --bench parse_offload            # 2,000 honest calls per run
//! cargo bench --bench parse_offload -- 10000
//! ```
//!
//! The proxy runs in-process on a runtime with one worker thread (the
//! sidecar's default); the clients run on their own threads. The honest
//! calls are denied by the policy, so the proxy answers them itself and
//! only its own work is measured. Prints one line per run: latency
//! percentiles of the honest calls, and how many hostile bodies the proxy
//! refused meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use tollgate_sidecar::{AuditConfig, AuditLevel, ProxyConfig, RuleSource};

const POLICY: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: deny}\nspec:\n  defaultAction: Deny\n  rules: []\n";

fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("the policy file");
    for (name, offload_above, hostile) in [
        ("no hostile clients", 64 << 10, 0),
        ("hostile bodies parsed on the worker thread", usize::MAX, 2),
        ("hostile bodies parsed on the blocking pool", 64 << 10, 2),
    ] {
        run(name, &policy, offload_above, hostile, calls);
    }
}

fn run(name: &str, policy: &std::path::Path, offload_above: usize, hostile: usize, calls: usize) {
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the proxy's runtime");
    let mut config = ProxyConfig::new(
        RuleSource::Files(vec![policy.to_owned()]),
        "http://127.0.0.1:9".parse().expect("a URI"),
        "127.0.0.1:0".parse().expect("an address"),
        "127.0.0.1:0".parse().expect("an address"),
    );
    config.parse_offload_above = offload_above;
    let audit = AuditConfig {
        level: AuditLevel::Off,
        ..AuditConfig::default()
    };
    let running = proxy_rt
        .block_on(tollgate_sidecar::start(config, audit))
        .expect("the proxy starts");
    let addr = running.listen;

    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the clients' runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let complex = Bytes::from(format!("[{}0]", "0,".repeat(1_000_000)));
    for _ in 0..hostile {
        let (stop, refused, body) = (stop.clone(), refused.clone(), complex.clone());
        clients.spawn(async move {
            let mut conn = connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                if send(&mut conn, body.clone()).await.is_some() {
                    refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn = connect(addr).await;
                }
            }
        });
    }
    let mut latencies = clients.block_on(async move {
        let mut conn = connect(addr).await;
        let call = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
        );
        let mut latencies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            send(&mut conn, call.clone())
                .await
                .expect("the honest call is answered");
            latencies.push(t.elapsed());
        }
        latencies
    });
    stop.store(true, Ordering::Relaxed);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<46} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} hostile bodies refused)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        refused.load(Ordering::Relaxed)
    );
    clients.shutdown_timeout(Duration::from_secs(1));
    proxy_rt.block_on(running.shutdown());
}

type Conn = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Conn {
    let stream = TcpStream::connect(addr).await.expect("the proxy listens");
    let (send, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    send
}

/// POSTs `body`; the response's status, once its body is read.
async fn send(conn: &mut Conn, body: Bytes) -> Option<u16> {
    let request = Request::post("/mcp")
        .header(header::HOST, "proxy")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(Full::new(body))
        .ok()?;
    conn.ready().await.ok()?;
    let response = conn.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
