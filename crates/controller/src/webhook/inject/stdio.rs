//! In-pod tollgate for MCP servers that speak stdio
//! (`tollgate.dev/transport: stdio`), without changing their image.
//!
//! A stdio server has no port to put a sidecar in front of, so tollgate
//! becomes the server container's own process: an init container copies
//! the tollgate binary (static, from the tollgate image) into a shared
//! emptyDir, and the container runs `tollgate proxy --controller …
//! --upstream-command -- <its command>`, serving Streamable HTTP on the
//! `mcp` port and starting one server process per MCP session, with its
//! rules from the controller as for the sidecar.
//!
//! The webhook cannot read an image's ENTRYPOINT, so the command must be in
//! the pod spec (`command`, with `args`) or in the annotation
//! `tollgate.dev/stdio-command`; otherwise the pod is refused with a
//! message that says which to add.

use json_patch::Patch;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, Pod, Probe, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    ADMIN_PORT, BIN_DIR, BIN_VOLUME, InjectConfig, STDIO_COMMAND, STDIO_CONTAINER, Settings,
    TRANSPORT, UPSTREAM_PATH, UPSTREAM_PORT, base_ops, proxy_args, proxy_env, proxy_ports,
    restricted,
};

/// The init container that copies the binary.
pub(crate) const INSTALL_CONTAINER: &str = "tollgate-install";

/// The container to run behind tollgate, and its command.
pub(crate) struct Target {
    index: usize,
    name: String,
    command: Vec<String>,
}

/// Why the webhook refuses a pod that asks for (or half-asks for) stdio
/// injection; the message tells the user what to add or change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StdioError {
    #[error("annotation {0} applies to stdio servers: add {t}: stdio, or remove it", t = TRANSPORT)]
    NotStdio(&'static str),
    #[error(
        "annotation {t}: {0:?} must be \"http\" (a sidecar in front of the server's port) or \"stdio\" (the server run behind tollgate)",
        t = TRANSPORT
    )]
    Transport(String),
    #[error(
        "annotation {0} names the port of an HTTP server; a stdio server has none: remove it, or the annotation {t}: stdio",
        t = TRANSPORT
    )]
    HttpOnly(&'static str),
    #[error("annotation {a}: the pod has no container {0:?}", a = STDIO_CONTAINER)]
    NoSuchContainer(String),
    #[error(
        "the pod has {0} containers: name the one that speaks MCP on stdio with the annotation {a}",
        a = STDIO_CONTAINER
    )]
    WhichContainer(usize),
    #[error(
        "annotation {a}: {0:?} must be a JSON array of strings, e.g. [\"npx\", \"-y\", \"my-mcp-server\"]",
        a = STDIO_COMMAND
    )]
    BadCommand(String),
    #[error("annotation {a}: the command is empty", a = STDIO_COMMAND)]
    EmptyCommand,
    #[error(
        "container {0:?} has a command or args in its spec and the annotation {a}: keep one of them",
        a = STDIO_COMMAND
    )]
    TwoCommands(String),
    #[error(
        "container {0:?} speaks MCP on stdio, but its command is left to its image, which the webhook cannot read; tollgate runs it as `tollgate proxy --upstream-command -- <command>`: set the container's `command` (and `args`) in the pod spec, or the annotation {a} to a JSON array such as [\"npx\", \"-y\", \"my-mcp-server\"]",
        a = STDIO_COMMAND
    )]
    NoCommand(String),
}

/// The stdio target of `pod`, if it asks for one; an error says what to
/// add or change.
pub(crate) fn target(pod: &Pod) -> Result<Option<Target>, StdioError> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let get = |k: &str| annotations.get(k).map(String::as_str);
    match get(TRANSPORT) {
        None | Some("http") => {
            for k in [STDIO_CONTAINER, STDIO_COMMAND] {
                if get(k).is_some() {
                    return Err(StdioError::NotStdio(k));
                }
            }
            return Ok(None);
        }
        Some("stdio") => {}
        Some(v) => return Err(StdioError::Transport(v.to_owned())),
    }
    for k in [UPSTREAM_PORT, UPSTREAM_PATH] {
        if get(k).is_some() {
            return Err(StdioError::HttpOnly(k));
        }
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let (index, container) = match get(STDIO_CONTAINER) {
        Some(name) => containers
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
            .ok_or_else(|| StdioError::NoSuchContainer(name.to_owned()))?,
        None if containers.len() == 1 => (0, &containers[0]),
        None => return Err(StdioError::WhichContainer(containers.len())),
    };
    let command = match (get(STDIO_COMMAND), &container.command) {
        (Some(json), _) => {
            let command: Vec<String> =
                serde_json::from_str(json).map_err(|_| StdioError::BadCommand(json.to_owned()))?;
            if command.is_empty() {
                return Err(StdioError::EmptyCommand);
            }
            if container.command.is_some() || container.args.is_some() {
                return Err(StdioError::TwoCommands(container.name.clone()));
            }
            command
        }
        (None, Some(cmd)) if !cmd.is_empty() => cmd
            .iter()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect(),
        (None, _) => return Err(StdioError::NoCommand(container.name.clone())),
    };
    Ok(Some(Target {
        index,
        name: container.name.clone(),
        command,
    }))
}

/// The patch: the binary installed by an init container, the server's
/// container run behind `tollgate proxy --upstream-command`.
pub(crate) fn patch(pod: &Pod, cfg: &InjectConfig, s: &Settings, target: &Target) -> Patch {
    let spec = pod.spec.clone().unwrap_or_default();
    let bin = Volume {
        name: BIN_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ops = base_ops(pod, cfg, s, vec![bin]);
    let mut add = |path: String, value: Value| {
        ops.push(serde_json::json!({ "op": "add", "path": path, "value": value }))
    };
    let bin_mount = |read_only| VolumeMount {
        name: BIN_VOLUME.into(),
        mount_path: BIN_DIR.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let install = Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.pull_policy.clone(),
        args: Some(vec!["copy-binary".into(), format!("{BIN_DIR}/tollgate")]),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".into(), Quantity("10m".into())),
                    ("memory".into(), Quantity("16Mi".into())),
                ]
                .into(),
            ),
            limits: Some([("memory".into(), Quantity("64Mi".into()))].into()),
            ..Default::default()
        }),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![bin_mount(false)]),
        ..Default::default()
    };
    if spec.init_containers.is_none() {
        add("/spec/initContainers".into(), Value::Array(Vec::new()));
    }
    add(
        "/spec/initContainers/0".into(),
        serde_json::to_value(install).unwrap_or_default(),
    );

    let c = &spec.containers[target.index];
    let at = format!("/spec/containers/{}", target.index);
    let (mut args, mounts) = proxy_args(cfg, s, &[]);
    args.push("--upstream-command".into());
    args.push("--".into());
    args.extend(target.command.iter().cloned());
    add(
        format!("{at}/command"),
        serde_json::json!([format!("{BIN_DIR}/tollgate")]),
    );
    add(format!("{at}/args"), serde_json::json!(args));
    let append = |ops: &mut Vec<Value>, field: &str, present: bool, items: Vec<Value>| {
        if !present {
            ops.push(
                serde_json::json!({"op": "add", "path": format!("{at}/{field}"), "value": []}),
            );
        }
        for item in items {
            ops.push(
                serde_json::json!({"op": "add", "path": format!("{at}/{field}/-"), "value": item}),
            );
        }
    };
    let mut mounts: Vec<Value> = mounts
        .into_iter()
        .map(|m| serde_json::to_value(m).unwrap_or_default())
        .collect();
    mounts.push(serde_json::to_value(bin_mount(true)).unwrap_or_default());
    append(&mut ops, "volumeMounts", c.volume_mounts.is_some(), mounts);
    append(
        &mut ops,
        "env",
        c.env.is_some(),
        proxy_env(cfg)
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect(),
    );
    append(
        &mut ops,
        "ports",
        c.ports.is_some(),
        proxy_ports(s)
            .into_iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect(),
    );
    if c.readiness_probe.is_none() {
        // Ready only once the rules arrived (and the server's tools were
        // read, where the rules need them).
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(ADMIN_PORT),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(1),
            ..Default::default()
        };
        ops.push(serde_json::json!({"op": "add", "path": format!("{at}/readinessProbe"), "value": probe}));
    }
    tracing::debug!(container = %target.name, "injecting tollgate into a stdio MCP server container");
    serde_json::from_value(Value::Array(ops)).unwrap_or_else(|_| Patch(Vec::new()))
}
