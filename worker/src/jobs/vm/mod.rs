//! One VM's jobs: `deploy_vm` makes it (`create`), `destroy_vm` removes it (`destroy`),
//! `vm_power` starts, shuts down, stops or reboots it (`power`). What they share: removing a
//! guest of ours (look, stop, destroy), which `destroy_orphan` uses too.

pub(crate) mod create;
pub(crate) mod destroy;
pub(crate) mod power;

use std::time::Duration;

use labfleet_fleet::{
    backend::{Expect, PowerRequest, SlotKey},
    Backend, BackendError, GuestRef, Inspected, Want,
};
use labfleet_jobs::PowerAction;
use tokio::time::Instant;

use crate::context::{JobContext, JobError, JobOutcome, Waited};

/// Slots outlive a run by this much: long enough to park and continue, short enough that a dead
/// worker's slots come back soon (a re-run of the same job takes them back at once anyway).
pub(crate) const SLOT_TTL: Duration = Duration::from_secs(120);

/// How removing a guest of ours went.
pub(crate) enum Removal {
    /// Nothing is left at the id (it was absent, or is destroyed now).
    Gone,
    /// Another guest sits at the id; it was not touched.
    Foreign(GuestRef),
    /// Not finished in this run: end the run with this continuation.
    Parked(JobOutcome),
}

/// Looks at `id` and, if the guest there carries the marker `expect` names, stops and destroys
/// it. A guest still being made is waited for (it may turn out to be ours).
pub(crate) async fn remove_if_ours(
    ctx: &JobContext,
    backend: &dyn Backend,
    cluster_db_id: i64,
    id: &str,
    expect: Expect,
) -> Result<Removal, JobError> {
    match backend.inspect(id, expect).await? {
        Inspected::Absent => Ok(Removal::Gone),
        Inspected::Foreign { guest } => Ok(Removal::Foreign(guest)),
        Inspected::Ours {
            in_progress: true, ..
        }
        | Inspected::BeingMade => {
            ctx.set_step("waiting for its clone to finish").await;
            Ok(Removal::Parked(JobOutcome::park(
                Duration::from_secs(1),
                "clone still running",
            )))
        }
        Inspected::Ours { guest, running, .. } => {
            let deadline = ctx.run_deadline();
            match stop_and_destroy(ctx, backend, cluster_db_id, &guest, running, deadline).await? {
                Some(parked) => Ok(Removal::Parked(parked)),
                None => Ok(Removal::Gone),
            }
        }
    }
}

/// Stops (if running) and destroys one of our guests with its disks. `Some` is a continuation
/// to return (an operation still runs, or no slot is free yet); `None` means the guest is gone.
async fn stop_and_destroy(
    ctx: &JobContext,
    backend: &dyn Backend,
    cluster_db_id: i64,
    guest: &GuestRef,
    running: bool,
    deadline: Instant,
) -> Result<Option<JobOutcome>, JobError> {
    if running {
        ctx.set_step(format!("stopping {}", guest.id)).await;
        let stop = PowerRequest {
            action: PowerAction::Stop,
            timeout: None,
        };
        match backend.power(guest, stop).await {
            Ok(op) => match ctx.wait_for(backend, &op, None, deadline).await? {
                Waited::Done => {}
                Waited::StillRunning => {
                    return Ok(Some(JobOutcome::park(
                        Duration::from_secs(1),
                        "stop task running",
                    )))
                }
                Waited::Failed(e) => return Err(e.into()),
            },
            // Stopped meanwhile: nothing to stop.
            Err(BackendError::AlreadyInState(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Destroying frees volumes under the storage lock: take the node's slot like a make does
    // (the storages are not known here; the node is).
    let holder = ctx.job_id.to_string();
    let wants = [Want::for_slot(
        cluster_db_id,
        &SlotKey::Node(guest.node.clone()),
        ctx.deploy.node_concurrency,
        ctx.deploy.storage_concurrency,
    )];
    let patience = deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(10));
    if !ctx
        .slots
        .acquire(&wants, &holder, SLOT_TTL, patience)
        .await?
    {
        return Ok(Some(JobOutcome::park(
            Duration::from_millis(500),
            "waiting for a slot",
        )));
    }
    ctx.set_step(format!("destroying {} on {}", guest.id, guest.node))
        .await;
    let op = match backend.destroy(guest).await {
        Ok(op) => op,
        Err(BackendError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match ctx.wait_for(backend, &op, None, deadline).await? {
        Waited::Done => Ok(None),
        Waited::StillRunning => Ok(Some(JobOutcome::park(
            Duration::from_secs(1),
            "destroy task running",
        ))),
        Waited::Failed(e) => Err(e.into()),
    }
}

/// Gives the slots this job holds back (they expire by themselves if this fails).
pub(crate) async fn release_slots(ctx: &JobContext) {
    if let Err(e) = ctx.slots.release(&ctx.job_id.to_string()).await {
        tracing::warn!(error = %e, "could not release slots; they expire by themselves");
    }
}
