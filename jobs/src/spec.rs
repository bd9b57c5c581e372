//! The wire contract of jobs: one serde enum, one variant per kind. Adding a kind is a compile error
//! in the worker's dispatch until it is handled there.

use serde::{Deserialize, Serialize};

/// A family of jobs travels on its own queue with its own worker concurrency, so that a 500-VM
/// deploy never delays a student's reset or a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Class deployments and their per-VM children.
    Deploy,
    /// Single-VM lifecycle work: clone, snapshot, reconfigure, destroy.
    Vm,
    /// Power actions: start, shutdown, stop, reboot.
    Power,
    /// Environment pool resets.
    Reset,
    /// Template and ISO synchronisation.
    Sync,
    /// Diagnostic jobs used to test and benchmark the engine.
    Diag,
}

impl Family {
    /// Every family, each with its own queue.
    pub const ALL: [Family; 6] = [
        Family::Deploy,
        Family::Vm,
        Family::Power,
        Family::Reset,
        Family::Sync,
        Family::Diag,
    ];

    /// The name used in the database and in queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Deploy => "deploy",
            Family::Vm => "vm",
            Family::Power => "power",
            Family::Reset => "reset",
            Family::Sync => "sync",
            Family::Diag => "diag",
        }
    }

    /// Parses a stored family name.
    pub fn parse(s: &str) -> Option<Family> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Every kind of job labfleet runs, with its arguments. Stored as the job's `payload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "args", rename_all = "snake_case")]
pub enum JobSpec {
    /// A diagnostic job with a configurable duration, failures, continuations and children.
    Noop(NoopArgs),
    /// Plans a class's missing VMs (placement, VMIDs) and fans out one `deploy_vm` each.
    DeployClass(ClassArgs),
    /// Clones (or adopts) one VM of a class and powers it on if the class asks for it.
    DeployVm(ClassVmArgs),
    /// Destroys a class's VMs beyond `keep` (all of them when deleting the class).
    DestroyClass(DestroyClassArgs),
    /// Destroys one VM of a class and frees its VMID after the cool-down.
    DestroyVm(ClassVmArgs),
    /// Refresh a cluster's inventory (nodes, storages, templates, ISOs) from Proxmox.
    SyncCluster(SyncClusterArgs),
    /// Starts, shuts down, stops or reboots one VM of a class.
    VmPower(VmPowerArgs),
    /// Destroys a VM that carries our marker but that no class VM owns (found by reconciliation).
    DestroyOrphan(OrphanArgs),
}

impl JobSpec {
    /// The kind's snake_case name (the serde tag).
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Noop(_) => "noop",
            JobSpec::DeployClass(_) => "deploy_class",
            JobSpec::DeployVm(_) => "deploy_vm",
            JobSpec::DestroyClass(_) => "destroy_class",
            JobSpec::DestroyVm(_) => "destroy_vm",
            JobSpec::SyncCluster(_) => "sync_cluster",
            JobSpec::VmPower(_) => "vm_power",
            JobSpec::DestroyOrphan(_) => "destroy_orphan",
        }
    }

    /// The queue family this job travels on.
    pub fn family(&self) -> Family {
        match self {
            JobSpec::Noop(args) => args.family.unwrap_or(Family::Diag),
            JobSpec::DeployClass(_) | JobSpec::DeployVm(_) => Family::Deploy,
            JobSpec::DestroyClass(_) | JobSpec::DestroyVm(_) | JobSpec::DestroyOrphan(_) => {
                Family::Vm
            }
            JobSpec::SyncCluster(_) => Family::Sync,
            JobSpec::VmPower(_) => Family::Power,
        }
    }

    /// The arguments alone, as stored in `jobs.payload`.
    pub fn args_json(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("args").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Rebuilds a spec from a stored kind and arguments.
    pub fn from_parts(kind: &str, args: serde_json::Value) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "args": args }))
    }
}

/// Names a class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassArgs {
    /// `classes.id`.
    pub class_id: i64,
}

/// Names one VM of a class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassVmArgs {
    /// `class_vms.id`.
    pub class_vm_id: i64,
}

/// Which VMs of a class to destroy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyClassArgs {
    /// `classes.id`.
    pub class_id: i64,
    /// Keep the VMs with index up to this (0: destroy all and delete the class).
    pub keep: u32,
}

/// Arguments of `sync_cluster`. Nodes and storages are always refreshed; templates and ISOs
/// when asked for here and allowed by the cluster's toggles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncClusterArgs {
    /// The cluster (`clusters.id`).
    pub cluster_db_id: i64,
    /// Refresh templates (default true).
    #[serde(default = "yes")]
    pub templates: bool,
    /// Refresh ISOs (default true).
    #[serde(default = "yes")]
    pub isos: bool,
}

/// Names a VM that reconciliation found carrying our marker with no class VM owning it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanArgs {
    /// The cluster (`clusters.id`).
    pub cluster_db_id: i64,
    /// Its VMID.
    pub vmid: i64,
    /// The `class_vms.id` its marker names (the VM is destroyed only if it still says so).
    pub marker_vm_id: i64,
}

/// What a power job does to a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Power on (a running VM is left as it is).
    Start,
    /// Ask the guest to shut down (ACPI or agent), and stop it hard when it ignores the request
    /// past the timeout.
    Shutdown,
    /// Stop at once, like pulling the plug.
    Stop,
    /// Reboot the guest (a stopped VM is started).
    Reboot,
}

impl PowerAction {
    /// The action's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Shutdown => "shutdown",
            PowerAction::Stop => "stop",
            PowerAction::Reboot => "reboot",
        }
    }
}

/// Arguments of `vm_power`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPowerArgs {
    /// `class_vms.id`.
    pub class_vm_id: i64,
    /// What to do.
    pub action: PowerAction,
    /// Seconds the guest gets to shut down before it is stopped hard (shutdown only; default
    /// `power.shutdown_timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Why, when the scheduler asked for it (idle auto-shutdown); absent for a user's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}
/// Arguments of the diagnostic `noop` job. Every field is optional; `{}` succeeds at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoopArgs {
    /// How long the job works, in milliseconds (at most 50,000: no delivery is held long).
    pub duration_ms: u64,
    /// Fail with a transient error on the first N attempts.
    pub fail_attempts: u32,
    /// Fail with a permanent error (no retry).
    pub fail_permanently: bool,
    /// Park and continue this many times before finishing (a delayed continuation each time).
    pub continue_times: u32,
    /// Delay of each continuation, in milliseconds.
    pub continue_after_ms: u64,
    /// Fan out this many child jobs and finish when they have all finished.
    pub children: u32,
    /// Arguments of each child (default `{}`); a child cannot have children of its own.
    pub child: Option<Box<NoopArgs>>,
    /// Record an observable effect (a `noop_effects` row) exactly once.
    pub effect: bool,
    /// The queue family to run on (default `diag`).
    pub family: Option<Family>,
}

impl NoopArgs {
    /// Upper bounds, so a diagnostic job cannot hold a delivery or fan out without limit.
    pub const MAX_DURATION_MS: u64 = 50_000;
    /// See [`NoopArgs::MAX_DURATION_MS`].
    pub const MAX_CHILDREN: u32 = 10_000;
    /// See [`NoopArgs::MAX_DURATION_MS`].
    pub const MAX_CONTINUATIONS: u32 = 100;

    /// Checks the value ranges; returns the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.duration_ms > Self::MAX_DURATION_MS {
            return Err((
                "args.duration_ms",
                format!("must be at most {}", Self::MAX_DURATION_MS),
            ));
        }
        if self.continue_after_ms > Self::MAX_DURATION_MS {
            return Err((
                "args.continue_after_ms",
                format!("must be at most {}", Self::MAX_DURATION_MS),
            ));
        }
        if self.children > Self::MAX_CHILDREN {
            return Err((
                "args.children",
                format!("must be at most {}", Self::MAX_CHILDREN),
            ));
        }
        if self.continue_times > Self::MAX_CONTINUATIONS {
            return Err((
                "args.continue_times",
                format!("must be at most {}", Self::MAX_CONTINUATIONS),
            ));
        }
        if let Some(child) = &self.child {
            if child.children > 0 || child.child.is_some() {
                return Err((
                    "args.child.children",
                    "a child cannot have children of its own".into(),
                ));
            }
            child.validate().map_err(|(_, msg)| ("args.child", msg))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_kind_and_args() {
        let spec = JobSpec::Noop(NoopArgs {
            duration_ms: 5,
            ..Default::default()
        });
        let back = JobSpec::from_parts(spec.kind(), spec.args_json()).expect("parses");
        assert_eq!(back, spec);
    }

    #[test]
    fn sync_cluster_travels_on_the_sync_queue_and_defaults_to_everything() {
        let spec = JobSpec::from_parts("sync_cluster", serde_json::json!({"cluster_db_id": 7}))
            .expect("parses");
        assert_eq!(
            spec,
            JobSpec::SyncCluster(SyncClusterArgs {
                cluster_db_id: 7,
                templates: true,
                isos: true
            })
        );
        assert_eq!((spec.kind(), spec.family()), ("sync_cluster", Family::Sync));
        assert_eq!(
            JobSpec::from_parts(spec.kind(), spec.args_json()).expect("parses"),
            spec
        );
    }

    #[test]
    fn unknown_noop_argument_is_rejected() {
        let err = JobSpec::from_parts("noop", serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn grandchildren_are_refused() {
        let args = NoopArgs {
            children: 1,
            child: Some(Box::new(NoopArgs {
                children: 2,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(args.validate().unwrap_err().0, "args.child.children");
    }
}
