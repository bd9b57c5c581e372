//! `vm_power`: start, shut down, stop or reboot one VM of a class.
//!
//! Only VMs that labfleet made are touched: the VMID comes from the VM's `class_vms` row, and the
//! VM found there must carry our marker for that row. The handler looks at the VM's real state
//! (`status/current`) before acting, so a repeated request, a redelivery or a retry does nothing
//! twice: starting a running VM, or stopping a stopped one, succeeds without a Proxmox task.
//! The task it starts is kept in the row (`upid`) and in the job's checkpoint: a continuation
//! waits for that task, and a run after a worker died waits for the task it finds there instead
//! of sending another. When the action is done the row's state says `running` or `created`
//! (exists, powered off).

use std::time::Duration;

use labfleet_deploy::VmState;
use labfleet_entities::class_vm;
use labfleet_jobs::{PowerAction, VmPowerArgs};
use labfleet_proxmox::{
    ProxmoxClient, ProxmoxError, ShutdownParams, StartParams, StopParams, Upid,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::deploy::{connect, db, inspect, pve, run_deadline, wait_task, Found, Waited};
use crate::context::{JobContext, JobError, JobOutcome};

/// How long a parked power job waits before it looks at its task again.
const PARK: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: VmPowerArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let vm = ctx
        .classes
        .vm(args.class_vm_id)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            JobError::Permanent(format!("class VM {} does not exist", args.class_vm_id))
        })?;
    if !VmState::parse(&vm.state).is_some_and(VmState::powerable) {
        return Err(JobError::Permanent(format!(
            "VM {} ({}) is {}; only a deployed VM (created or running) can be powered",
            vm.vmid, vm.name, vm.state
        )));
    }
    let (cluster, client) = connect(&ctx, vm.cluster_db_id).await?;
    // Where the VM really is, and whether it is ours: a VM without our marker on this VMID is
    // someone else's and is never touched.
    let (found, _) = inspect(&client, vm.vmid, vm.id).await.map_err(pve)?;
    let node = match found {
        Found::Ours {
            in_progress: true, ..
        }
        | Found::BeingMade => {
            ctx.set_step(format!("waiting for VM {} to be made", vm.vmid))
                .await;
            return Ok(park_plain("VM still being made"));
        }
        Found::Ours { node, .. } => node,
        Found::Absent => {
            return Err(JobError::Permanent(format!(
                "VM {} does not exist on cluster `{}` (removed outside labfleet?)",
                vm.vmid, cluster.cluster_id
            )))
        }
        Found::Foreign { node } => {
            return Err(JobError::Permanent(format!(
                "VM {} on {node} does not carry labfleet's marker for this class VM; \
                 it is not touched",
                vm.vmid
            )))
        }
    };
    if node != vm.node {
        tracing::info!(vmid = vm.vmid, from = %vm.node, to = %node, "the VM moved to another node");
    }
    let timeout = args
        .timeout_secs
        .unwrap_or(ctx.power.shutdown_timeout_secs)
        .max(1);
    let mut run = PowerRun {
        deadline: run_deadline(&ctx),
        ctx: &ctx,
        client,
        node,
        vmid: vm.vmid as u32,
        action: args.action,
        timeout,
        reboot_timeout: args.timeout_secs,
        vm,
    };
    let result = run.drive().await;
    if let Ok(JobOutcome::Done(Some(done))) = &result {
        tracing::info!(
            vmid = run.vmid,
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

/// The task types a power action's task may have (a reboot of a stopped VM is a start).
fn task_types(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::Start => &["qmstart"],
        PowerAction::Shutdown => &["qmshutdown"],
        PowerAction::Stop => &["qmstop"],
        PowerAction::Reboot => &["qmreboot", "qmstart"],
    }
}

/// Whether the action leaves the VM running.
fn ends_running(action: PowerAction) -> bool {
    matches!(action, PowerAction::Start | PowerAction::Reboot)
}

fn park_plain(note: &str) -> JobOutcome {
    JobOutcome::Continue {
        after: PARK,
        checkpoint: json!({ "waiting": note }),
        note: Some(note.to_string()),
    }
}

/// Parks while our task runs; the continuation resumes waiting for exactly this task.
fn park_on(upid: &Upid, note: &str) -> JobOutcome {
    JobOutcome::Continue {
        after: PARK,
        checkpoint: json!({ "waiting": note, "upid": upid.to_string() }),
        note: Some(note.to_string()),
    }
}

/// How waiting for a task ended.
enum Wait {
    /// It finished OK.
    Done,
    /// It failed with this error.
    Failed(JobError),
    /// Still running at the end of this run's budget: the run parks.
    Park(JobOutcome),
}

struct PowerRun<'a> {
    ctx: &'a JobContext,
    deadline: Instant,
    client: ProxmoxClient,
    node: String,
    vmid: u32,
    action: PowerAction,
    timeout: u32,
    /// The shutdown half of a reboot waits this long (Proxmox's default when absent).
    reboot_timeout: Option<u32>,
    vm: class_vm::Model,
}

impl PowerRun<'_> {
    async fn drive(&mut self) -> Result<JobOutcome, JobError> {
        // 1. A task of ours from an earlier run of this job: wait for it.
        let mut finished: Option<Upid> = None;
        match self.earlier_task().await? {
            Earlier::None => {}
            Earlier::Busy(note) => {
                self.ctx.set_step(&note).await;
                return Ok(park_plain(&note));
            }
            Earlier::Ours(upid) => match self.wait(&upid).await? {
                Wait::Park(outcome) => return Ok(outcome),
                Wait::Done => finished = Some(upid),
                Wait::Failed(e) => {
                    // Its failure was never acted on; look at the VM and try again below.
                    tracing::info!(upid = %upid, error = %e, "an earlier power task had failed");
                    self.forget_task(&upid).await;
                }
            },
        }
        // 2. Look at the VM, and act only if it is not where the action leaves it.
        let running = self.is_running().await?;
        let needed = match self.action {
            PowerAction::Start => !running,
            PowerAction::Shutdown | PowerAction::Stop => running,
            // A finished reboot task rebooted it, whatever the state now says.
            PowerAction::Reboot => finished.is_none(),
        };
        if !needed {
            return self.done(running, finished.as_ref(), false).await;
        }
        let upid = match self.send(running).await? {
            Sent::Task(upid) => upid,
            Sent::AlreadyRunning => return self.done(true, None, false).await,
        };
        match self.wait(&upid).await? {
            Wait::Park(outcome) => Ok(outcome),
            Wait::Done => {
                self.done(ends_running(self.action), Some(&upid), true)
                    .await
            }
            Wait::Failed(e) => {
                self.forget_task(&upid).await;
                if ends_running(self.action) && e.to_string().contains("already running") {
                    return self.done(true, None, false).await;
                }
                Err(e)
            }
        }
    }

    /// The task an earlier run of this job started: the checkpoint's after a park; after a
    /// worker died mid-run (a later attempt), the row's when it is a task of this action on
    /// this VM. Another job's power task still running on the VM is waited for first.
    async fn earlier_task(&self) -> Result<Earlier, JobError> {
        let from_checkpoint = self
            .ctx
            .checkpoint
            .as_ref()
            .and_then(|c| c.get("upid"))
            .and_then(Value::as_str)
            .and_then(|u| Upid::parse(u).ok());
        if let Some(upid) = from_checkpoint {
            return Ok(Earlier::Ours(upid));
        }
        let Some(upid) = self.vm.upid.as_deref().and_then(|u| Upid::parse(u).ok()) else {
            return Ok(Earlier::None);
        };
        if upid.id != self.vmid.to_string() {
            return Ok(Earlier::None);
        }
        if self.ctx.attempt > 1 && task_types(self.action).contains(&upid.task_type.as_str()) {
            return Ok(Earlier::Ours(upid));
        }
        // Someone else's task (another power job, an idle shutdown): let it finish first.
        match self.client.task_status(&upid).await {
            Ok(status) if status.status == "running" => Ok(Earlier::Busy(format!(
                "waiting for another power task ({}) on VM {} to finish",
                upid.task_type, self.vmid
            ))),
            _ => Ok(Earlier::None),
        }
    }

    async fn is_running(&self) -> Result<bool, JobError> {
        match self.client.qemu_status(&self.node, self.vmid).await {
            Ok(status) => Ok(status.is_running()),
            Err(e) => Err(self.pve(e)),
        }
    }

    /// Sends the action's request (a reboot of a stopped VM starts it) and records its task.
    async fn send(&mut self, running: bool) -> Result<Sent, JobError> {
        let (node, vmid) = (self.node.clone(), self.vmid);
        let sent = match self.action {
            PowerAction::Start => self.start().await,
            PowerAction::Reboot if !running => self.start().await,
            PowerAction::Reboot => {
                self.ctx
                    .set_step(format!("rebooting {vmid} on {node}"))
                    .await;
                match self
                    .client
                    .qemu_reboot(&node, vmid, self.reboot_timeout)
                    .await
                {
                    // Stopped between the look and the request.
                    Err(e) if e.to_string().contains("not running") => self.start().await,
                    other => other,
                }
            }
            PowerAction::Shutdown => {
                self.ctx
                    .set_step(format!(
                        "shutting down {vmid} on {node} (stopped hard after {} s)",
                        self.timeout
                    ))
                    .await;
                let params = ShutdownParams {
                    force_stop: Some(true),
                    timeout: Some(self.timeout),
                    ..Default::default()
                };
                self.client.qemu_shutdown(&node, vmid, &params).await
            }
            PowerAction::Stop => {
                self.ctx
                    .set_step(format!("stopping {vmid} on {node}"))
                    .await;
                self.client
                    .qemu_stop(&node, vmid, &StopParams::default())
                    .await
            }
        };
        let upid = match sent {
            Ok(upid) => upid,
            Err(e) if ends_running(self.action) && e.to_string().contains("already running") => {
                return Ok(Sent::AlreadyRunning)
            }
            Err(e) => return Err(self.pve(e)),
        };
        let recorded = self
            .ctx
            .classes
            .record_power_task(self.vm.id, upid.as_str())
            .await;
        match recorded {
            Ok(true) => self.vm.upid = Some(upid.to_string()),
            Ok(false) => tracing::warn!(vmid, "the VM left the powerable states meanwhile"),
            // The checkpoint still has it after a park; only a crash before then loses it.
            Err(e) => tracing::warn!(vmid, error = %e, "could not record the power task"),
        }
        Ok(Sent::Task(upid))
    }

    async fn start(&self) -> Result<Upid, ProxmoxError> {
        self.ctx
            .set_step(format!("starting {} on {}", self.vmid, self.node))
            .await;
        self.client
            .qemu_start(&self.node, self.vmid, &StartParams::default())
            .await
    }

    /// Waits for a power task within this run's budget.
    async fn wait(&self, upid: &Upid) -> Result<Wait, JobError> {
        match wait_task(self.ctx, &self.client, upid, None, self.deadline).await {
            Ok(Waited::Done) => Ok(Wait::Done),
            Ok(Waited::StillRunning) => {
                let note = format!("{} task running", upid.task_type);
                Ok(Wait::Park(park_on(upid, &note)))
            }
            Err(JobError::Cancelled) => Err(JobError::Cancelled),
            Err(e) => Ok(Wait::Failed(e)),
        }
    }

    /// Forgets a task that ended without doing the action (the row no longer points at it).
    async fn forget_task(&self, upid: &Upid) {
        // Keeps the state (checked powerable when the job began); clears the task only if the
        // row still has it.
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
            .finish_power(self.vm.id, state, Some(upid.as_str()))
            .await
        {
            tracing::warn!(error = %e, "could not clear the VM's power task");
        }
    }

    /// Records where the VM is now and ends the job.
    async fn done(
        &self,
        running: bool,
        upid: Option<&Upid>,
        changed: bool,
    ) -> Result<JobOutcome, JobError> {
        let state = VmState::made(running);
        let upid_text = upid.map(Upid::to_string);
        let written = self
            .ctx
            .classes
            .finish_power(self.vm.id, state, upid_text.as_deref())
            .await
            .map_err(db)?;
        if !written {
            tracing::warn!(
                vmid = self.vmid,
                "the VM left the powerable states meanwhile; its state is left alone"
            );
        }
        Ok(JobOutcome::Done(Some(json!({
            "vmid": self.vmid,
            "node": self.node,
            "action": self.action.as_str(),
            "power": if running { "running" } else { "stopped" },
            "state": state,
            "changed": changed,
            "upid": upid_text,
        }))))
    }

    /// A Proxmox failure; "does not exist" says which VM.
    fn pve(&self, e: ProxmoxError) -> JobError {
        if e.is_not_found() {
            JobError::Permanent(format!(
                "VM {} does not exist on {}: {e}",
                self.vmid, self.node
            ))
        } else {
            pve(e)
        }
    }
}

/// What sending the request did.
enum Sent {
    /// Started this task.
    Task(Upid),
    /// A start found the VM running already.
    AlreadyRunning,
}

/// What an earlier run left on the VM.
enum Earlier {
    /// Nothing to wait for.
    None,
    /// This job's task: wait for it instead of sending another.
    Ours(Upid),
    /// Another job's power task still runs on the VM.
    Busy(String),
}
