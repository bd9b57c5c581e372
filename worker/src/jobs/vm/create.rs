//! `deploy_vm`: makes one VM of a class, as a small state machine stored in its `class_vms` row
//! (`planned → cloning → created [→ starting → running]`), so that any run — a retry, a
//! redelivery after a worker died, a continuation — picks up where the last one stopped:
//! a running clone task is waited for, not started again; a VM already made (found by its marker)
//! is adopted; a foreign VM on our VMID gets the VMID quarantined and the VM a new one.

use std::{sync::Arc, time::Duration};

use labfleet_entities::{class, class_vm, cluster, template};
use labfleet_fleet::{
    backend::{CreateRequest, Expect, Operation, PowerRequest, SlotQuery, Source},
    naming::vm_name,
    vmids, Backend, BackendError, ClassState, DeployMethod, GuestRef, Inspected, Marker, VmChange,
    VmState, Want,
};
use labfleet_jobs::{ClassVmArgs, PowerAction};
use serde_json::json;
use tokio::time::Instant;

use super::{release_slots, SLOT_TTL};
use crate::{
    context::{JobContext, JobError, JobOutcome, Waited},
    jobs::{load_class, template_row},
};

/// Times a make may meet "already exists" in one run (each time the VMID is looked at again, and
/// a foreign VM there makes the VM move to a new VMID) before the VM fails with the error.
const MAX_CONFLICTS: u32 = 3;

pub(crate) async fn run(args: ClassVmArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let vm = ctx.classes.vm(args.class_vm_id).await?.ok_or_else(|| {
        JobError::Permanent(format!("class VM {} no longer exists", args.class_vm_id))
    })?;
    let class = load_class(&ctx, vm.class_id).await?;
    if ClassState::parse(&class.state) != Some(ClassState::Active) {
        return Err(JobError::Permanent(format!(
            "class {} is {}",
            class.id, class.state
        )));
    }
    if vm.job_id != Some(ctx.job_id) {
        ctx.classes
            .update_vm(
                vm.id,
                VmChange {
                    job_id: Some(ctx.job_id),
                    ..Default::default()
                },
            )
            .await?;
    }
    let connected = ctx.connect(vm.cluster_db_id).await?;
    let (cluster, backend) = (connected.cluster, connected.backend);
    let template = template_row(&ctx, cluster.id, class.template_vmid)
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "template {} is not in the inventory of cluster `{}`",
                class.template_vmid, cluster.cluster_id
            ))
        })?;
    let method = DeployMethod::parse(&class.method)
        .ok_or_else(|| JobError::Permanent(format!("unknown method `{}`", class.method)))?;
    let holder = ctx.job_id.to_string();
    let mut run = VmRun {
        ctx: &ctx,
        deadline: ctx.run_deadline(),
        class,
        cluster,
        backend,
        template,
        method,
        holder,
        vm,
    };
    let result = run.drive().await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        release_slots(&ctx).await;
    }
    if let Err(e) = &result {
        let change = match e {
            JobError::Permanent(m) => Some(VmChange {
                state: Some(VmState::Failed),
                error: Some(Some(m)),
                ..Default::default()
            }),
            JobError::Transient(m) => Some(VmChange {
                error: Some(Some(m)),
                ..Default::default()
            }),
            JobError::Cancelled => None,
        };
        if let Some(change) = change {
            if let Err(e) = ctx.classes.update_vm(run.vm.id, change).await {
                tracing::warn!(error = %e, "could not record the VM's error");
            }
        }
    }
    result
}

struct VmRun<'a> {
    ctx: &'a JobContext,
    deadline: Instant,
    class: class::Model,
    cluster: cluster::Model,
    backend: Arc<dyn Backend>,
    template: template::Model,
    method: DeployMethod,
    holder: String,
    vm: class_vm::Model,
}

impl VmRun<'_> {
    async fn drive(&mut self) -> Result<JobOutcome, JobError> {
        // A first attempt of a fresh plan acts at once; anything else may follow an earlier
        // run that got further than its row says, so it looks at Proxmox first.
        let mut check_world = self.ctx.attempt > 1 || self.ctx.checkpoint.is_some();
        if self.state()? == VmState::Failed {
            self.set_state(VmState::Planned, None).await?;
            check_world = true;
        }
        let mut conflicts = 0;
        loop {
            match self.state()? {
                VmState::Planned => {
                    if check_world {
                        check_world = false;
                        if let Some(outcome) = self.reconcile().await? {
                            return Ok(outcome);
                        }
                        continue;
                    }
                    if self.ctx.cancel.is_cancelled() {
                        return Err(JobError::Cancelled);
                    }
                    if !self.take_slots().await? {
                        self.ctx
                            .set_step("waiting for a free storage/node slot")
                            .await;
                        return Ok(JobOutcome::park(
                            Duration::from_millis(500),
                            "waiting for a slot",
                        ));
                    }
                    self.ctx
                        .set_step(format!("cloning {} on {}", self.vm.vmid, self.vm.node))
                        .await;
                    match self.backend.create(&self.create_request()).await {
                        Ok(op) => self.set_state(VmState::Cloning, Some(&op)).await?,
                        // The VMID (or a volume name of it) is taken: look at it again.
                        Err(BackendError::AlreadyExists(_)) if conflicts < MAX_CONFLICTS => {
                            conflicts += 1;
                            check_world = true;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                VmState::Cloning => {
                    let Some(op) = self.operation() else {
                        self.set_state(VmState::Planned, None).await?;
                        check_world = true;
                        continue;
                    };
                    // Resumed from a park or another worker: the slots are still ours.
                    self.ctx.slots.renew(&self.holder, SLOT_TTL).await?;
                    let step = (self.method == DeployMethod::FullClone)
                        .then(|| format!("copying disks of {}", self.vm.vmid));
                    match self
                        .ctx
                        .wait_for(self.backend.as_ref(), &op, step.as_deref(), self.deadline)
                        .await
                    {
                        Ok(Waited::StillRunning) => {
                            return Ok(JobOutcome::park(
                                Duration::from_secs(1),
                                "clone task running",
                            ))
                        }
                        Ok(Waited::Done) => {
                            self.release_slots().await;
                            self.set_state(VmState::Created, None).await?;
                            if self.ctx.cancel.is_cancelled() {
                                // Made before the cancel could stop it: recorded, not started.
                                return Ok(self.done());
                            }
                        }
                        Ok(Waited::Failed(e)) => {
                            // A failed make leaves no VM behind (the hypervisor cleans up).
                            self.release_slots().await;
                            self.set_state(VmState::Planned, None).await?;
                            if matches!(e, BackendError::AlreadyExists(_))
                                && conflicts < MAX_CONFLICTS
                            {
                                conflicts += 1;
                                check_world = true;
                                continue;
                            }
                            return Err(e.into());
                        }
                        Err(e) => return Err(e),
                    }
                }
                VmState::Created => {
                    if !self.class.start_vms {
                        return Ok(self.done());
                    }
                    self.ctx
                        .set_step(format!("starting {} on {}", self.vm.vmid, self.vm.node))
                        .await;
                    let start = PowerRequest {
                        action: PowerAction::Start,
                        timeout: None,
                    };
                    match self.backend.power(&self.guest(), start).await {
                        Ok(op) => self.set_state(VmState::Starting, Some(&op)).await?,
                        Err(BackendError::AlreadyInState(_)) => {
                            self.set_state(VmState::Running, None).await?
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                VmState::Starting => {
                    let Some(op) = self.operation() else {
                        self.set_state(VmState::Created, None).await?;
                        continue;
                    };
                    match self
                        .ctx
                        .wait_for(self.backend.as_ref(), &op, None, self.deadline)
                        .await
                    {
                        Ok(Waited::StillRunning) => {
                            return Ok(JobOutcome::park(
                                Duration::from_secs(1),
                                "start task running",
                            ))
                        }
                        Ok(Waited::Done) => self.set_state(VmState::Running, None).await?,
                        // It runs, which is what was asked (an earlier run started it before
                        // its record was written).
                        Ok(Waited::Failed(BackendError::AlreadyInState(_))) => {
                            self.set_state(VmState::Running, None).await?
                        }
                        Ok(Waited::Failed(e)) => {
                            self.set_state(VmState::Created, None).await?;
                            return Err(e.into());
                        }
                        Err(e) => return Err(e),
                    }
                }
                VmState::Running => return Ok(self.done()),
                other => {
                    return Err(JobError::Permanent(format!(
                        "VM {} is {other}; it cannot be deployed now",
                        self.vm.vmid
                    )))
                }
            }
        }
    }

    /// Looks at what Proxmox has at our VMID and moves the row accordingly; `Some` when the run
    /// should end now (an earlier clone of ours is still being made).
    async fn reconcile(&mut self) -> Result<Option<JobOutcome>, JobError> {
        let found = self
            .backend
            .inspect(&self.vm.vmid.to_string(), Expect::Vm(self.vm.id))
            .await?;
        match found {
            Inspected::Absent => {}
            Inspected::Ours {
                in_progress: true, ..
            } => {
                self.ctx
                    .set_step("waiting for an earlier clone of this VM to finish")
                    .await;
                return Ok(Some(JobOutcome::park(
                    Duration::from_secs(1),
                    "earlier clone running",
                )));
            }
            Inspected::BeingMade => {
                self.ctx
                    .set_step(format!(
                        "waiting for the clone on VMID {} to finish, to tell whose it is",
                        self.vm.vmid
                    ))
                    .await;
                return Ok(Some(JobOutcome::park(
                    Duration::from_secs(1),
                    "a clone on our VMID",
                )));
            }
            Inspected::Ours { running, .. } => {
                tracing::info!(vmid = self.vm.vmid, "adopting a VM made by an earlier run");
                self.set_state(VmState::made(running), None).await?;
            }
            Inspected::Foreign { guest } => self.move_to_new_vmid(&guest).await?,
        }
        Ok(None)
    }

    /// A VM that is not ours sits on our VMID: quarantine the id and take another.
    async fn move_to_new_vmid(&mut self, foreign: &GuestRef) -> Result<(), JobError> {
        let conn = self.ctx.store.db();
        vmids::quarantine(conn, self.cluster.id, self.vm.vmid).await?;
        let in_use = self.backend.fleet().await?.numeric_ids();
        let new = vmids::reserve(
            conn,
            self.cluster.id,
            (self.cluster.vmid_range_start, self.cluster.vmid_range_end),
            1,
            &in_use,
            &format!("class:{}", self.class.id),
            Duration::from_secs(self.ctx.deploy.vmid_cooldown_secs),
        )
        .await?[0];
        let name = vm_name(&self.class.slug, self.vm.idx as u32, new as u32);
        tracing::warn!(
            old = self.vm.vmid,
            new,
            node = foreign.node,
            "a foreign VM sits on the reserved VMID: quarantined it, took another"
        );
        self.ctx
            .classes
            .update_vm(
                self.vm.id,
                VmChange {
                    vmid: Some((new, &name)),
                    ..Default::default()
                },
            )
            .await?;
        self.vm.vmid = new;
        self.vm.name = name;
        Ok(())
    }

    /// What to ask the backend to make: this VM, from the class's template, with our marker.
    fn create_request(&self) -> CreateRequest {
        CreateRequest {
            source: Source::Template {
                guest: GuestRef::numbered(self.template.node.clone(), self.template.vmid),
            },
            method: self.method,
            target: self.guest(),
            storage: (self.method == DeployMethod::FullClone).then(|| self.full_clone_storage()),
            name: self.vm.name.clone(),
            notes: self.class.description.clone(),
            marker: Marker {
                class_id: self.class.id,
                class_vm_id: self.vm.id,
            },
            customization: None,
        }
    }

    /// The VM on the cluster, where its row says it is.
    fn guest(&self) -> GuestRef {
        GuestRef::numbered(self.vm.node.clone(), self.vm.vmid)
    }

    /// The operation the row records, if any.
    fn operation(&self) -> Option<Operation> {
        self.vm.upid.as_deref().map(Operation::new)
    }

    /// Full clones go to the cluster's default storage, else next to the template's first disk.
    fn full_clone_storage(&self) -> String {
        self.cluster.default_storage.clone().unwrap_or_else(|| {
            self.template
                .disk_list()
                .into_iter()
                .find(|d| !d.iso && !d.cloudinit)
                .map(|d| d.storage)
                .unwrap_or_else(|| "local-lvm".to_string())
        })
    }

    /// The slots this VM's make needs, as the backend names them, with their caps.
    fn wants(&self) -> Vec<Want> {
        let d = &self.ctx.deploy;
        let disks = self.template.disk_list();
        let target_storage =
            (self.method == DeployMethod::FullClone).then(|| self.full_clone_storage());
        let query = SlotQuery {
            method: self.method,
            source_node: &self.template.node,
            source_disks: &disks,
            target_node: &self.vm.node,
            target_storage: target_storage.as_deref(),
        };
        self.backend
            .slots(&query)
            .iter()
            .map(|key| {
                Want::for_slot(
                    self.cluster.id,
                    key,
                    d.node_concurrency,
                    d.storage_concurrency,
                )
            })
            .collect()
    }

    async fn take_slots(&self) -> Result<bool, JobError> {
        let patience = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(10));
        self.ctx
            .slots
            .acquire(&self.wants(), &self.holder, SLOT_TTL, patience)
            .await
            .map_err(JobError::from)
    }

    async fn release_slots(&self) {
        release_slots(self.ctx).await;
    }

    /// The row's state, typed.
    fn state(&self) -> Result<VmState, JobError> {
        VmState::from_stored(&self.vm.state).map_err(|e| JobError::Permanent(e.to_string()))
    }

    async fn set_state(&mut self, state: VmState, op: Option<&Operation>) -> Result<(), JobError> {
        let upid_text = op.map(|o| o.as_str().to_string());
        self.ctx
            .classes
            .update_vm(
                self.vm.id,
                VmChange {
                    state: Some(state),
                    upid: Some(upid_text.as_deref()),
                    error: Some(None),
                    ..Default::default()
                },
            )
            .await?;
        self.vm.state = state.as_str().to_string();
        self.vm.upid = upid_text;
        Ok(())
    }

    fn done(&self) -> JobOutcome {
        JobOutcome::Done(Some(json!({
            "vmid": self.vm.vmid,
            "node": self.vm.node,
            "name": self.vm.name,
        })))
    }
}
