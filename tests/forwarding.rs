//! What the proxy forwards when rules read manifests inside an argument:
//! the objects it judged, written by tollgate — never the agent's text —
//! and the agent's text untouched where no rule read it.

mod support;

use serde_json::{Value, json};
use support::upstream::{Framing, Upstream};
use support::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: manifests}
spec:
  defaultAction: Allow
  resourceMappings:
    - tools: [apply]
      group: ""
      manifest: /resource
  rules:
    - name: no-secrets
      tools: [apply]
      resources: [{group: "", kind: Secret}]
      action: Deny
"#;

/// The `resource` argument of the one `tools/call` the upstream received.
fn forwarded_resource(upstream: &Upstream) -> Value {
    let calls: Vec<Value> = upstream
        .messages()
        .into_iter()
        .filter(|m| m["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls[0]["params"]["arguments"]["resource"].clone()
}

#[tokio::test]
async fn a_judged_manifest_is_forwarded_as_the_objects_tollgate_read() {
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(POLICY);
    let proxy = start_proxy(vec![policy], &upstream.url()).await;

    let text = "# a comment the server never sees\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 'cm'   # quoted\ndata: {k: \"v\\u00e9\"}\nstatus: {ignored: true}\n---\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"two\"}}\n";
    let reply = post_json(
        proxy.listen,
        &[],
        &call(1, "apply", json!({"resource": text, "dryRun": true})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json().get("error").is_none(), "{}", reply.text());
    assert_eq!(
        forwarded_resource(&upstream),
        json!(
            "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm\"},\"data\":{\"k\":\"vé\"}}\n---\n{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"two\"}}"
        )
    );
    // Other arguments travel as they came.
    let args = &upstream.messages()[0]["params"]["arguments"];
    assert_eq!(args["dryRun"], true, "{args}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_manifest_no_rule_reads_is_forwarded_as_sent_and_a_denied_one_not_at_all() {
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(POLICY);
    let proxy = start_proxy(vec![policy], &upstream.url()).await;

    // `other` is no tool a resource rule judges: its argument is the
    // agent's, untouched (including what tollgate would refuse to read).
    let text = "x: &a 1\ny: *a\n";
    let reply = post_json(
        proxy.listen,
        &[],
        &call(1, "other", json!({"resource": text})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(forwarded_resource(&upstream), json!(text));

    // A Secret among the documents: denied, nothing forwarded.
    let secret = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
    let reply = post_json(
        proxy.listen,
        &[],
        &call(2, "apply", json!({"resource": secret})),
    )
    .await;
    let body = reply.json();
    assert_eq!(body["result"]["isError"], true, "{body}");
    assert!(
        body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("no-secrets"),
        "{body}"
    );
    // The same trick tollgate refuses inside a judged argument.
    let reply = post_json(
        proxy.listen,
        &[],
        &call(3, "apply", json!({"resource": text})),
    )
    .await;
    assert_eq!(reply.json()["result"]["isError"], true, "{}", reply.text());
    assert_eq!(
        upstream
            .messages()
            .iter()
            .filter(|m| m["method"] == "tools/call")
            .count(),
        1,
        "only the first call reached the upstream"
    );
    proxy.shutdown().await;
}
