//! OpenTelemetry traces, off unless the standard `OTEL_*` variables ask for
//! them: an OTLP exporter (HTTP, protobuf) behind the SDK's batch span
//! processor.
//!
//! Tracing is on when `OTEL_TRACES_EXPORTER=otlp`, or when that variable is
//! unset and `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is. `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn it off whatever else is set. The SDK and
//! the exporter read the rest themselves: the endpoint and headers, the
//! sampler (`OTEL_TRACES_SAMPLER`, `_ARG`), the batch processor's queue and
//! delay (`OTEL_BSP_*`), the resource (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`).
//!
//! Why a batch processor with its own thread, and an HTTP client of our
//! own: spans are handed to a bounded queue and exported from another
//! thread, so a collector that is slow or down costs a request nothing but
//! the queue push (a full queue drops spans, it never waits). The client is
//! the hyper + rustls stack the binary already has, run on the caller's
//! tokio runtime, so the exporter adds no second HTTP stack to the image.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The only OTLP protocol compiled in.
const HTTP_PROTOBUF: &str = "http/protobuf";

/// The largest collector response read (an OTLP answer is a few bytes).
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// How long an export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why tracing could not be set up as the environment asks.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// `OTEL_TRACES_EXPORTER` names an exporter tollgate does not have.
    #[error(
        "OTEL_TRACES_EXPORTER={0:?} is not supported: tollgate exports traces with \"otlp\" (or \"none\" for no traces)"
    )]
    Exporter(String),
    /// An OTLP protocol other than HTTP with protobuf was asked for.
    #[error(
        "{var}={value:?} is not supported: tollgate exports OTLP over \"http/protobuf\" (the collector's port 4318)"
    )]
    Protocol {
        /// The variable that asked.
        var: &'static str,
        /// What it asked for.
        value: String,
    },
    /// The TLS configuration of the exporter's client could not be built.
    #[error("the OTLP exporter's TLS client: {0}")]
    Tls(#[source] rustls::Error),
    /// The exporter refused its configuration (a malformed endpoint, ...).
    #[error("the OTLP exporter: {0}")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// A running trace pipeline. Keep it until exit and call
/// [`Telemetry::shutdown`] then, so queued spans are sent.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// Reads the `OTEL_*` environment: `None` when tracing is off (the
    /// default). `service` names the process when `OTEL_SERVICE_NAME` does
    /// not. Must run inside a tokio runtime: exports run on it.
    pub fn from_env(service: &'static str) -> Result<Option<Telemetry>, OtelError> {
        Telemetry::from_vars(service, |name| std::env::var(name).ok())
    }

    /// [`Telemetry::from_env`] with the variables read through `var`.
    fn from_vars(
        service: &'static str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Telemetry>, OtelError> {
        if !enabled(&var)? {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = var(name).filter(|v| v.trim() != HTTP_PROTOBUF) {
                return Err(OtelError::Protocol { var: name, value });
            }
        }
        let timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .iter()
        .find_map(|n| var(n)?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let client = Exporting::new(timeout)?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .build()
            .map_err(OtelError::Build)?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(Telemetry { provider }))
    }

    /// A tracer for spans of this process; `scope` names the code that
    /// makes them (`tollgate-sidecar`, ...).
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer(scope)
    }

    /// Makes this pipeline the process's global one, for code that reaches
    /// it through `opentelemetry::global` (the controller's spans).
    pub fn install_global(&self) {
        opentelemetry::global::set_tracer_provider(self.provider.clone());
    }

    /// Sends what is queued (waiting at most `within`) and stops the
    /// exporter. Runs the blocking shutdown off the async workers, which
    /// must stay free to carry the last export.
    pub async fn shutdown(self, within: Duration) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within)).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "flushing traces at shutdown");
        }
    }
}

/// Whether the environment turns traces on; an exporter we lack is an error.
fn enabled(var: &impl Fn(&str) -> Option<String>) -> Result<bool, OtelError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match var("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "none" => Ok(false),
        Some(v) if v == "otlp" => Ok(true),
        Some(v) if v.is_empty() => Ok(endpoint_set(var)),
        Some(v) => Err(OtelError::Exporter(v)),
        None => Ok(endpoint_set(var)),
    }
}

fn endpoint_set(var: &impl Fn(&str) -> Option<String>) -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|n| var(n).is_some_and(|v| !v.trim().is_empty()))
}

/// The exporter's HTTP client: hyper on the tokio runtime it was made on.
/// The batch processor calls it from its own thread; the request runs as a
/// task on the runtime and the processor's thread waits for its result.
#[derive(Clone)]
struct Exporting {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for Exporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporting")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Exporting {
    fn new(timeout: Duration) -> Result<Self, OtelError> {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(OtelError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Exporting {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime: tokio::runtime::Handle::current(),
            timeout,
        })
    }

    async fn send(self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::from(format!("no answer within {:?}", self.timeout)))?
    }
}

impl HttpClient for Exporting {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let task = self.runtime.spawn(self.clone().send(request));
        Box::pin(async move { task.await.map_err(HttpError::from)? })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_or_the_exporter_asks() {
        assert!(!enabled(&vars(&[])).unwrap());
        assert!(!enabled(&vars(&[("OTEL_SERVICE_NAME", "x")])).unwrap());
        assert!(enabled(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])).unwrap());
        assert!(
            enabled(&vars(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]))
            .unwrap()
        );
        assert!(enabled(&vars(&[("OTEL_TRACES_EXPORTER", "otlp")])).unwrap());
        assert!(
            !enabled(&vars(&[
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ]))
            .unwrap()
        );
        assert!(
            !enabled(&vars(&[
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ]))
            .unwrap()
        );
    }

    #[test]
    fn an_exporter_or_protocol_tollgate_lacks_is_refused_by_name() {
        let e = enabled(&vars(&[("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(matches!(&e, OtelError::Exporter(v) if v == "zipkin"), "{e}");
        let e = Telemetry::from_vars(
            "t",
            vars(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, OtelError::Protocol { var: "OTEL_EXPORTER_OTLP_PROTOCOL", value } if value == "grpc"),
            "{e}"
        );
    }
}
