//! `tollgate approve|reject NAME` and `tollgate approvals --admin URL`: a
//! person deciding a held call. Without `--admin`, against the cluster of
//! the kubeconfig (managed mode): the same status write as `kubectl patch
//! mtca NAME --subresource=status`, which the apiserver and tollgate's
//! webhook check ([`cluster`]). With `--admin URL`, on a sidecar's admin
//! listener (file mode). Prints the answer; exits 1 when it is refused.

mod cluster;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Flags of `tollgate approve` and `tollgate reject`.
#[derive(clap::Args)]
pub(crate) struct DecideArgs {
    /// The approval's id (the McpToolCallApproval's name), as the agent was told,
    /// `kubectl get mtca` or `tollgate approvals` lists.
    id: String,
    /// File mode: the sidecar's admin listener, e.g. http://127.0.0.1:9901. Without it, the
    /// McpToolCallApproval is decided in the cluster of the kubeconfig.
    #[arg(long, env = "TOLLGATE_ADMIN")]
    admin: Option<http::Uri>,
    /// File mode: who decides (default $USER). In the cluster: a user to impersonate
    /// (like kubectl --as); otherwise the apiserver records who you are.
    #[arg(long = "as")]
    by: Option<String>,
    /// File mode: groups the decider is in. In the cluster: groups to impersonate (--as-group).
    #[arg(long = "group", alias = "as-group")]
    groups: Vec<String>,
    /// In the cluster: the approval's namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// In the cluster: a kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Why, recorded with the decision (and shown to the agent on rejection).
    #[arg(long)]
    reason: Option<String>,
}

/// Flags of `tollgate approvals`.
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// The sidecar's admin listener, e.g. http://127.0.0.1:9901.
    #[arg(long, env = "TOLLGATE_ADMIN")]
    admin: http::Uri,
}

/// Why talking to the admin listener failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("{0} is not a URL this can reach: {1}")]
    Url(String, http::Error),
    #[error("cannot reach the admin listener: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the admin listener's answer: {0}")]
    Read(#[from] hyper::Error),
    #[error("the admin listener did not answer within 10s")]
    Timeout,
}

pub(crate) fn decide(args: &DecideArgs, verdict: &str) -> ExitCode {
    let Some(admin) = &args.admin else {
        return cluster::decide(args, verdict);
    };
    let by = args
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let body = json!({ "by": by, "groups": args.groups, "reason": args.reason });
    let path = format!("/approvals/{}/{verdict}", args.id);
    exchange(admin, &path, Some(body))
}

pub(crate) fn list(args: &ListArgs) -> ExitCode {
    exchange(&args.admin, "/approvals", None)
}

/// One request; prints the JSON answer.
fn exchange(admin: &http::Uri, path: &str, body: Option<Value>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(send(admin, path, body)) {
        Ok((status, answer)) if status.is_success() => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok((status, answer)) => {
            let message = serde_json::from_str::<Value>(&answer)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(answer);
            eprintln!("error: {status}: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) async fn send(
    admin: &http::Uri,
    path: &str,
    body: Option<Value>,
) -> Result<(http::StatusCode, String), ClientError> {
    let base = admin.to_string();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let builder = http::Request::builder()
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json");
    let request = match body {
        Some(b) => builder
            .method(http::Method::POST)
            .body(Full::new(Bytes::from(b.to_string()))),
        None => builder
            .method(http::Method::GET)
            .body(Full::new(Bytes::new())),
    }
    .map_err(|e| ClientError::Url(url.clone(), e))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, ClientError>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| ClientError::Timeout)?
}
