//! The dashboard checker: every query of the shipped Grafana dashboard
//! (charts/tollgate/dashboards/tollgate.json), run against a real
//! Prometheus, must return data. A renamed metric or a wrong label leaves a
//! panel empty, which nobody notices until they need it.
//!
//! [`check`] takes the Prometheus base URL (`http://127.0.0.1:9090`), so the
//! same check runs against the local Prometheus of
//! `dashboard_queries_return_data` (tests/controller_cluster.rs) and the
//! one of the real-node end-to-end test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::{Proc, free_port, repo, repo_file};

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Query {
    /// The panel's title.
    pub panel: String,
    /// The PromQL, with the dashboard's variables as written.
    pub expr: String,
}

/// What one query returned.
#[derive(Debug, Clone)]
pub struct Answer {
    pub query: Query,
    /// The PromQL sent (variables replaced).
    pub sent: String,
    /// How many series came back, and the first one's value.
    pub series: usize,
    pub first: Option<f64>,
}

/// Every query of the shipped dashboard.
pub fn queries() -> Vec<Query> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("charts/tollgate/dashboards/tollgate.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        // Collapsed rows hold their panels inside.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                panel: panel["title"].as_str().unwrap_or("").to_owned(),
                expr: target["expr"]
                    .as_str()
                    .expect("a target without expr")
                    .to_owned(),
            });
        }
    }
    out.reverse();
    out
}

/// The dashboard's variables, as Grafana would fill them for "All", with
/// `$__rate_interval` = `rate_interval` (Grafana widens it with the time
/// range shown).
fn fill(expr: &str, rate_interval: &str) -> String {
    expr.replace("${namespace}", ".*")
        .replace("$namespace", ".*")
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", "5m")
}

/// Runs every query of the dashboard against `prometheus` (base URL) and
/// returns the answers, or the panels whose queries returned nothing (no
/// series, or only NaN: a quantile of no observations) or failed.
pub fn check(prometheus: &str) -> Result<Vec<Answer>, Vec<String>> {
    check_over(prometheus, "1m")
}

/// [`check`] with `$__rate_interval` = `rate_interval`: for a run whose
/// events (a policy push, say) lie further back than a minute.
pub fn check_over(prometheus: &str, rate_interval: &str) -> Result<Vec<Answer>, Vec<String>> {
    let mut answers = Vec::new();
    let mut empty = Vec::new();
    for query in queries() {
        let sent = fill(&query.expr, rate_interval);
        match instant(prometheus, &sent) {
            Ok(result) => {
                let values: Vec<f64> = result
                    .iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect();
                if values.iter().all(|v| v.is_nan()) {
                    empty.push(format!(
                        "{}: `{sent}` returned no data ({result:?})",
                        query.panel
                    ));
                } else {
                    answers.push(Answer {
                        series: values.len(),
                        first: values.first().copied(),
                        query,
                        sent,
                    });
                }
            }
            Err(e) => empty.push(format!("{}: `{sent}` failed: {e}", query.panel)),
        }
    }
    if empty.is_empty() {
        Ok(answers)
    } else {
        Err(empty)
    }
}

/// The `data.result` of an instant query.
pub fn instant(prometheus: &str, promql: &str) -> Result<Vec<Value>, String> {
    let body = get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    )?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body);
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A GET over plain HTTP/1.0 (no chunked answers), for a Prometheus on
/// loopback or reachable without TLS.
pub fn get(base: &str, path: &str) -> Result<String, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// is supported"))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {response}"))?;
    Ok(body.to_owned())
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback (scripts/prometheus.sh builds it once),
/// with `config` as its prometheus.yml; it stops with the test.
pub struct Prometheus {
    _proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(config: &str) -> Prometheus {
        let out = std::process::Command::new(repo().join("scripts/prometheus.sh"))
            .output()
            .expect("scripts/prometheus.sh");
        assert!(out.status.success(), "scripts/prometheus.sh failed");
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "echo started; exec {bin} --config.file={} --storage.tsdb.path={} --web.listen-address=127.0.0.1:{port} >{} 2>&1",
            file.display(),
            dir.path().join("data").display(),
            dir.path().join("prometheus.log").display()
        ));
        let (proc, _) = Proc::spawn(cmd, |l| l == "started");
        Prometheus {
            _proc: proc,
            port,
            _dir: dir,
        }
    }

    /// Its base URL, for [`check`] and [`instant`].
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
