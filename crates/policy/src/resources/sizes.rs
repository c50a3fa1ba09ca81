//! How much an object a call creates consumes — vCPUs, guest memory, new
//! storage — for size budgets.
//!
//! Read from the object itself where it says (a DataVolume's or PVC's
//! storage request, a VM's CPU topology, guest memory and
//! `dataVolumeTemplates`); what only the cluster knows — a VM's
//! instancetype, a clone's source VM — is filled in when the call is judged
//! (`evaluate::measure`). What cannot be known stays unknown (`None`) — the
//! budget's `whenUnknown` decides, never a guess of zero.
//!
//! Units: CPU in millicores, memory and storage in MiB, rounded up, so a
//! budget never counts less than was asked for.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::SizeResource;

/// The storage kubernetes-mcp-server's `vm_create` gives a root disk made
/// from a DataSource when its `storage` argument is absent.
pub(crate) const VM_CREATE_DEFAULT_STORAGE: &str = "30Gi";

/// A quantity that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Kubernetes quantity; write a number with an optional suffix, e.g. \"500Gi\", \"64\", \"500m\""
)]
pub struct QuantityError(pub String);

/// A Kubernetes quantity in thousandths of its unit (`1Gi` → 1073741824000,
/// `500m` → 500). Exponent forms (`1e3`) are not accepted.
pub(crate) fn parse_milli(text: &str) -> Result<u128, QuantityError> {
    let err = || QuantityError(super::bounded(text));
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let multiplier_milli: u128 = match suffix {
        "" => 1000,
        "m" => 1,
        "k" => 1000 * 1000,
        "M" => 1000 * 1000u128.pow(2),
        "G" => 1000 * 1000u128.pow(3),
        "T" => 1000 * 1000u128.pow(4),
        "P" => 1000 * 1000u128.pow(5),
        "Ki" => 1000 << 10,
        "Mi" => 1000 << 20,
        "Gi" => 1000 << 30,
        "Ti" => 1000 << 40,
        "Pi" => 1000 << 50,
        _ => return Err(err()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || int.len() > 20 || frac.len() > 9 {
        return Err(err());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    // Round the fractional part up: never count less than was written.
    let milli = int * multiplier_milli + (frac_value * multiplier_milli).div_ceil(scale);
    Ok(milli)
}

/// A quantity in a size budget's unit (millicores, or MiB), rounded up.
pub fn in_unit(resource: SizeResource, text: &str) -> Result<u64, QuantityError> {
    let milli = parse_milli(text)?;
    let units = match resource {
        SizeResource::Cpu => milli,
        SizeResource::Storage | SizeResource::Memory => milli.div_ceil(1000 << 20),
    };
    u64::try_from(units).map_err(|_| QuantityError(super::bounded(text)))
}

/// An amount in a size budget's unit, for people: `120Gi`, `512Mi`, `2.5
/// vCPU`.
pub fn show(resource: SizeResource, amount: u64) -> String {
    match resource {
        SizeResource::Cpu if amount.is_multiple_of(1000) => format!("{} vCPU", amount / 1000),
        SizeResource::Cpu => {
            let text = format!("{}.{:03}", amount / 1000, amount % 1000);
            format!("{} vCPU", text.trim_end_matches('0'))
        }
        _ if amount == 0 => "0".to_owned(),
        _ if amount >= 1 << 20 && amount.is_multiple_of(1 << 20) => format!("{}Ti", amount >> 20),
        _ if amount >= 1 << 10 && amount.is_multiple_of(1 << 10) => format!("{}Gi", amount >> 10),
        _ => format!("{amount}Mi"),
    }
}

/// What one object consumes, per resource; `None` where it cannot be known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    /// Millicores.
    pub cpu: Option<u64>,
    /// MiB.
    pub memory: Option<u64>,
    /// MiB.
    pub storage: Option<u64>,
}

impl Sizes {
    /// Nothing of anything: an object that consumes none of these.
    pub const ZERO: Sizes = Sizes {
        cpu: Some(0),
        memory: Some(0),
        storage: Some(0),
    };

    /// The amount of `resource`.
    pub fn get(&self, resource: SizeResource) -> Option<u64> {
        match resource {
            SizeResource::Cpu => self.cpu,
            SizeResource::Memory => self.memory,
            SizeResource::Storage => self.storage,
        }
    }
}

/// A VM's instancetype, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstancetypeRef {
    /// `VirtualMachineClusterInstancetype` (the default) rather than the
    /// namespaced `VirtualMachineInstancetype`.
    pub cluster: bool,
    /// Its name.
    pub name: String,
}

/// What an object asks for, as the call says it; the cluster fills in the
/// rest in [`sizes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// What the object itself says.
    pub own: Sizes,
    /// For a VM: its instancetype, which gives CPU and memory.
    pub instancetype: Option<InstancetypeRef>,
}

/// The kinds whose size is read from their manifest.
pub(super) fn demand_of_document(group: &str, kind: &str, doc: &Value) -> Option<Demand> {
    let spec = doc.get("spec")?;
    match (group, kind) {
        ("", "PersistentVolumeClaim") => Some(Demand {
            own: Sizes {
                storage: storage_request(Some(spec)),
                ..Sizes::ZERO
            },
            instancetype: None,
        }),
        ("cdi.kubevirt.io", "DataVolume") => Some(Demand {
            own: Sizes {
                storage: data_volume_storage(spec),
                ..Sizes::ZERO
            },
            instancetype: None,
        }),
        ("kubevirt.io", "VirtualMachine") => Some(vm_demand(spec)),
        _ => None,
    }
}

/// The storage a PVC-like spec requests (`resources.requests.storage`).
fn storage_request(spec: Option<&Value>) -> Option<u64> {
    let q = spec?.pointer("/resources/requests/storage")?.as_str()?;
    in_unit(SizeResource::Storage, q).ok()
}

fn data_volume_storage(spec: &Value) -> Option<u64> {
    storage_request(spec.get("storage")).or_else(|| storage_request(spec.get("pvc")))
}

/// A VirtualMachine's spec: CPU and memory from its template (or its
/// instancetype), storage from its `dataVolumeTemplates`.
pub fn vm_demand(spec: &Value) -> Demand {
    let instancetype = spec.get("instancetype").and_then(|i| {
        Some(InstancetypeRef {
            cluster: i.get("kind").and_then(Value::as_str).is_none_or(|k| {
                !k.eq_ignore_ascii_case("VirtualMachineInstancetype")
                    && !k.eq_ignore_ascii_case("virtualmachineinstancetypes")
            }),
            name: i.get("name")?.as_str()?.to_owned(),
        })
    });
    let domain = spec.pointer("/template/spec/domain");
    let requests = |what: &str| {
        domain
            .and_then(|d| d.pointer(&format!("/resources/requests/{what}")))
            .and_then(Value::as_str)
    };
    let cpu = match domain.and_then(|d| d.get("cpu")) {
        Some(cpu) => {
            let n = |k: &str| cpu.get(k).and_then(Value::as_u64).unwrap_or(1);
            n("cores")
                .checked_mul(n("sockets"))
                .and_then(|v| v.checked_mul(n("threads")))
                .and_then(|v| v.checked_mul(1000))
        }
        None => match requests("cpu") {
            Some(q) => in_unit(SizeResource::Cpu, q).ok(),
            // KubeVirt's default topology: one socket, one core, one thread.
            None if domain.is_some() => Some(1000),
            None => None,
        },
    };
    let memory = domain
        .and_then(|d| d.pointer("/memory/guest"))
        .and_then(Value::as_str)
        .or_else(|| requests("memory"))
        .and_then(|q| in_unit(SizeResource::Memory, q).ok());
    let storage = match spec.get("dataVolumeTemplates").and_then(Value::as_array) {
        None => Some(0),
        Some(templates) => templates.iter().try_fold(0u64, |sum, t| {
            sum.checked_add(data_volume_storage(t.get("spec")?)?)
        }),
    };
    Demand {
        own: Sizes {
            cpu,
            memory,
            storage,
        },
        instancetype,
    }
}

/// Whether a VM spec asks to run (`running: true`, or a run strategy that
/// starts it).
pub(super) fn vm_runs(spec: &Value) -> bool {
    spec.get("running").and_then(Value::as_bool) == Some(true)
        || matches!(
            spec.get("runStrategy").and_then(Value::as_str),
            Some("Always" | "RerunOnFailure" | "Once")
        )
}

/// kubernetes-mcp-server's `vm_create`: the instancetype it names (or the
/// one its `performance` and `size` hints select, `u1.medium` style), the
/// root disk's `storage` (30Gi by default).
pub(super) fn vm_create_demand(args: &Value) -> Demand {
    let arg = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let instancetype = arg("instancetype")
        .map(str::to_owned)
        .or_else(|| {
            let size = arg("size")?;
            let family = arg("performance").unwrap_or("u1");
            // Only the short family names map to an instancetype name.
            (family.len() == 2).then(|| format!("{family}.{size}"))
        })
        .map(|name| InstancetypeRef {
            cluster: true,
            name,
        });
    let storage = in_unit(
        SizeResource::Storage,
        arg("storage").unwrap_or(VM_CREATE_DEFAULT_STORAGE),
    )
    .ok();
    Demand {
        own: Sizes {
            cpu: None,
            memory: None,
            storage,
        },
        instancetype,
    }
}

/// CPU and memory of an instancetype spec (`spec.cpu.guest`,
/// `spec.memory.guest`), as the controller reads them.
pub fn instancetype_sizes(spec: &Value) -> Sizes {
    Sizes {
        cpu: spec
            .pointer("/cpu/guest")
            .and_then(Value::as_u64)
            .and_then(|n| n.checked_mul(1000)),
        memory: spec
            .pointer("/memory/guest")
            .and_then(Value::as_str)
            .and_then(|q| in_unit(SizeResource::Memory, q).ok()),
        storage: Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_round_up_into_units() {
        assert_eq!(in_unit(SizeResource::Storage, "500Gi"), Ok(500 * 1024));
        assert_eq!(in_unit(SizeResource::Storage, "1G"), Ok(954));
        assert_eq!(in_unit(SizeResource::Storage, "1"), Ok(1));
        assert_eq!(in_unit(SizeResource::Memory, "1.5Gi"), Ok(1536));
        assert_eq!(in_unit(SizeResource::Cpu, "64"), Ok(64_000));
        assert_eq!(in_unit(SizeResource::Cpu, "500m"), Ok(500));
        assert_eq!(in_unit(SizeResource::Cpu, "0.1"), Ok(100));
        for bad in ["", "Gi", "1.2.3", "1e3", "-1", "12XB", "1..2"] {
            assert!(in_unit(SizeResource::Storage, bad).is_err(), "{bad}");
        }
        assert_eq!(show(SizeResource::Storage, 120 * 1024), "120Gi");
        assert_eq!(show(SizeResource::Storage, 300), "300Mi");
        assert_eq!(show(SizeResource::Cpu, 64_000), "64 vCPU");
    }

    #[test]
    fn a_vm_is_measured_from_its_template_or_left_to_its_instancetype() {
        let d = vm_demand(&json!({
            "running": true,
            "template": {"spec": {"domain": {"cpu": {"cores": 2, "sockets": 2}, "memory": {"guest": "4Gi"}}}},
            "dataVolumeTemplates": [
                {"spec": {"storage": {"resources": {"requests": {"storage": "20Gi"}}}}},
                {"spec": {"pvc": {"resources": {"requests": {"storage": "10Gi"}}}}}
            ]
        }));
        assert_eq!(
            d.own,
            Sizes {
                cpu: Some(4000),
                memory: Some(4096),
                storage: Some(30 * 1024)
            }
        );
        let d = vm_demand(&json!({
            "instancetype": {"name": "u1.large"},
            "dataVolumeTemplates": [{"spec": {"source": {"blank": {}}}}]
        }));
        assert_eq!(
            d.instancetype,
            Some(InstancetypeRef {
                cluster: true,
                name: "u1.large".into()
            })
        );
        assert_eq!(d.own.storage, None, "a disk without a size is unknown");
    }
}
