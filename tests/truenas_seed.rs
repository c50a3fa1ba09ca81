//! The first seed for real: a TrueNAS MCP server from PyPI
//! (iflow-mcp-vespo92-truenas-mcp-server, pinned in
//! tests/peers/truenas/requirements.txt) that speaks only stdio, on a
//! stand-in TrueNAS API that counts writes (tests/peers/truenas-api.py),
//! behind the seed's PolicyLayer policy as `tollgate import` prints it —
//! through `tollgate wrap` (the agent on stdio) and through `tollgate proxy
//! --upstream-command` (Streamable HTTP in front). The agent is the MCP
//! TypeScript SDK.
//!
//! The seed's policy names `vm_clone` (the tool of the TrueNAS server its
//! page describes, which no registry here carries); this server clones with
//! `clone_snapshot` (POST /api/v2.0/zfs/snapshot/clone), so the import maps
//! the name with `--tool vm_clone=clone_snapshot`. The fixture is the seed
//! plus the reads a user allows (tests/fixtures/truenas/policy.json).

mod support;

use support::truenas::{TrueNas, check, imported_policy, script};
use support::*;

#[test]
fn the_seed_policy_caps_truenas_clones_through_tollgate_wrap() {
    let api = TrueNas::start();
    let (dir, policy) = imported_policy();
    let script = script(dir.path());
    let mut server = vec![
        env!("CARGO_BIN_EXE_tollgate").to_owned(),
        "--log".into(),
        "warn".into(),
        "wrap".into(),
        "--policy".into(),
        policy.display().to_string(),
        "--".into(),
    ];
    server.extend(api.server());
    let server: Vec<&str> = server.iter().map(String::as_str).collect();
    let lines = agent_stdio(&["script", script.to_str().unwrap()], &server);
    check(&lines, &api);
    drop(api.proc);
}

#[test]
fn the_seed_policy_caps_truenas_clones_through_upstream_command() {
    let api = TrueNas::start();
    let (dir, policy) = imported_policy();
    let script = script(dir.path());
    let mut args = vec![
        "--policy".to_owned(),
        policy.display().to_string(),
        "--upstream-command".into(),
        "--".into(),
    ];
    args.extend(api.server());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tg = tollgate(&args);
    let url = format!("http://{}/mcp", tg.listen);
    let lines = agent(
        &url,
        &["--delete-session", "script", script.to_str().unwrap()],
    );
    check(&lines, &api);
    // The same metrics as any upstream: 70 clones denied by the rate limit,
    // and the session's server process gone once the agent ended it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let m = metrics(tg.admin).await;
        let denied = sample(
            &m,
            &[
                "tollgate_tool_calls_total",
                "rule=\"clone_snapshot\"",
                "decision=\"denied\"",
                "reason=\"rate_limit\"",
            ],
        );
        assert_eq!(denied, Some(70.0), "{m}");
        let gone = eventually(std::time::Duration::from_secs(10), async || {
            sample(&metrics(tg.admin).await, &["tollgate_stdio_servers"]) == Some(0.0)
        })
        .await;
        assert!(gone, "{}", metrics(tg.admin).await);
    });
}
