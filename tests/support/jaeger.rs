//! A Jaeger (v2, an OpenTelemetry Collector distribution) on loopback:
//! an OTLP/HTTP receiver and the query API over in-memory storage. Built
//! once by scripts/jaeger.sh; it stops with the test.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::dashboard::get;
use super::{Proc, free_port, repo};

pub struct Jaeger {
    _proc: Proc,
    /// The OTLP/HTTP receiver's port on 127.0.0.1.
    pub otlp_port: u16,
    /// The query API's port on 127.0.0.1.
    pub query_port: u16,
    _dir: tempfile::TempDir,
}

impl Jaeger {
    /// Starts Jaeger and waits (30 s at most) until its query API answers.
    pub fn start() -> Jaeger {
        let out = std::process::Command::new(repo().join("scripts/jaeger.sh"))
            .output()
            .expect("scripts/jaeger.sh");
        assert!(
            out.status.success(),
            "scripts/jaeger.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (otlp_port, query_port, query_grpc_port) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("jaeger.yaml");
        // Every listener on 127.0.0.1; no self-telemetry listener.
        std::fs::write(
            &config,
            format!(
                r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 10000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"#
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "echo started; exec {bin} --config file:{} >{} 2>&1",
            config.display(),
            dir.path().join("jaeger.log").display()
        ));
        let (proc, _) = Proc::spawn(cmd, |l| l == "started");
        let jaeger = Jaeger {
            _proc: proc,
            otlp_port,
            query_port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while jaeger.services().is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(jaeger._dir.path().join("jaeger.log"))
                    .unwrap_or_default();
                panic!("jaeger's query API did not answer within 30 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        jaeger
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    fn query(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    /// The services that reported spans.
    pub fn services(&self) -> Result<Value, String> {
        let body = get(&self.query(), "/api/services")?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// The traces of `service` (Jaeger's JSON: `data[].spans[]`), waiting
    /// (30 s at most) until `done` accepts them; the last answer either way.
    pub fn traces(&self, service: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let traces = get(
                &self.query(),
                &format!("/api/traces?service={service}&limit=100"),
            )
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default();
            if done(&traces) || Instant::now() > deadline {
                return traces;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A span's tag `key`, as JSON.
pub fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}
