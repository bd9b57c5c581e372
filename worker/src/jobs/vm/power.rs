//! `vm_power`: start, shut down, stop or reboot one VM of a class.
//!
//! Only VMs that labfleet made are touched: the VMID comes from the VM's `class_vms` row, and the
//! VM found there must carry our marker for that row. The handler looks at the VM's real state
//! before acting (the backend answers `AlreadyInState` for a guest already where the action
//! leaves it), so a repeated request, a redelivery or a retry does nothing twice: starting a
//! running VM, or stopping a stopped one, succeeds without an operation. The operation it
//! starts is kept in the row (`upid`) and in the job's checkpoint: a continuation waits for that
//! operation, and a run after a worker died waits for the one it finds there instead of sending
//! another. When the action is done the row's state says `running` or `created` (exists,
//! powered off).

use std::{sync::Arc, time::Duration};

use labfleet_entities::class_vm;
use labfleet_fleet::{
    backend::{Expect, OpState, Operation, OperationKind, PowerRequest, Progress},
    Backend, BackendError, GuestRef, Inspected, VmState,
};
use labfleet_jobs::{PowerAction, VmPowerArgs};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::context::{JobContext, JobError, JobOutcome, Waited};

/// How long a parked power job waits before it looks at its task again.
const PARK: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: VmPowerArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let vm = ctx.classes.vm(args.class_vm_id).await?.ok_or_else(|| {
        JobError::Permanent(format!("class VM {} does not exist", args.class_vm_id))
    })?;
    if !VmState::parse(&vm.state).is_some_and(VmState::powerable) {
        return Err(JobError::Permanent(format!(
            "VM {} ({}) is {}; only a deployed VM (created or running) can be powered",
            vm.vmid, vm.name, vm.state
        )));
    }
    let connected = ctx.connect(vm.cluster_db_id).await?;
    let (cluster, backend) = (connected.cluster, connected.backend);
    // Where the VM really is, and whether it is ours: a VM without our marker on this VMID is
    // someone else's and is never touched.
    let found = backend
        .inspect(&vm.vmid.to_string(), Expect::Vm(vm.id))
        .await?;
    let guest = match found {
        Inspected::Ours {
            in_progress: true, ..
        }
        | Inspected::BeingMade => {
            ctx.set_step(format!("waiting for VM {} to be made", vm.vmid))
                .await;
            return Ok(JobOutcome::park(PARK, "VM still being made"));
        }
        Inspected::Ours { guest, .. } => guest,
        Inspected::Absent => {
            return Err(JobError::Permanent(format!(
                "VM {} does not exist on cluster `{}` (removed outside labfleet?)",
                vm.vmid, cluster.cluster_id
            )))
        }
        Inspected::Foreign { guest } => {
            return Err(JobError::Permanent(format!(
                "VM {} on {} does not carry labfleet's marker for this class VM; \
                 it is not touched",
                vm.vmid, guest.node
            )))
        }
    };
    if guest.node != vm.node {
        tracing::info!(vmid = vm.vmid, from = %vm.node, to = %guest.node, "the VM moved to another node");
    }
    let timeout = args
        .timeout_secs
        .unwrap_or(ctx.power.shutdown_timeout_secs)
        .max(1);
    let mut run = PowerRun {
        deadline: ctx.run_deadline(),
        ctx: &ctx,
        backend,
        guest,
        action: args.action,
        timeout,
        reboot_timeout: args.timeout_secs,
        vm,
    };
    let result = run.drive().await;
    if let Ok(JobOutcome::Done(Some(done))) = &result {
        tracing::info!(
            vmid = run.vm.vmid,
            action = args.action.as_str(),
            reason = args.reason.as_deref().unwrap_or("requested"),
            result = %done,
            "power action done"
        );
    }
    result.map(|outcome| match (outcome, &args.reason) {
        (JobOutcome::Done(Some(mut v)), Some(reason)) => {
            v["reason"] = json!(reason);
            JobOutcome::Done(Some(v))
        }
        (outcome, _) => outcome,
    })
}

/// Whether the action leaves the VM running.
fn ends_running(action: PowerAction) -> bool {
    matches!(action, PowerAction::Start | PowerAction::Reboot)
}

/// Parks while our operation runs; the continuation resumes waiting for exactly this one.
fn park_on(op: &Operation, note: &str) -> JobOutcome {
    JobOutcome::Continue {
        after: PARK,
        checkpoint: json!({ "waiting": note, "upid": op.as_str() }),
        note: Some(note.to_string()),
    }
}

/// How waiting for a task ended.
enum Wait {
    /// It finished OK.
    Done,
    /// It failed with this error.
    Failed(BackendError),
    /// Still running at the end of this run's budget: the run parks.
    Park(JobOutcome),
}

struct PowerRun<'a> {
    ctx: &'a JobContext,
    deadline: Instant,
    backend: Arc<dyn Backend>,
    guest: GuestRef,
    action: PowerAction,
    timeout: u32,
    /// The shutdown half of a reboot waits this long (Proxmox's default when absent).
    reboot_timeout: Option<u32>,
    vm: class_vm::Model,
}

impl PowerRun<'_> {
    async fn drive(&mut self) -> Result<JobOutcome, JobError> {
        // 1. An operation of ours from an earlier run of this job: wait for it.
        let mut finished: Option<Operation> = None;
        match self.earlier_operation().await? {
            Earlier::None => {}
            Earlier::Busy(note) => {
                self.ctx.set_step(&note).await;
                return Ok(JobOutcome::park(PARK, &note));
            }
            Earlier::Ours(op) => match self.wait(&op).await? {
                Wait::Park(outcome) => return Ok(outcome),
                Wait::Done => finished = Some(op),
                Wait::Failed(e) => {
                    // Its failure was never acted on; look at the VM and try again below.
                    tracing::info!(operation = %op, error = %e, "an earlier power task had failed");
                    self.forget_operation(&op).await;
                }
            },
        }
        // 2. A finished reboot rebooted it, whatever its state says now.
        if self.action == PowerAction::Reboot && finished.is_some() {
            return self.done(true, finished.as_ref(), false).await;
        }
        // 3. Act only if the VM is not where the action leaves it (the backend looks).
        let op = match self.send().await? {
            Sent::Operation(op) => op,
            Sent::AlreadyThere => {
                return self
                    .done(ends_running(self.action), finished.as_ref(), false)
                    .await
            }
        };
        match self.wait(&op).await? {
            Wait::Park(outcome) => Ok(outcome),
            Wait::Done => self.done(ends_running(self.action), Some(&op), true).await,
            Wait::Failed(e) => {
                self.forget_operation(&op).await;
                if ends_running(self.action) && matches!(e, BackendError::AlreadyInState(_)) {
                    return self.done(true, None, false).await;
                }
                Err(self.error(e))
            }
        }
    }

    /// The operation an earlier run of this job started: the checkpoint's after a park; after a
    /// worker died mid-run (a later attempt), the row's when it is an operation of this action
    /// on this VM. Another job's power operation still running on the VM is waited for first.
    async fn earlier_operation(&self) -> Result<Earlier, JobError> {
        let from_checkpoint = self
            .ctx
            .checkpoint
            .as_ref()
            .and_then(|c| c.get("upid"))
            .and_then(Value::as_str)
            .map(Operation::new)
            .filter(|op| self.backend.describe(op).is_some());
        if let Some(op) = from_checkpoint {
            return Ok(Earlier::Ours(op));
        }
        let Some(op) = self.vm.upid.as_deref().map(Operation::new) else {
            return Ok(Earlier::None);
        };
        let Some(info) = self.backend.describe(&op) else {
            return Ok(Earlier::None);
        };
        if info.guest_id.as_deref() != Some(self.guest.id.as_str()) {
            return Ok(Earlier::None);
        }
        if self.ctx.attempt > 1 && OperationKind::of_power(self.action).contains(&info.kind) {
            return Ok(Earlier::Ours(op));
        }
        // Someone else's operation (another power job, an idle shutdown): let it finish first.
        match self.backend.wait(&op, Duration::ZERO, Progress::Skip).await {
            Ok(OpState::Running { .. }) => Ok(Earlier::Busy(format!(
                "waiting for another power task ({:?}) on VM {} to finish",
                info.kind, self.guest.id
            ))),
            _ => Ok(Earlier::None),
        }
    }

    /// Sends the action's request and records its operation.
    async fn send(&mut self) -> Result<Sent, JobError> {
        let (id, node) = (self.guest.id.clone(), self.guest.node.clone());
        let step = match self.action {
            PowerAction::Start => format!("starting {id} on {node}"),
            PowerAction::Reboot => format!("rebooting {id} on {node}"),
            PowerAction::Shutdown => format!(
                "shutting down {id} on {node} (stopped hard after {} s)",
                self.timeout
            ),
            PowerAction::Stop => format!("stopping {id} on {node}"),
        };
        self.ctx.set_step(step).await;
        let timeout = match self.action {
            PowerAction::Shutdown => Some(self.timeout),
            PowerAction::Reboot => self.reboot_timeout,
            PowerAction::Start | PowerAction::Stop => None,
        };
        let request = PowerRequest {
            action: self.action,
            timeout: timeout.map(|t| Duration::from_secs(u64::from(t))),
        };
        let op = match self.backend.power(&self.guest, request).await {
            Ok(op) => op,
            Err(BackendError::AlreadyInState(_)) => return Ok(Sent::AlreadyThere),
            Err(e) => return Err(self.error(e)),
        };
        let recorded = self
            .ctx
            .classes
            .record_power_task(self.vm.id, op.as_str())
            .await;
        match recorded {
            Ok(true) => self.vm.upid = Some(op.as_str().to_string()),
            Ok(false) => tracing::warn!(
                vmid = self.vm.vmid,
                "the VM left the powerable states meanwhile"
            ),
            // The checkpoint still has it after a park; only a crash before then loses it.
            Err(e) => {
                tracing::warn!(vmid = self.vm.vmid, error = %e, "could not record the power task")
            }
        }
        Ok(Sent::Operation(op))
    }

    /// Waits for a power operation within this run's budget.
    async fn wait(&self, op: &Operation) -> Result<Wait, JobError> {
        match self
            .ctx
            .wait_for(self.backend.as_ref(), op, None, self.deadline)
            .await?
        {
            Waited::Done => Ok(Wait::Done),
            Waited::StillRunning => {
                let kind = self
                    .backend
                    .describe(op)
                    .map_or(OperationKind::Other, |i| i.kind);
                let note = format!("{} task running", kind_name(kind));
                Ok(Wait::Park(park_on(op, &note)))
            }
            Waited::Failed(e) => Ok(Wait::Failed(e)),
        }
    }

    /// Forgets an operation that ended without doing the action (the row no longer points at
    /// it).
    async fn forget_operation(&self, op: &Operation) {
        // Keeps the state (checked powerable when the job began); clears the operation only if
        // the row still has it.
        let state = match VmState::from_stored(&self.vm.state) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "could not clear the VM's power task");
                return;
            }
        };
        if let Err(e) = self
            .ctx
            .classes
            .finish_power(self.vm.id, state, Some(op.as_str()))
            .await
        {
            tracing::warn!(error = %e, "could not clear the VM's power task");
        }
    }

    /// Records where the VM is now and ends the job.
    async fn done(
        &self,
        running: bool,
        op: Option<&Operation>,
        changed: bool,
    ) -> Result<JobOutcome, JobError> {
        let state = VmState::made(running);
        let upid_text = op.map(|o| o.as_str().to_string());
        let written = self
            .ctx
            .classes
            .finish_power(self.vm.id, state, upid_text.as_deref())
            .await?;
        if !written {
            tracing::warn!(
                vmid = self.vm.vmid,
                "the VM left the powerable states meanwhile; its state is left alone"
            );
        }
        Ok(JobOutcome::Done(Some(json!({
            "vmid": self.vm.vmid,
            "node": self.guest.node,
            "action": self.action.as_str(),
            "power": if running { "running" } else { "stopped" },
            "state": state,
            "changed": changed,
            "upid": upid_text,
        }))))
    }

    /// A failed request or operation; a missing guest says which VM.
    fn error(&self, e: BackendError) -> JobError {
        match e {
            BackendError::NotFound(m) => JobError::Permanent(format!(
                "VM {} does not exist on {}: {m}",
                self.guest.id, self.guest.node
            )),
            e => e.into(),
        }
    }
}

/// How a power operation's kind is named in a job's note.
fn kind_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Start => "start",
        OperationKind::Shutdown => "shutdown",
        OperationKind::Stop => "stop",
        OperationKind::Reboot => "reboot",
        OperationKind::Create => "create",
        OperationKind::Destroy => "destroy",
        OperationKind::Other => "power",
    }
}

/// What sending the request did.
enum Sent {
    /// Started this operation.
    Operation(Operation),
    /// The VM is already where the action leaves it.
    AlreadyThere,
}

/// What an earlier run left on the VM.
enum Earlier {
    /// Nothing to wait for.
    None,
    /// This job's operation: wait for it instead of sending another.
    Ours(Operation),
    /// Another job's power task still runs on the VM.
    Busy(String),
}
