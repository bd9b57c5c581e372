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

/// The kind of a job, as stored in `jobs.kind` (the `JobSpec` variant without its arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// See [`JobSpec::Noop`].
    Noop,
    /// See [`JobSpec::DeployClass`].
    DeployClass,
    /// See [`JobSpec::DeployVm`].
    DeployVm,
    /// See [`JobSpec::DestroyClass`].
    DestroyClass,
    /// See [`JobSpec::DestroyVm`].
    DestroyVm,
    /// See [`JobSpec::SyncCluster`].
    SyncCluster,
    /// See [`JobSpec::VmPower`].
    VmPower,
    /// See [`JobSpec::DestroyOrphan`].
    DestroyOrphan,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 8] = [
        JobKind::Noop,
        JobKind::DeployClass,
        JobKind::DeployVm,
        JobKind::DestroyClass,
        JobKind::DestroyVm,
        JobKind::SyncCluster,
        JobKind::VmPower,
        JobKind::DestroyOrphan,
    ];

    /// The stored name (the serde tag of `JobSpec`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::DeployClass => "deploy_class",
            JobKind::DeployVm => "deploy_vm",
            JobKind::DestroyClass => "destroy_class",
            JobKind::DestroyVm => "destroy_vm",
            JobKind::SyncCluster => "sync_cluster",
            JobKind::VmPower => "vm_power",
            JobKind::DestroyOrphan => "destroy_orphan",
        }
    }

    /// Parses a stored kind name.
    pub fn parse(s: &str) -> Option<JobKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stored job cannot be run: a kind this build does not know, or arguments that do not
/// decode (a newer or older labfleet wrote them). Such a job fails at once with this message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidJob {
    /// `jobs.kind` names no kind.
    #[error("unknown job kind `{0}`")]
    UnknownKind(String),
    /// `jobs.payload` does not decode for the kind.
    #[error("invalid arguments for a {kind} job: {error}")]
    BadArguments {
        /// The kind.
        kind: JobKind,
        /// The decoding error.
        error: String,
    },
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
    /// Its kind.
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Noop(_) => JobKind::Noop,
            JobSpec::DeployClass(_) => JobKind::DeployClass,
            JobSpec::DeployVm(_) => JobKind::DeployVm,
            JobSpec::DestroyClass(_) => JobKind::DestroyClass,
            JobSpec::DestroyVm(_) => JobKind::DestroyVm,
            JobSpec::SyncCluster(_) => JobKind::SyncCluster,
            JobSpec::VmPower(_) => JobKind::VmPower,
            JobSpec::DestroyOrphan(_) => JobKind::DestroyOrphan,
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

    /// Rebuilds a spec from a stored row's kind and arguments, saying which of the two is wrong.
    pub fn from_stored(kind: &str, args: serde_json::Value) -> Result<JobSpec, InvalidJob> {
        let known = JobKind::parse(kind).ok_or_else(|| InvalidJob::UnknownKind(kind.into()))?;
        Self::from_parts(kind, args).map_err(|e| InvalidJob::BadArguments {
            kind: known,
            error: e.to_string(),
        })
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
        let back = JobSpec::from_parts(spec.kind().as_str(), spec.args_json()).expect("parses");
        assert_eq!(back, spec);
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
            let tag = serde_json::to_value(kind).expect("serializes");
            assert_eq!(tag, kind.as_str());
        }
    }

    #[test]
    fn a_stored_job_names_what_is_wrong_with_it() {
        assert_eq!(
            JobSpec::from_stored("reticulate", serde_json::json!({})),
            Err(InvalidJob::UnknownKind("reticulate".into()))
        );
        let err = JobSpec::from_stored("vm_power", serde_json::json!({})).unwrap_err();
        assert!(
            matches!(
                err,
                InvalidJob::BadArguments {
                    kind: JobKind::VmPower,
                    ..
                }
            ),
            "{err}"
        );
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
        assert_eq!(
            (spec.kind(), spec.family()),
            (JobKind::SyncCluster, Family::Sync)
        );
        assert_eq!(
            JobSpec::from_parts(spec.kind().as_str(), spec.args_json()).expect("parses"),
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
