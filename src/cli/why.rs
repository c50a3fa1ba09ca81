//! `tollgate why POD REQUEST_ID` (also `kubectl tollgate why ...`): the
//! decision record a sidecar keeps for a call it did not simply allow —
//! the policy, rule, reason and message — read from the sidecar's admin
//! listener (`GET /decisions/{id}`, see the sidecar's `decisions` module).
//!
//! With a pod it goes through the apiserver's pod proxy
//! (`pods/proxy` get, to the admin port); with `--admin URL` it asks a
//! sidecar directly (file mode, or a `kubectl port-forward`).
//!
//! Exit codes, for scripts: 0 a record was found and printed; 1 the sidecar
//! keeps no record of that id (allowed, or older than the last 512 kept);
//! 2 the sidecar could not be asked.

use std::path::PathBuf;
use std::process::ExitCode;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

/// The sidecar's admin port in injected pods.
const ADMIN_PORT: u16 = 9901;

/// Flags of `tollgate why`.
#[derive(clap::Args)]
pub(crate) struct WhyArgs {
    /// `POD REQUEST_ID`, or only `REQUEST_ID` with `--admin`. The id is the
    /// JSON-RPC id of the call (the audit log's `request_id`).
    #[arg(required = true, num_args = 1..=2, value_names = ["POD", "REQUEST_ID"])]
    args: Vec<String>,
    /// The pod's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The sidecar's admin port in the pod.
    #[arg(long, default_value_t = ADMIN_PORT)]
    admin_port: u16,
    /// Ask the sidecar at this admin listener instead of a pod, e.g. http://127.0.0.1:9901.
    #[arg(long, env = "TOLLGATE_ADMIN")]
    admin: Option<http::Uri>,
    /// Print the records as JSON.
    #[arg(long)]
    json: bool,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// Why the sidecar could not be asked.
#[derive(Debug, thiserror::Error)]
enum WhyError {
    #[error("give POD REQUEST_ID, or REQUEST_ID with --admin URL")]
    Usage,
    #[error(transparent)]
    Client(#[from] tollgate_runtime::kube_client::ClientError),
    #[error("asking the sidecar through the apiserver's pod proxy: {0}")]
    Proxy(#[from] kube::Error),
    #[error("the pod proxy request for {0}: {1}")]
    Request(String, http::Error),
    #[error(transparent)]
    Admin(#[from] super::approve::ClientError),
    #[error(
        "the apiserver refused to proxy to the pod's admin port ({status}: {message}); is the pod running, and may you get pods/proxy? Or: kubectl port-forward POD 9901 and --admin http://127.0.0.1:9901"
    )]
    Apiserver { status: StatusCode, message: String },
    #[error("the sidecar answered {status}: {answer}")]
    Answer { status: StatusCode, answer: String },
}

pub(crate) fn run(args: &WhyArgs) -> ExitCode {
    let asked = match super::block_on(ask(args)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match asked {
        Ok(Some(records)) => {
            print(&records, args.json);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            let id = args.args.last().map_or("", String::as_str);
            eprintln!(
                "no decision kept for request id {id:?}: the sidecar keeps its last 512 denied, audited or held calls; an allowed call is only in its audit log (request_id)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The records of the id, `None` when the sidecar keeps none.
async fn ask(args: &WhyArgs) -> Result<Option<Vec<Value>>, WhyError> {
    let (status, answer) = match (&args.admin, args.args.as_slice()) {
        (Some(admin), [id]) => {
            super::approve::send(admin, &format!("/decisions/{}", encode(id)), None).await?
        }
        (None, [pod, id]) => through_apiserver(args, pod, id).await?,
        _ => return Err(WhyError::Usage),
    };
    match status {
        StatusCode::OK => {
            let v: Value = serde_json::from_str(&answer).map_err(|_| WhyError::Answer {
                status,
                answer: answer.clone(),
            })?;
            Ok(Some(v["decisions"].as_array().cloned().unwrap_or_default()))
        }
        StatusCode::NOT_FOUND if answer.contains("no decision kept") => Ok(None),
        _ => Err(WhyError::Answer { status, answer }),
    }
}

/// `GET /api/v1/namespaces/NS/pods/POD:PORT/proxy/decisions/ID`.
async fn through_apiserver(
    args: &WhyArgs,
    pod: &str,
    id: &str,
) -> Result<(StatusCode, String), WhyError> {
    let client = tollgate_runtime::kube_client::client(args.kubeconfig.as_deref()).await?;
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}:{}/proxy/decisions/{}",
        args.namespace,
        pod,
        args.admin_port,
        encode(id)
    );
    let request = http::Request::get(&path)
        .body(kube::client::Body::empty())
        .map_err(|e| WhyError::Request(path.clone(), e))?;
    let response = client.send(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer = String::from_utf8_lossy(&bytes).into_owned();
    // The sidecar never answers a Kubernetes Status: this is the apiserver's.
    if !status.is_success()
        && let Ok(v) = serde_json::from_str::<Value>(&answer)
        && v["kind"] == "Status"
    {
        return Err(WhyError::Apiserver {
            status,
            message: v["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok((status, answer))
}

/// Percent-encodes a request id for one path segment.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print(records: &[Value], json: bool) {
    if json {
        println!("{}", Value::Array(records.to_vec()));
        return;
    }
    for r in records {
        let field = |k: &str| r[k].as_str().map(str::to_owned);
        println!(
            "request {}: {} {} ({})",
            field("requestId").unwrap_or_default(),
            field("tool").unwrap_or_default(),
            field("decision").unwrap_or_default(),
            field("reason").unwrap_or_default(),
        );
        if let Some(p) = field("policy") {
            println!("  policy:  {p}");
        }
        match field("rule") {
            Some(rule) => println!("  rule:    {rule}"),
            None => println!("  rule:    (none: the policy's defaultAction)"),
        }
        if let Some(m) = field("message") {
            println!("  message: {m}");
        }
        if let Some(s) = r["retryAfterSeconds"].as_u64() {
            println!("  retry after: {s}s");
        }
        if let Some(at) = r["at"].as_u64() {
            println!("  at:      {at} (Unix seconds)");
        }
    }
}
