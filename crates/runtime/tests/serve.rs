//! What a listener does with connections that do not use their slot: idle
//! ones, ones that send half a request, and a full listener meeting a new
//! client. Each test watches the server's own account (connection events)
//! and what the client sees on the socket; deadlines only guard against
//! hangs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use tollgate_runtime::body::{self, Body, ReadError};
use tollgate_runtime::serve::{ConnectionEvent, ServeOptions, serve_with};
use tollgate_runtime::slots::Reclaim;

/// How long anything may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(20);

/// A server and the events it reported.
struct Server {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<ConnectionEvent>>>,
    /// Requests in the `/hold` handler so far.
    holding: Arc<AtomicUsize>,
    _shutdown: watch::Sender<bool>,
}

impl Server {
    fn count(&self, event: ConnectionEvent) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| **e == event)
            .count()
    }

    /// Waits (bounded) until a `/hold` request is being handled: its
    /// connection is at work.
    async fn wait_holding(&self) {
        let deadline = tokio::time::Instant::now() + HANG;
        while self.holding.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no request held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until `event` was reported `n` times.
    async fn wait_for(&self, event: ConnectionEvent, n: usize) {
        let deadline = tokio::time::Instant::now() + HANG;
        while self.count(event) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{event:?} reported {} times, not {n}: {:?}",
                self.count(event),
                self.events.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Answers every request after reading its body (408 when it does not
/// arrive within `body_timeout`); `GET /hold` only once `hold` has a
/// permit.
async fn start(
    max_connections: usize,
    header_read_timeout: Duration,
    body_timeout: Duration,
    hold: Arc<Semaphore>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = watch::channel(false);
    let holding = Arc::new(AtomicUsize::new(0));
    let held_count = holding.clone();
    let handler = move |req: Request<Incoming>| {
        let (hold, held) = (hold.clone(), holding.clone());
        async move {
            let (parts, incoming) = req.into_parts();
            if parts.uri.path() == "/hold" {
                held.fetch_add(1, Ordering::SeqCst);
                let _permit = hold.acquire().await;
            }
            let status = match body::read_request(&parts, incoming, 1 << 20, body_timeout).await {
                Ok(_) => StatusCode::OK,
                Err(ReadError::Timeout(_)) => StatusCode::REQUEST_TIMEOUT,
                Err(_) => StatusCode::BAD_REQUEST,
            };
            Ok::<Response<Body>, Infallible>(body::status(status))
        }
    };
    let options = ServeOptions {
        max_connections,
        header_read_timeout,
        grace: Duration::from_secs(1),
        reclaim_after: Duration::ZERO,
    };
    let seen = events.clone();
    tokio::spawn(serve_with(listener, handler, options, rx, move |e| {
        seen.lock().unwrap().push(e)
    }));
    Server {
        addr,
        events,
        holding: held_count,
        _shutdown: tx,
    }
}

/// Reads until the server closes the connection; the text read.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut buf))
        .await
        .expect("the server never closed the connection")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads one response head (and its empty body) off a kept-alive connection.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
const HOLD: &[u8] = b"GET /hold HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
const HALF_BODY: &[u8] = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{";

/// A connection that has sent `bytes`.
async fn sent(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

fn no_hold() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = start(8, Duration::from_millis(300), HANG, no_hold()).await;
    let mut client = sent(server.addr, GET).await;
    assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: the server closes it.
    until_closed(&mut client).await;
    server
        .wait_for(ConnectionEvent::Reclaimed(Reclaim::HeaderTimeout), 1)
        .await;
    server.wait_for(ConnectionEvent::Closed, 1).await;
}

#[tokio::test]
async fn silent_and_half_sent_headers_are_closed_after_the_header_timeout() {
    let server = start(8, Duration::from_millis(300), HANG, no_hold()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = sent(server.addr, b"POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Le").await;
    until_closed(&mut silent).await;
    until_closed(&mut half).await;
    server
        .wait_for(ConnectionEvent::Reclaimed(Reclaim::HeaderTimeout), 2)
        .await;
}

#[tokio::test]
async fn a_half_sent_body_gets_408_and_its_connection_is_closed() {
    let server = start(8, HANG, Duration::from_millis(300), no_hold()).await;
    let mut client = sent(server.addr, HALF_BODY).await;
    let text = until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.wait_for(ConnectionEvent::Closed, 1).await;
}

#[tokio::test]
async fn a_full_listener_reclaims_a_silent_connection_for_a_new_client() {
    // Long timeouts: only reclaiming can free a slot here.
    let server = start(2, HANG * 3, HANG * 3, no_hold()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half_body = sent(server.addr, HALF_BODY).await;
    server.wait_for(ConnectionEvent::Opened, 2).await;

    // Each newcomer is served; the silent one goes first, then the stalled
    // body, then (the first newcomer being idle) that one.
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut honest = sent(server.addr, GET).await;
        assert!(one_response(&mut honest).await.starts_with("HTTP/1.1 200"));
        kept.push(honest);
    }
    until_closed(&mut silent).await;
    until_closed(&mut half_body).await;
    assert_eq!(server.count(ConnectionEvent::Reclaimed(Reclaim::Unused)), 1);
    assert_eq!(
        server.count(ConnectionEvent::Reclaimed(Reclaim::HalfSentBody)),
        1
    );
    assert_eq!(server.count(ConnectionEvent::Reclaimed(Reclaim::Idle)), 1);
    assert_eq!(server.count(ConnectionEvent::Refused), 0);
}

#[tokio::test]
async fn a_connection_serving_a_request_is_never_reclaimed() {
    let hold = Arc::new(Semaphore::new(0));
    let server = start(1, HANG * 3, HANG * 3, hold.clone()).await;
    let mut working = sent(server.addr, HOLD).await;
    server.wait_holding().await;
    let addr = server.addr;
    let (done, sent_rx) = tokio::sync::oneshot::channel();
    let waiting = tokio::spawn(async move {
        let mut next = sent(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        let _ = done.send(());
        until_closed(&mut next).await
    });
    // The second client waits in the backlog for the slot; the first
    // finishes untouched.
    sent_rx.await.unwrap();
    assert_eq!(server.count(ConnectionEvent::Opened), 1);
    hold.add_permits(1);
    assert!(until_closed(&mut working).await.starts_with("HTTP/1.1 200"));
    let text = waiting.await.unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{text:?} {:?}",
        server.events.lock().unwrap()
    );
    assert_eq!(server.count(ConnectionEvent::Refused), 0);
    assert!(
        !server
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Reclaimed(_)))
    );
}

#[tokio::test]
async fn a_newcomer_finding_every_slot_at_work_hears_503_after_the_header_timeout() {
    let hold = Arc::new(Semaphore::new(0));
    let server = start(1, Duration::from_millis(300), HANG, hold.clone()).await;
    let mut working = sent(server.addr, HOLD).await;
    server.wait_holding().await;
    let mut next = sent(server.addr, GET).await;
    let text = until_closed(&mut next).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert_eq!(server.count(ConnectionEvent::Refused), 1);
    // The working connection was left alone.
    hold.add_permits(1);
    assert!(until_closed(&mut working).await.starts_with("HTTP/1.1 200"));
}
