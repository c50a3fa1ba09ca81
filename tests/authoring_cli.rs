//! The authoring commands as a user runs them: `check` reporting every
//! problem of every document (and tool patterns a real server does not
//! have), `scan` reading kubernetes-mcp-server's own tool list, `test`
//! running policy tests, and log flags only on the commands that log.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use support::KubeStack;

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const FIXTURE: &str = "tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json";

#[test]
fn check_reports_every_problem_of_every_document_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a.yaml",
        r#"apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: a}
spec:
  defaultAction: deny
  rules:
    - name: clone
      tools: [vm_clone]
      action: Permit
      argument: []
      rateLimits: [{requests: "5", window: 1w}]
    - name: bad name
      tools: [on]
      action: Allow
      arguments: [{pointer: /n, operator: Matches, value: "(x"}]
"#,
    );
    write(
        d,
        "b.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: b}\nspec:\n  defaultAction: Deny\n  defaultAction: Allow\n",
    );
    write(
        d,
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n",
    );
    write(
        d,
        "typo.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicyy\nmetadata: {name: t}\nspec: {defaultAction: Deny}\n",
    );
    write(
        d,
        "more/c.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: ClusterMcpToolPolicy\nmetadata: {name: c}\nspec: {defaultAction: Allow, namespaceSelector: {matchLabels: {team: a}}}\n",
    );
    let path = d.to_str().unwrap();

    let out = tollgate(&["check", path]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for want in [
        "a.yaml: spec.defaultAction: unknown variant `deny`, expected `Allow` or `Deny`; did you mean `Deny`? (values are case-sensitive)",
        "a.yaml: spec.rules[0].action: unknown variant `Permit`, expected one of `Allow`, `Deny`, `RequireApproval`",
        "a.yaml: spec.rules[0].argument: unknown field `argument`; did you mean `arguments`?",
        "a.yaml: spec.rules[0].rateLimits[0].requests: invalid type: string \"5\", expected an integer",
        "a.yaml: spec.rules[1].tools[0]: invalid type: boolean `true`",
        // What compile finds beside them.
        "a.yaml: spec.rules[0].rateLimits[0].window: \"1w\" is not a duration",
        "a.yaml: spec.rules[1].name: \"bad name\" is not a valid rule name",
        "a.yaml: spec.rules[1].arguments[0].value: \"(x\" is not a valid regex",
        // YAML, with the file, the line and the lines around it.
        "b.yaml:6:3: not valid YAML: duplicate mapping key: defaultAction\n  |\n4 | spec:\n5 |   defaultAction: Deny\n6 |   defaultAction: Allow\n  |   ^",
        "typo.yaml: expected `apiVersion: tollgate.dev/v1alpha1` and `kind: McpToolPolicy` or `ClusterMcpToolPolicy`, found tollgate.dev/v1alpha1 McpToolPolicyy \"t\" (did you mean `McpToolPolicy`?)",
        "note: ",
        "deploy.yaml: skipped apps/v1 Deployment \"web\": not a policy",
        "more: a subdirectory with .yaml, .yml or .json files, not read; pass -R (--recursive) to read it",
        "10 problems",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }

    // Recursing reads the cluster policy too; refusing other kinds counts
    // the Deployment as a problem.
    let all = text(&tollgate(&["check", "-R", "--other-kinds", "error", path]));
    assert!(all.contains("11 problems"), "{all}");
    assert!(all.contains("deploy.yaml: expected `apiVersion"), "{all}");
    assert!(
        !all.contains("more/c.yaml"),
        "the cluster policy is valid: {all}"
    );

    // For CI: one JSON object.
    let out = tollgate(&["check", "-o", "json", path]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 10);
    let yaml = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"].as_str().unwrap().ends_with("b.yaml"))
        .unwrap();
    assert_eq!(
        (yaml["line"].as_u64(), yaml["column"].as_u64()),
        (Some(6), Some(3))
    );

    // Fixed, it passes: the valid documents were never the problem.
    let fixed = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("more/c.yaml"), fixed.path().join("c.yaml")).unwrap();
    std::fs::copy(d.join("deploy.yaml"), fixed.path().join("deploy.yaml")).unwrap();
    let out = tollgate(&["check", fixed.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 policy, 0 rules"));
}

#[test]
fn check_scan_and_scaffold_read_kubernetes_mcp_server_s_own_tool_list() {
    let stack = KubeStack::start();
    let url = format!("{}/mcp", stack.upstream());
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  defaultAction: Allow\n  rules:\n    - {name: no-clones, tools: [vm_clonee], action: Deny}\n",
    )
    .unwrap();
    let typo = typo.to_str().unwrap();
    // The typo passes on its own, and fails open...
    assert!(tollgate(&["check", typo]).status.success());
    // ... which the server's own list shows.
    for source in [["--upstream", url.as_str()], ["--tools", FIXTURE]] {
        let out = tollgate(&["check", typo, source[0], source[1]]);
        let all = text(&out);
        assert!(out.status.success(), "a warning is not a failure: {all}");
        assert!(
            all.contains("warning: policy p: spec.rules[0].tools[0]: \"vm_clonee\" matches none of the 26 tools the MCP server lists; did you mean \"vm_clone\"?"),
            "{all}"
        );
    }

    let out = tollgate(&["scan", "--upstream", &url]);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    let row = |tool: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("no {tool} in\n{table}"))
            .to_owned()
    };
    assert!(row("pods_list").contains(" read "), "{table}");
    assert!(row("pods_run").contains(" write "), "{table}");
    let clone = row("vm_clone");
    assert!(
        clone.contains(" destructive ") && clone.contains("annotations: destructiveHint: true"),
        "{table}"
    );
    // Where names and annotations disagree (a catalogue guessing from the
    // name calls vm_clone a read).
    let after_clone: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("vm_clone "))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert!(
        after_clone
            .iter()
            .any(|l| l.contains("but name says write (\"clone\")")),
        "{table}"
    );
    assert!(
        table.contains("26 tools: 16 read, 1 write, 9 destructive, 0 unknown"),
        "{table}"
    );

    let json: Value =
        serde_json::from_slice(&tollgate(&["scan", "--upstream", &url, "-o", "json"]).stdout)
            .unwrap();
    let vm_clone = json["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "vm_clone")
        .unwrap();
    assert_eq!(vm_clone["risk"], "destructive");
    assert_eq!(vm_clone["decidedBy"], serde_json::json!(["annotations"]));

    // The scaffold passes check, without warnings, against the same server.
    let out = tollgate(&[
        "scan",
        "--upstream",
        &url,
        "--scaffold",
        "--name",
        "kms",
        "--namespace",
        "agents",
    ]);
    assert!(out.status.success());
    let scaffold = dir.path().join("scaffold.yaml");
    std::fs::write(&scaffold, &out.stdout).unwrap();
    let out = tollgate(&["check", scaffold.to_str().unwrap(), "--upstream", &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    let yaml = String::from_utf8_lossy(&std::fs::read(&scaffold).unwrap()).into_owned();
    assert!(
        yaml.contains("        - vm_clone ")
            && yaml.contains("# destructive: annotations: destructiveHint: true"),
        "{yaml}"
    );
}

#[test]
fn policy_tests_print_a_table_and_fail_on_any_mismatch() {
    let out = tollgate(&["test", "docs/examples/tests/"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("Test Summary: 22 tests passed and 0 tests failed"),
        "{all}"
    );

    // A typo in a Deny rule is caught by a test of what it must deny.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "policy.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  defaultAction: Allow\n  rules:\n    - {name: no-clones, tools: [vm_clonee], action: Deny}\n",
    );
    write(
        dir.path(),
        "tests/clones.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicyTest\nmetadata: {name: clones}\npolicies: [../policy.yaml]\ncalls:\n  - {name: no clones, tool: vm_clone, expect: {decision: denied, rule: no-clones}}\n  - {tool: pods_list, expect: {decision: allowed}}\n",
    );
    let out = tollgate(&["test", dir.path().to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let failing = all.lines().find(|l| l.contains("no clones")).unwrap();
    assert!(
        failing.contains("Fail") && failing.contains("expected the call to be denied"),
        "{all}"
    );
    assert!(
        all.contains("Test Summary: 1 tests passed and 1 tests failed"),
        "{all}"
    );
    let json: Value = serde_json::from_slice(
        &tollgate(&["test", "-o", "json", dir.path().to_str().unwrap()]).stdout,
    )
    .unwrap();
    assert_eq!(json["tests"][0]["results"][0]["result"], "fail");
}

#[test]
fn log_flags_are_only_on_the_commands_that_log() {
    for command in ["check", "test", "scan", "crdgen"] {
        let help = text(&tollgate(&[command, "--help"]));
        assert!(
            !help.contains("--log"),
            "{command} --help offers log flags:\n{help}"
        );
    }
    for command in ["proxy", "controller"] {
        let help = text(&tollgate(&[command, "--help"]));
        assert!(
            help.contains("--log-format") && help.contains("--log <LOG>"),
            "{command} --help lacks log flags:\n{help}"
        );
    }
    let out = tollgate(&["check", "--log-format", "json", "docs/examples/"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn check_names_budgets_an_earlier_rule_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let vm = "{group: kubevirt.io, kind: VirtualMachine, verbs: [create, patch]}";
    let cpu = "budgets: [{resource: cpu, amount: \"64\", window: 1h}]";
    let check = |name: &str, rules: &str| {
        write(
            dir.path(),
            name,
            &format!(
                "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n{rules}"
            ),
        );
        tollgate(&["check", dir.path().join(name).to_str().unwrap()])
    };
    let out = check(
        "shadowed.yaml",
        &format!(
            "    - {{name: vms, resources: [{vm}], action: Allow}}\n    - {{name: cpu, resources: [{vm}], action: Allow, {cpu}}}\n"
        ),
    );
    let all = text(&out);
    assert!(out.status.success(), "a warning is not a failure: {all}");
    assert!(
        all.contains("warning: policy p: spec.rules[1]: the budgets and caps of rule \"cpu\" never apply: rule \"vms\" allows every object first"),
        "{all}"
    );
    // All of the VM's budgets on one rule: nothing to warn about.
    let out = check(
        "one-rule.yaml",
        &format!("    - {{name: vms, resources: [{vm}], action: Allow, {cpu}}}\n"),
    );
    assert!(
        out.status.success() && !text(&out).contains("warning"),
        "{}",
        text(&out)
    );
}
