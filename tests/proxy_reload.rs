//! Policy files change under a running proxy: new rules apply, broken files
//! leave the last good rules in force and say so, ConfigMap symlink swaps
//! are seen, and open streams are told to re-list tools.

mod support;

use std::time::Duration;

use support::upstream::{Framing, Upstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(allowed: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n    - {{name: r, tools: [{allowed}], action: Allow}}\n"
    )
}

/// A broken version of [`policy`]: an unknown field (`rateLimit`).
fn broken(allowed: &str) -> String {
    policy(allowed).replace("action: Allow", "action: Allow, rateLimit: []")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_applies_and_a_broken_one_keeps_the_last_good_rules() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(&policy("pods_list"));
    let proxy = start_proxy(vec![path.clone()], &up.url()).await;
    assert!(up.allows(proxy.listen, "pods_list").await);
    assert!(up.denies(proxy.listen, "vm_clone").await);
    let first_version = metrics(proxy.admin).await;

    std::fs::write(&path, policy("vm_clone")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || up
            .allows(proxy.listen, "vm_clone")
            .await)
        .await
    );
    assert!(up.denies(proxy.listen, "pods_list").await);
    let m = metrics(proxy.admin).await;
    assert_eq!(
        sample(&m, &["tollgate_policy_reloads_total{result=\"success\"}"]),
        Some(2.0)
    );
    assert_ne!(
        m.lines().find(|l| l.starts_with("tollgate_policy_info{")),
        first_version
            .lines()
            .find(|l| l.starts_with("tollgate_policy_info{"))
    );

    // Broken: an unknown field. The vm_clone rules stay in force.
    std::fs::write(&path, broken("pods_list")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || {
            sample(
                &metrics(proxy.admin).await,
                &["tollgate_policy_reload_failing"],
            ) == Some(1.0)
        })
        .await
    );
    assert!(up.allows(proxy.listen, "vm_clone").await);
    assert!(up.denies(proxy.listen, "pods_list").await);

    // Fixed again.
    std::fs::write(&path, policy("pods_list")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || up
            .allows(proxy.listen, "pods_list")
            .await)
        .await
    );
    assert_eq!(
        sample(
            &metrics(proxy.admin).await,
            &["tollgate_policy_reload_failing"]
        ),
        Some(0.0)
    );
    proxy.shutdown().await;
}

/// Reading the policy files raises file events too; if the proxy took its
/// own reads for changes, every reload would trigger the next, forever.
/// With the periodic re-read off, a reload needs a change: after a broken
/// file is read, the failed attempts must stop (and a later change must
/// still be read, so the quiet is not a dead watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_reads_never_trigger_a_reload() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(&policy("pods_list"));
    let proxy = start_proxy_with(vec![path.clone()], &up.url(), |c| {
        c.reload_interval = Duration::from_secs(3600)
    })
    .await;
    let failures = async || {
        sample(
            &metrics(proxy.admin).await,
            &["tollgate_policy_reloads_total{result=\"failure\"}"],
        )
        .unwrap_or(0.0)
    };
    // The watch is set up after start-up returns: write until a change is
    // seen, so what follows starts with the watch in place. Each write
    // replaces the file whole (as editors and the kubelet do): a plain
    // write truncates first, and a reload that reads the empty file in
    // between fails, rightly, which is not what this test is about.
    let replace = |text: String| {
        let swap = path.with_extension("swap");
        std::fs::write(&swap, text).unwrap();
        std::fs::rename(&swap, &path).unwrap();
    };
    assert!(
        eventually(Duration::from_secs(5), async || {
            replace(policy("vm_clone"));
            up.allows(proxy.listen, "vm_clone").await
        })
        .await,
        "no change was ever noticed"
    );
    assert_eq!(failures().await, 0.0);

    std::fs::write(&path, broken("tool_1")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || failures().await >= 1.0).await,
        "the broken file was never read"
    );
    // A self-triggered reload runs every ~100 ms, so with one the count
    // never rests for a second; without, it rests once the change is read.
    let mut last = 0.0;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let start = failures().await;
            holds_for(Duration::from_secs(1), async || {
                last = failures().await;
                last == start
            })
            .await
        })
        .await,
        "reload attempts never stop ({last} so far): the proxy's own reads trigger reloads"
    );
    let rested = last;
    std::fs::write(&path, broken("tool_2")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || failures().await > rested).await,
        "a change after the quiet was not read"
    );
    assert!(
        up.allows(proxy.listen, "vm_clone").await,
        "the last good rules stay"
    );
    proxy.shutdown().await;
}

/// What the kubelet does to a ConfigMap volume: files are symlinks into
/// `..data`, itself a symlink to a timestamped directory, swapped by rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up() {
    let up = Upstream::start(Framing::Json).await;
    let mount = tempfile::tempdir().unwrap();
    let m = mount.path();
    let write_version = |name: &str, allowed_tool: &str| {
        std::fs::create_dir(m.join(name)).unwrap();
        std::fs::write(m.join(name).join("policy.yaml"), policy(allowed_tool)).unwrap();
    };
    write_version("..2026_11_21_a", "pods_list");
    std::os::unix::fs::symlink("..2026_11_21_a", m.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.yaml", m.join("policy.yaml")).unwrap();

    let proxy = start_proxy_with(vec![m.to_owned()], &up.url(), |c| {
        c.reload_interval = Duration::from_secs(3600)
    })
    .await;
    assert!(up.allows(proxy.listen, "pods_list").await);

    write_version("..2026_11_21_b", "vm_clone");
    std::os::unix::fs::symlink("..2026_11_21_b", m.join("..data_tmp")).unwrap();
    std::fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
    std::fs::remove_dir_all(m.join("..2026_11_21_a")).unwrap();
    // The periodic re-read is off (1 h): only the change notification can do it.
    assert!(
        eventually(Duration::from_secs(5), async || up
            .allows(proxy.listen, "vm_clone")
            .await)
        .await
    );
    assert!(up.denies(proxy.listen, "pods_list").await);
    proxy.shutdown().await;
}

/// Some filesystems deliver no change events; the timer re-read covers them.
/// Here the change happens in a directory nobody watches: the policy path
/// is a symlink to a symlink whose target is switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_reread_catches_changes_no_watch_can_see() {
    let up = Upstream::start(Framing::Json).await;
    let root = tempfile::tempdir().unwrap();
    let (watched, hidden, versions) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    );
    for d in [&watched, &hidden, &versions] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(versions.join("v1.yaml"), policy("pods_list")).unwrap();
    std::fs::write(versions.join("v2.yaml"), policy("vm_clone")).unwrap();
    std::os::unix::fs::symlink(versions.join("v1.yaml"), hidden.join("current.yaml")).unwrap();
    std::os::unix::fs::symlink(hidden.join("current.yaml"), watched.join("policy.yaml")).unwrap();
    let proxy = start_proxy_with(vec![watched.join("policy.yaml")], &up.url(), |c| {
        c.reload_interval = Duration::from_millis(300)
    })
    .await;
    assert!(up.allows(proxy.listen, "pods_list").await);
    std::os::unix::fs::symlink(versions.join("v2.yaml"), hidden.join("next.yaml")).unwrap();
    std::fs::rename(hidden.join("next.yaml"), hidden.join("current.yaml")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || up
            .allows(proxy.listen, "vm_clone")
            .await)
        .await
    );
    assert!(up.denies(proxy.listen, "pods_list").await);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_told_to_relist_when_rules_change() {
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(&policy("pods_list"));
    let proxy = start_proxy(vec![path.clone()], &up.url()).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    stream
        .write_all(b"GET /mcp HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nMcp-Session-Id: s\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b": open").await;
    std::fs::write(&path, policy("vm_clone")).unwrap();
    read_until(&mut stream, &mut seen, b"notifications/tools/list_changed").await;
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"),
        "{text}"
    );
    proxy.shutdown().await;
}

async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{:?} not seen in {}",
        String::from_utf8_lossy(needle),
        String::from_utf8_lossy(seen)
    );
}

#[test]
fn an_invalid_policy_at_startup_is_an_error_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let refusal = |name: &str, yaml: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "proxy",
                "--upstream",
                "http://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--policy",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refusal(
        "block.yaml",
        policy("x").replace("defaultAction: Deny", "defaultAction: Block"),
    );
    assert!(
        stderr.contains("spec.defaultAction: unknown variant `Block`, expected `Allow` or `Deny`"),
        "{stderr}"
    );
    // Two problems in one file: both are named, not just the first.
    let stderr = refusal(
        "two.yaml",
        format!(
            "{}    - {{name: r, tools: ['[x'], action: Allow}}\n",
            policy("x")
        ),
    );
    for want in [
        "two.yaml: spec.rules[1].name: rule name \"r\" is used twice",
        "two.yaml: spec.rules[1].tools[0]: \"[x\" is not a valid glob",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}
