//! A loopback receiver of approval notifications, and the check a real
//! receiver makes of their signature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;

/// Refuses the first request of each delivery with 503 (so every
/// delivery is retried once), accepts the rest, and keeps them all. Serves
/// until the test's runtime ends.
#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
}

impl Receiver {
    /// Listens on 127.0.0.1.
    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let delivery = parts.headers.get("x-tollgate-delivery").cloned();
                                let mut seen = me.seen.lock().unwrap();
                                let first = !seen.iter().any(|(h, _)| {
                                    h.get("x-tollgate-delivery") == delivery.as_ref()
                                });
                                seen.push((parts.headers, bytes));
                                let status = if first { 503 } else { 200 };
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// The deliveries of `event` so far.
    pub fn of(&self, event: &str) -> Vec<(http::HeaderMap, bytes::Bytes)> {
        self.all()
            .into_iter()
            .filter(|(h, _)| h.get("x-tollgate-event").is_some_and(|e| e == event))
            .collect()
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<(http::HeaderMap, bytes::Bytes)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Whether `headers` carry the HMAC-SHA256 of `body` under `key`, as
/// `x-tollgate-signature-256: sha256=<hex>`.
pub fn signed_with(key: &[u8], headers: &http::HeaderMap, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    headers
        .get("x-tollgate-signature-256")
        .is_some_and(|v| v.as_bytes() == format!("sha256={expected}").as_bytes())
}
