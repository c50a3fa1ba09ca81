//! The first seed's pieces, shared by the tests that run it: the stand-in
//! TrueNAS API (tests/peers/truenas-api.py), the TrueNAS MCP server from
//! PyPI in the test-deps venv, the seed's policy as `tollgate import`
//! prints it, and the agent's script with what every run must show.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::*;

/// The stand-in TrueNAS API, with its port.
pub struct TrueNas {
    pub proc: Proc,
    pub port: u16,
}

impl TrueNas {
    pub fn start() -> TrueNas {
        let mut cmd = Command::new("python3");
        cmd.arg(peers().join("truenas-api.py")).args([
            "--port",
            "0",
            "--api-key",
            "test-key",
            "--max-lifetime",
            "600",
        ]);
        let (proc, line) = Proc::spawn(cmd, |l| l.starts_with('{'));
        let v: Value = serde_json::from_str(&line).unwrap();
        TrueNas {
            proc,
            port: v["port"].as_u64().unwrap() as u16,
        }
    }

    /// `env` and the server, configured for this API: a command line.
    pub fn server(&self) -> Vec<String> {
        let venv = peers().join("truenas/venv/bin/truenas-mcp-server");
        assert!(
            venv.exists(),
            "the TrueNAS MCP server is not installed: run scripts/test-deps.sh (make test does)"
        );
        vec![
            "env".into(),
            format!("TRUENAS_URL=http://127.0.0.1:{}", self.port),
            "TRUENAS_API_KEY=test-key".into(),
            venv.display().to_string(),
        ]
    }

    /// What the API counted.
    pub fn counts(&self) -> Value {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{}/_standin/counts').read().decode())",
                self.port
            ))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The seed's policy (plus reads), imported by the binary as a user would;
/// its minute window made an hour, so that the count of 100 calls cannot
/// depend on their finishing within one minute.
pub fn imported_policy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let json = std::fs::read_to_string(repo_file("tests/fixtures/truenas/policy.json")).unwrap();
    assert_eq!(json.matches("\"minute\"").count(), 1);
    let source = dir.path().join("policy.json");
    std::fs::write(&source, json.replace("\"minute\"", "\"hour\"")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["import", "policylayer"])
        .arg(&source)
        .args(["--name", "truenas", "--tool", "vm_clone=clone_snapshot"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    (dir, path)
}

/// One agent session: list, three reads, then 100 clones to distinct targets.
pub fn script(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("script.json");
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "list_pools", "arguments": {}},
        {"op": "call", "name": "list_snapshots", "arguments": {}},
        {"op": "call", "name": "list_datasets", "arguments": {}},
        {"op": "repeat", "n": 100, "name": "clone_snapshot", "concurrency": 4, "noResults": true,
         "arguments": {"snapshot": "tank/vms/golden@base", "target": "tank/vms/clone-{i}"}},
        {"op": "call", "name": "delete_dataset", "arguments": {"dataset": "tank/vms/golden"}}
    ]);
    std::fs::write(&path, steps.to_string()).unwrap();
    path
}

/// What every run must show: the list filtered, reads through, exactly
/// 30 of 100 clones through (and 30 at the API), the delete denied.
pub fn check(lines: &[Value], api: &TrueNas) {
    let listed: Vec<String> = serde_json::from_value(lines[0].clone()).unwrap();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "clone_snapshot",
            "list_datasets",
            "list_pools",
            "list_snapshots"
        ],
        "everything the policy denies outright is hidden"
    );
    for read in &lines[1..4] {
        let a = Answer::of_result(read);
        assert!(a.is_allowed(), "a read passes: {read}");
    }
    let clones = &lines[4];
    assert_eq!(clones["ok"], 30, "{clones}");
    assert_eq!(clones["isError"], 70, "{clones}");
    let delete = Answer::of_result(&lines[5]);
    assert_eq!(delete.reason(), Some("default"), "{:?}", lines[5]);
    let counts = api.counts();
    assert_eq!(
        counts["writes"], 30,
        "writes that reached TrueNAS: {counts}"
    );
    assert_eq!(counts["clones"], 30, "{counts}");
}
