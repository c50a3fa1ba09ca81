//! Injection decisions and the patch, applied to real pod objects.

use serde_json::json;

use super::*;

fn cfg(native: bool) -> InjectConfig {
    InjectConfig {
        image: "tollgate:0.1.0".into(),
        pull_policy: None,
        controller_url: "https://tollgate.tollgate-system.svc:9443".into(),
        controller_ca: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
        audience: "tollgate".into(),
        native_sidecars: native,
        controller_name: "tollgate-controller".into(),
        extra_args: vec!["--redis-url=redis://redis:6379/0".into()],
        extra_env: vec![(
            "TOLLGATE_REDIS_CA_PEM".into(),
            "-----BEGIN CERTIFICATE-----\n...".into(),
        )],
    }
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn server_pod() -> Value {
    json!({
        "metadata": {"name": "kms", "labels": {"app": "kms"}},
        "spec": {"containers": [{"name": "kubernetes-mcp-server", "image": "kms", "ports": [{"containerPort": 8081, "name": "http"}]}]}
    })
}

/// The injected container's arguments.
fn args_of(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// Applies the patch the way the apiserver will.
fn injected(route: Route, v: Value, native: bool) -> Value {
    let Outcome::Inject(patch) = decide(route, &pod(v.clone()), &cfg(native)).unwrap() else {
        panic!("expected an injection for {v}")
    };
    let mut doc = v;
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

#[test]
fn a_native_sidecar_with_everything_it_needs() {
    let out = injected(Route::Namespace, server_pod(), true);
    assert_eq!(out["metadata"]["labels"]["tollgate.dev/sidecar"], "true");
    let c = &out["spec"]["initContainers"][0];
    assert_eq!(
        (c["name"].as_str(), c["restartPolicy"].as_str()),
        (Some("tollgate"), Some("Always"))
    );
    assert_eq!(
        out["spec"]["containers"].as_array().unwrap().len(),
        1,
        "the server container is untouched"
    );
    let args = args_of(c);
    assert_eq!(
        args,
        [
            "proxy",
            "--controller",
            "https://tollgate.tollgate-system.svc:9443",
            "--token-file",
            "/var/run/secrets/tollgate/token",
            "--snapshot-file",
            "/var/run/tollgate/snapshot.json",
            "--upstream",
            "http://127.0.0.1:8081",
            "--listen",
            "0.0.0.0:8080",
            "--admin-listen",
            "0.0.0.0:9901",
            "--redis-url=redis://redis:6379/0"
        ]
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        c["env"][1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        c["env"][2]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.uid",
        "approval objects name the pod as their owner"
    );
    assert_eq!(
        c["env"][3],
        json!({"name": "TOLLGATE_CONTROLLER_CA_PEM", "value": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"}),
        "the sidecar trusts exactly the controller's CA for the push channel"
    );
    assert_eq!(
        c["env"][4],
        json!({"name": "TOLLGATE_REDIS_CA_PEM", "value": "-----BEGIN CERTIFICATE-----\n..."}),
        "the controller's --sidecar-env values follow its own"
    );
    assert_eq!(
        c["ports"][0],
        json!({"name": "mcp", "containerPort": 8080, "protocol": "TCP"})
    );
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let token = &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        (token["audience"].as_str(), token["path"].as_str()),
        (Some("tollgate"), Some("token"))
    );
    assert_eq!(out["spec"]["volumes"][1]["emptyDir"]["sizeLimit"], "4Mi");
}

#[test]
fn a_regular_container_where_native_sidecars_are_unavailable() {
    let out = injected(Route::Namespace, server_pod(), false);
    assert!(out["spec"]["initContainers"].is_null());
    let c = &out["spec"]["containers"][1];
    assert_eq!(c["name"], "tollgate");
    assert!(c["restartPolicy"].is_null());
}

#[test]
fn annotations_set_ports_path_resources_and_fail_open() {
    let mut v = server_pod();
    v["metadata"]["annotations"] = json!({
        "tollgate.dev/listen-port": "9000", "tollgate.dev/upstream-port": "3000", "tollgate.dev/upstream-path": "/api",
        "tollgate.dev/fail-open": "true", "tollgate.dev/sidecar-cpu": "100m", "tollgate.dev/sidecar-memory": "128Mi"
    });
    let out = injected(Route::Namespace, v, true);
    let c = &out["spec"]["initContainers"][0];
    let args = c["args"].to_string();
    assert!(
        args.contains("\"http://127.0.0.1:3000/api\"")
            && args.contains("\"0.0.0.0:9000\"")
            && args.ends_with(",\"--fail-open\",\"--redis-url=redis://redis:6379/0\"]"),
        "{args}"
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    assert_eq!(c["resources"]["limits"], json!({"memory": "128Mi"}));
}

#[test]
fn bad_annotations_refuse_the_pod_with_a_reason() {
    for (k, v, want) in [
        ("tollgate.dev/listen-port", "http", "is not a port"),
        ("tollgate.dev/upstream-port", "70000", "is not a port"),
        ("tollgate.dev/upstream-path", "mcp", "must be a path"),
        (
            "tollgate.dev/fail-open",
            "yes",
            "must be \"true\" or \"false\"",
        ),
        (
            "tollgate.dev/sidecar-memory",
            "lots",
            "is not a Kubernetes quantity",
        ),
        ("tollgate.dev/listen-port", "8081", "must differ"),
    ] {
        let mut p = server_pod();
        p["metadata"]["annotations"] = json!({ k: v });
        let err = decide(Route::Namespace, &pod(p), &cfg(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{k}={v}: {err}");
    }
}

#[test]
fn a_jwks_configmap_gives_the_sidecar_jwt_identity() {
    let mut v = server_pod();
    v["metadata"]["annotations"] = json!({
        "tollgate.dev/jwks-configmap": "agents-idp",
        "tollgate.dev/jwt-issuer": "https://idp.example",
        "tollgate.dev/jwt-audience": "kms",
        "tollgate.dev/require-identity": "true"
    });
    let out = injected(Route::Namespace, v, true);
    let c = &out["spec"]["initContainers"][0];
    let args = args_of(c);
    for want in [
        "--identity=jwt",
        "--jwks-file=/etc/tollgate/jwks/jwks.json",
        "--jwt-issuer=https://idp.example",
        "--jwt-audience=kms",
        "--require-identity",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    // The ConfigMap, from the pod's own namespace, mounted as a directory
    // (so the kubelet's updates reach the sidecar), read-only.
    let volume = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tollgate-jwks")
        .unwrap();
    assert_eq!(
        volume["configMap"],
        json!({"name": "agents-idp", "items": [{"key": "jwks.json", "path": "jwks.json"}]})
    );
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tollgate-jwks")
        .unwrap();
    assert_eq!(
        mount,
        &json!({"name": "tollgate-jwks", "mountPath": "/etc/tollgate/jwks", "readOnly": true})
    );
    assert!(mount.get("subPath").is_none());

    // An issuer alone: its keys are discovered, nothing is mounted.
    let mut v = server_pod();
    v["metadata"]["annotations"] =
        json!({"tollgate.dev/jwt-issuer": "https://idp.example/realms/agents"});
    let out = injected(Route::Namespace, v, true);
    let c = &out["spec"]["initContainers"][0];
    let args = args_of(c);
    assert!(
        args.contains(&"--identity=jwt")
            && args.contains(&"--jwt-issuer=https://idp.example/realms/agents")
            && !args.iter().any(|a| a.starts_with("--jwks-file")),
        "{args:?}"
    );
    assert!(!out.to_string().contains("tollgate-jwks"));

    // Without the annotation: no identity flags, no extra volume.
    let plain = injected(Route::Namespace, server_pod(), true);
    assert!(!plain.to_string().contains("jwks"));
}

#[test]
fn bad_jwt_annotations_refuse_the_pod_with_a_reason() {
    for (annotations, want) in [
        (
            json!({"tollgate.dev/jwt-audience": "kms"}),
            "needs tollgate.dev/jwks-configmap",
        ),
        (
            json!({"tollgate.dev/jwt-issuer": "http://idp.example"}),
            "must be an https:// URL",
        ),
        (
            json!({"tollgate.dev/jwks-configmap": "Agents_IdP"}),
            "is not a ConfigMap name",
        ),
        (
            json!({"tollgate.dev/jwks-configmap": "idp", "tollgate.dev/jwt-audience": " "}),
            "must be a non-empty string",
        ),
        (
            json!({"tollgate.dev/jwks-configmap": "idp", "tollgate.dev/require-identity": "yes"}),
            "must be \"true\" or \"false\"",
        ),
    ] {
        let mut p = server_pod();
        p["metadata"]["annotations"] = annotations.clone();
        let err = decide(Route::Namespace, &pod(p), &cfg(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{annotations}: {err}");
    }
    // Two identity modes at once would crash the sidecar: refused up front.
    let mut with_kubernetes = cfg(true);
    with_kubernetes
        .extra_args
        .push("--identity=kubernetes".into());
    let mut p = server_pod();
    p["metadata"]["annotations"] = json!({"tollgate.dev/jwks-configmap": "idp"});
    let err = decide(Route::Namespace, &pod(p), &with_kubernetes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sidecar.identity.mode"), "{err}");
}

#[test]
fn port_clashes_are_refused() {
    let mut p = server_pod();
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8081, "name": "mcp"}]);
    assert!(
        decide(Route::Namespace, &pod(p), &cfg(true))
            .unwrap_err()
            .to_string()
            .contains("declares a port named \"mcp\"")
    );
    let mut p = server_pod();
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
    assert!(
        decide(Route::Namespace, &pod(p), &cfg(true))
            .unwrap_err()
            .to_string()
            .contains("uses port 8080")
    );
}

#[test]
fn who_is_injected() {
    let with_label = |labels: Value| {
        let mut p = server_pod();
        p["metadata"]["labels"] = labels;
        pod(p)
    };
    let c = cfg(true);
    // Opted out: the pod label wins over the namespace.
    assert!(matches!(
        decide(
            Route::Namespace,
            &with_label(json!({"tollgate.dev/inject": "disabled"})),
            &c
        ),
        Ok(Outcome::Skip(_))
    ));
    // The pod webhook only injects pods labelled enabled.
    assert!(matches!(
        decide(Route::Pod, &with_label(json!({"app": "x"})), &c),
        Ok(Outcome::Skip(_))
    ));
    assert!(matches!(
        decide(
            Route::Pod,
            &with_label(json!({"tollgate.dev/inject": "enabled"})),
            &c
        ),
        Ok(Outcome::Inject(_))
    ));
    // Never the controller itself.
    assert!(matches!(
        decide(
            Route::Namespace,
            &with_label(json!({"app.kubernetes.io/name": "tollgate-controller"})),
            &c
        ),
        Ok(Outcome::Skip(_))
    ));
    // Never twice: a pod patched once (or carrying the container) is left alone.
    let once = injected(Route::Namespace, server_pod(), true);
    assert!(matches!(
        decide(Route::Namespace, &pod(once.clone()), &c),
        Ok(Outcome::Skip("the sidecar is already there"))
    ));
    let mut only_container = once;
    only_container["metadata"]["labels"] = json!({"app": "kms"});
    assert!(matches!(
        decide(Route::Namespace, &pod(only_container), &c),
        Ok(Outcome::Skip("the sidecar is already there"))
    ));
    // A pod without any labels still gets the sidecar label.
    let mut bare = server_pod();
    bare["metadata"] = json!({"name": "bare"});
    assert_eq!(
        injected(Route::Namespace, bare, true)["metadata"]["labels"],
        json!({"tollgate.dev/sidecar": "true"})
    );
}

fn stdio_pod() -> Value {
    json!({
        "metadata": {"name": "truenas", "labels": {"app": "truenas"},
                     "annotations": {"tollgate.dev/transport": "stdio"}},
        "spec": {"containers": [{
            "name": "server", "image": "python:3.12-slim",
            "command": ["truenas-mcp"], "args": ["--read-only"],
            "env": [{"name": "TRUENAS_URL", "value": "https://nas"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/truenas"}]
        }], "volumes": [{"name": "cfg", "emptyDir": {}}]}
    })
}

#[test]
fn a_stdio_server_runs_behind_tollgate_from_a_copied_binary() {
    let out = injected(Route::Namespace, stdio_pod(), true);
    assert_eq!(out["metadata"]["labels"]["tollgate.dev/sidecar"], "true");
    // The init container copies the binary from the tollgate image into the
    // shared emptyDir.
    let inits = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(
        inits.len(),
        1,
        "no sidecar: tollgate is the server's process"
    );
    let install = &inits[0];
    assert_eq!(install["name"], "tollgate-install");
    assert_eq!(install["image"], "tollgate:0.1.0");
    assert!(
        install["command"].is_null(),
        "the image's entrypoint is tollgate"
    );
    assert_eq!(
        args_of(install),
        ["copy-binary", "/var/run/tollgate-bin/tollgate"]
    );
    assert_eq!(
        install["volumeMounts"],
        json!([{"name": "tollgate-bin", "mountPath": "/var/run/tollgate-bin", "readOnly": false}])
    );
    assert!(
        install["restartPolicy"].is_null(),
        "it runs once, to completion"
    );
    assert_eq!(install["securityContext"]["readOnlyRootFilesystem"], true);
    let volumes = out["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["cfg", "tollgate-token", "tollgate-state", "tollgate-bin"]
    );
    assert_eq!(volumes[3]["emptyDir"]["sizeLimit"], "64Mi");

    // The server container: same image, its command wrapped.
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "python:3.12-slim");
    assert_eq!(c["command"], json!(["/var/run/tollgate-bin/tollgate"]));
    assert_eq!(
        args_of(c),
        [
            "proxy",
            "--controller",
            "https://tollgate.tollgate-system.svc:9443",
            "--token-file",
            "/var/run/secrets/tollgate/token",
            "--snapshot-file",
            "/var/run/tollgate/snapshot.json",
            "--listen",
            "0.0.0.0:8080",
            "--admin-listen",
            "0.0.0.0:9901",
            "--redis-url=redis://redis:6379/0",
            "--upstream-command",
            "--",
            "truenas-mcp",
            "--read-only"
        ]
    );
    let names = |field: &str, key: &str| -> Vec<String> {
        c[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("env", "name"),
        [
            "TRUENAS_URL",
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_UID",
            "TOLLGATE_CONTROLLER_CA_PEM",
            "TOLLGATE_REDIS_CA_PEM"
        ],
        "the server keeps its environment"
    );
    assert_eq!(
        names("volumeMounts", "mountPath"),
        [
            "/etc/truenas",
            "/var/run/secrets/tollgate",
            "/var/run/tollgate",
            "/var/run/tollgate-bin"
        ]
    );
    assert_eq!(c["volumeMounts"][3]["readOnly"], true);
    assert_eq!(names("ports", "name"), ["mcp", "tollgate-admin"]);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9901);

    // A second webhook call (reinvocation) leaves it alone.
    assert!(matches!(
        decide(Route::Namespace, &pod(out), &cfg(true)).unwrap(),
        Outcome::Skip(_)
    ));
}

#[test]
fn the_stdio_command_can_come_from_an_annotation_and_a_named_container() {
    let mut p = stdio_pod();
    let spec = &mut p["spec"]["containers"];
    spec[0]["command"] = Value::Null;
    spec[0]["args"] = Value::Null;
    spec.as_array_mut().unwrap().insert(
        0,
        json!({"name": "helper", "image": "busybox", "command": ["sleep", "inf"]}),
    );
    p["metadata"]["annotations"] = json!({
        "tollgate.dev/transport": "stdio",
        "tollgate.dev/stdio-container": "server",
        "tollgate.dev/stdio-command": r#"["uvx", "truenas-mcp", "--read-only"]"#,
    });
    let out = injected(
        Route::Pod,
        {
            p["metadata"]["labels"]["tollgate.dev/inject"] = json!("enabled");
            p
        },
        false,
    );
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers[0]["command"],
        json!(["sleep", "inf"]),
        "untouched"
    );
    assert!(containers[0]["args"].is_null());
    let args = args_of(&containers[1]);
    assert_eq!(
        args[args.len() - 5..],
        [
            "--upstream-command",
            "--",
            "uvx",
            "truenas-mcp",
            "--read-only"
        ]
    );
    assert_eq!(containers.len(), 2, "no sidecar container either");
}

#[test]
fn stdio_pods_the_webhook_cannot_wrap_are_refused_with_what_to_add() {
    let no_command = |p: &mut Value| {
        p["spec"]["containers"][0]["command"] = Value::Null;
        p["spec"]["containers"][0]["args"] = Value::Null;
    };
    let annotate = |p: &mut Value, k: &str, v: &str| {
        p["metadata"]["annotations"][k] = json!(v);
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(no_command),
            "set the container's `command` (and `args`) in the pod spec, or the annotation tollgate.dev/stdio-command",
        ),
        (
            Box::new(move |p| {
                no_command(p);
                p["spec"]["containers"][0]["args"] = json!(["--read-only"]);
            }),
            "its command is left to its image",
        ),
        (
            Box::new(|p| {
                p["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "b", "image": "b", "command": ["b"]}))
            }),
            "the pod has 2 containers: name the one that speaks MCP on stdio with the annotation tollgate.dev/stdio-container",
        ),
        (
            Box::new(move |p| annotate(p, "tollgate.dev/stdio-container", "nope")),
            "the pod has no container \"nope\"",
        ),
        (
            Box::new(move |p| {
                no_command(p);
                annotate(p, "tollgate.dev/stdio-command", "npx my-server")
            }),
            "must be a JSON array of strings",
        ),
        (
            Box::new(move |p| {
                no_command(p);
                annotate(p, "tollgate.dev/stdio-command", "[]")
            }),
            "the command is empty",
        ),
        (
            Box::new(move |p| annotate(p, "tollgate.dev/stdio-command", r#"["srv"]"#)),
            "keep one of them",
        ),
        (
            Box::new(move |p| annotate(p, "tollgate.dev/upstream-port", "9000")),
            "a stdio server has none",
        ),
        (
            Box::new(move |p| annotate(p, "tollgate.dev/transport", "grpc")),
            "must be \"http\"",
        ),
        (
            Box::new(move |p| {
                annotate(p, "tollgate.dev/transport", "http");
                annotate(p, "tollgate.dev/stdio-command", r#"["srv"]"#)
            }),
            "applies to stdio servers",
        ),
    ];
    for (edit, want) in cases {
        let mut p = stdio_pod();
        edit(&mut p);
        let err = decide(Route::Namespace, &pod(p.clone()), &cfg(true))
            .expect_err(&format!("refused: {p}"));
        assert!(err.to_string().contains(want), "{p}\n{err}");
    }
}
