//! The HTTPS endpoint the apiserver calls: `/mutate/namespace` and
//! `/mutate/pod` (injection) and `/mutate/approval` (decisions on held
//! tool calls), each an AdmissionReview in and out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tokio::net::TcpListener;
use tokio::sync::watch;

use tollgate_runtime::body::{self, Body};

use crate::metrics::{WebhookCounters, WebhookResult, WebhookRoute};

use k8s_openapi::jiff::Timestamp;
use tollgate_policy::approval_crd::McpToolCallApproval;
use tollgate_runtime::access_review::{Access, Person, allowed};

use super::approval;
use super::inject::{InjectConfig, Outcome, Route, decide};
use crate::certs::Resolver;

/// The largest AdmissionReview accepted (pods with big specs included).
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// What the handler needs.
pub(crate) struct Webhook {
    /// Injection settings.
    pub config: InjectConfig,
    /// `tollgate_webhook_requests_total{route,result}`.
    pub requests: WebhookCounters,
    /// Asks the apiserver whether a person may approve (SubjectAccessReview);
    /// without one, every decision is refused.
    pub client: Option<kube::Client>,
}

/// Serves the webhook over TLS on `listener` with the certificate
/// `resolver` holds, until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    webhook: Arc<Webhook>,
    shutdown: watch::Receiver<bool>,
) {
    crate::https::serve(
        listener,
        resolver,
        move |req| route(webhook.clone(), req),
        1024,
        Duration::from_secs(10),
        shutdown,
    )
    .await;
}

async fn route(
    webhook: Arc<Webhook>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let route = match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate/namespace") => Some(Route::Namespace),
        (&Method::POST, "/mutate/pod") => Some(Route::Pod),
        (&Method::POST, "/mutate/approval") => None,
        _ => return Ok(body::status(StatusCode::NOT_FOUND)),
    };
    let bytes = match body::read(req.into_body(), MAX_REVIEW_BYTES, Duration::from_secs(10)).await {
        Ok(b) => b,
        Err(e) => {
            return Ok(body::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": e.to_string()}),
            ));
        }
    };
    let answer = match route {
        Some(route) => admit(&webhook, route, &bytes),
        None => admit_approval(&webhook, &bytes).await,
    };
    Ok(body::json(StatusCode::OK, &answer))
}

/// Answers one AdmissionReview of an `McpToolCallApproval` update: a
/// person's decision becomes their vote (or is refused), a sidecar's
/// transition is checked ([`approval`]).
pub(crate) async fn admit_approval(webhook: &Webhook, body: &[u8]) -> serde_json::Value {
    let counters = webhook.requests.get(WebhookRoute::Approval);
    let count = |result: WebhookResult| counters.get(result).inc();
    let invalid = |message: String| {
        serde_json::to_value(AdmissionResponse::invalid(message).into_review()).unwrap_or_default()
    };
    let review: AdmissionReview<McpToolCallApproval> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            count(WebhookResult::Error);
            return invalid(format!(
                "not an AdmissionReview of an McpToolCallApproval: {e}"
            ));
        }
    };
    let request: AdmissionRequest<McpToolCallApproval> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            count(WebhookResult::Error);
            return invalid(e.to_string());
        }
    };
    let response = AdmissionResponse::from(&request);
    let (Operation::Update, Some(old), Some(new)) =
        (&request.operation, &request.old_object, &request.object)
    else {
        count(WebhookResult::Skipped);
        return serde_json::to_value(response.into_review()).unwrap_or_default();
    };
    let now = Timestamp::now();
    let refuse = |refusal: String| {
        count(WebhookResult::Denied);
        tracing::info!(target: "tollgate::audit", event = "approval_refused", approval = %old.metadata.name.as_deref().unwrap_or(""), namespace = %request.namespace.as_deref().unwrap_or(""), user = %request.user_info.username.as_deref().unwrap_or(""), reason = %refusal, "decision refused");
        serde_json::to_value(response.clone().deny(refusal).into_review()).unwrap_or_default()
    };
    let decision = match approval::read(old, new, request.sub_resource.as_deref(), now) {
        Ok(approval::Change::Allowed) => {
            count(WebhookResult::Skipped);
            return serde_json::to_value(response.clone().into_review()).unwrap_or_default();
        }
        Ok(approval::Change::Decision(d)) => d,
        Err(refusal) => return refuse(refusal.to_string()),
    };
    let person = approval::Person {
        user: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    let name = old.metadata.name.clone().unwrap_or_default();
    let Some(client) = &webhook.client else {
        return refuse("tollgate's webhook cannot ask the apiserver who may approve".into());
    };
    let access = Access {
        verb: "approve",
        group: "tollgate.dev",
        resource: "mcptoolcallapprovals",
        namespace: &namespace,
        name: &name,
    };
    let who = Person {
        user: person.user.clone(),
        groups: person.groups.clone(),
    };
    let may = match allowed(client, &who, &access).await {
        Ok(may) => may,
        // Fail closed: no answer is no permission.
        Err(e) => return refuse(e.to_string()),
    };
    let status = match approval::record(old, &decision, &person, may, now) {
        Ok(s) => s,
        Err(refusal) => return refuse(refusal.to_string()),
    };
    let ops = serde_json::json!([{"op": "replace", "path": "/status", "value": status}]);
    let patch: Result<json_patch::Patch, _> = serde_json::from_value(ops);
    match patch
        .map_err(|e| e.to_string())
        .and_then(|p| response.clone().with_patch(p).map_err(|e| e.to_string()))
    {
        Ok(r) => {
            count(WebhookResult::Recorded);
            tracing::info!(target: "tollgate::audit", event = "approval_decided", approval = %name, namespace = %namespace, user = %person.user, verdict = ?decision.verdict, phase = ?status.phase, approvals = status.approvals.len(), tool = %old.spec.tool, rule = %old.spec.rule, policy = %old.spec.policy, "decision recorded");
            serde_json::to_value(r.into_review()).unwrap_or_default()
        }
        Err(e) => refuse(format!("tollgate could not build the status patch: {e}")),
    }
}

/// Answers one AdmissionReview.
pub(crate) fn admit(webhook: &Webhook, route: Route, body: &[u8]) -> serde_json::Value {
    let counters = webhook.requests.get(match route {
        Route::Namespace => WebhookRoute::Namespace,
        Route::Pod => WebhookRoute::Pod,
    });
    let count = |result: WebhookResult| counters.get(result).inc();
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            count(WebhookResult::Error);
            return serde_json::to_value(
                AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review(),
            )
            .unwrap_or_default();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            count(WebhookResult::Error);
            return serde_json::to_value(AdmissionResponse::invalid(e.to_string()).into_review())
                .unwrap_or_default();
        }
    };
    let response = AdmissionResponse::from(&request);
    let response = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => match decide(route, pod, &webhook.config) {
            Ok(Outcome::Inject(patch)) => match response.clone().with_patch(patch) {
                Ok(r) => {
                    count(WebhookResult::Injected);
                    tracing::info!(namespace = %request.namespace.as_deref().unwrap_or(""), pod = %pod.metadata.name.as_deref().or(pod.metadata.generate_name.as_deref()).unwrap_or(""), "injected the tollgate sidecar");
                    r
                }
                Err(e) => {
                    count(WebhookResult::Error);
                    response.deny(format!("tollgate could not build the sidecar patch: {e}"))
                }
            },
            Ok(Outcome::Skip(reason)) => {
                count(WebhookResult::Skipped);
                tracing::debug!(reason, "no injection");
                response
            }
            Err(message) => {
                count(WebhookResult::Denied);
                response.deny(format!("tollgate sidecar injection: {message}"))
            }
        },
        _ => {
            count(WebhookResult::Skipped);
            response
        }
    };
    serde_json::to_value(response.into_review()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use crate::metrics::ControllerMetrics;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use serde_json::{Value, json};

    fn webhook() -> Arc<Webhook> {
        Arc::new(Webhook {
            config: InjectConfig {
                image: "tollgate:test".into(),
                pull_policy: None,
                controller_url: "https://tollgate:9443".into(),
                controller_ca: String::new(),
                audience: "tollgate".into(),
                native_sidecars: true,
                controller_name: "tollgate-controller".into(),
                extra_args: Vec::new(),
                extra_env: Vec::new(),
            },
            requests: ControllerMetrics::new().unwrap().webhook_requests(),
            client: None,
        })
    }

    fn review(pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": pod,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn pod(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "kms-", "labels": labels}, "spec": {"containers": [{"name": "s", "image": "s"}]}})
    }

    #[test]
    fn reviews_come_back_with_the_uid_and_a_patch_a_skip_or_a_denial() {
        let w = webhook();
        let injected = admit(&w, Route::Namespace, &review(pod(json!({"app": "kms"}))));
        let response = &injected["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(
            (
                response["allowed"].as_bool(),
                response["patchType"].as_str()
            ),
            (Some(true), Some("JSONPatch"))
        );
        // kube serialises the patch bytes as a JSON array of numbers, which
        // the apiserver decodes like the base64 form.
        let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            patch
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/spec/initContainers/0")
        );

        let skipped = admit(&w, Route::Pod, &review(pod(json!({"app": "kms"}))));
        assert_eq!(skipped["response"]["allowed"], true);
        assert!(skipped["response"]["patch"].is_null());

        let mut bad = pod(json!({}));
        bad["metadata"]["annotations"] = json!({"tollgate.dev/listen-port": "x"});
        let denied = admit(&w, Route::Namespace, &review(bad));
        assert_eq!(denied["response"]["allowed"], false);
        assert!(
            denied["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("tollgate.dev/listen-port")
        );

        let garbage = admit(&w, Route::Namespace, b"{\"kind\": 5}");
        assert_eq!(garbage["response"]["allowed"], false);
        let m = |r| w.requests.get(WebhookRoute::Namespace).get(r).get();
        assert_eq!(
            (
                m(WebhookResult::Injected),
                m(WebhookResult::Denied),
                m(WebhookResult::Error)
            ),
            (1, 1, 1)
        );
    }

    /// The apiserver's view: TLS verified against the CA that goes into
    /// caBundle, then an AdmissionReview over HTTP/1.1.
    #[tokio::test]
    async fn serves_reviews_over_tls_trusted_by_the_generated_ca() {
        let bundle = certs::generate(&[
            "tollgate-webhook.tollgate-system.svc".into(),
            "127.0.0.1".into(),
        ])
        .unwrap();
        let resolver = Arc::new(certs::Resolver::new(&bundle.cert, &bundle.key).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, resolver, webhook(), stop_rx));

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bundle.ca_cert.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .expect("the certificate is valid for 127.0.0.1 under the generated CA");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::post("/mutate/namespace")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(review(pod(
                json!({"app": "kms"}),
            )))))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let _ = stop.send(true);
        server.await.unwrap();
    }
}
