//! `deploy_vm`: makes one VM of a class, as a small state machine stored in its `class_vms` row
//! (`planned → cloning → created [→ starting → running]`), so that any run — a retry, a
//! redelivery after a worker died, a continuation — picks up where the last one stopped:
//! a running clone task is waited for, not started again; a VM already made (found by its marker)
//! is adopted; a foreign VM on our VMID gets the VMID quarantined and the VM a new one.

use std::time::Duration;

use labfleet_deploy::{
    naming::vm_name, vmids, ClassState, DeployMethod, Marker, VmChange, VmState, Want,
};
use labfleet_entities::{class, class_vm, cluster, template};
use labfleet_jobs::ClassVmArgs;
use labfleet_proxmox::{CloneParams, ProxmoxClient, StartParams, Upid};
use serde_json::json;
use tokio::time::Instant;

use super::{
    config_clone::ConfigClone, connect, db, inspect, load_class, park, pve, run_deadline,
    template_row, vmid_error, wait_task, Found, Waited,
};
use crate::context::{JobContext, JobError, JobOutcome};

/// Slots outlive a run by this much: long enough to park and continue, short enough that a dead
/// worker's slots come back soon (a re-run of the same job takes them back at once anyway).
const SLOT_TTL: Duration = Duration::from_secs(120);

/// Times a clone may meet "already exists" in one run before the run gives up and retries later.
const MAX_CONFLICTS: u32 = 3;

pub(crate) async fn run(args: ClassVmArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let vm = ctx
        .classes
        .vm(args.class_vm_id)
        .await
        .map_err(db)?
        .ok_or_else(|| {
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
            .await
            .map_err(db)?;
    }
    let (cluster, client) = connect(&ctx, vm.cluster_db_id).await?;
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
        deadline: run_deadline(&ctx),
        class,
        cluster,
        client,
        template,
        method,
        holder,
        vm,
    };
    let result = run.drive().await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        if let Err(e) = ctx.slots.release(&run.holder).await {
            tracing::warn!(error = %e, "could not release slots; they expire by themselves");
        }
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

/// Why a clone (or create) could not be started.
pub(super) enum StartError {
    /// Proxmox refused or failed.
    Pve(labfleet_proxmox::ProxmoxError),
    /// Something else (SSH, missing data), already classified.
    Job(JobError),
    /// The VMID's place is taken by something that is not ours (a config clone found a disk
    /// where its overlay would go): look at the VMID again before anything else.
    Taken(String),
}

struct VmRun<'a> {
    ctx: &'a JobContext,
    deadline: Instant,
    class: class::Model,
    cluster: cluster::Model,
    client: ProxmoxClient,
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
                        return Ok(park(Duration::from_millis(500), "waiting for a slot"));
                    }
                    self.ctx
                        .set_step(format!("cloning {} on {}", self.vm.vmid, self.vm.node))
                        .await;
                    match self.start_clone().await {
                        Ok(upid) => self.set_state(VmState::Cloning, Some(&upid)).await?,
                        Err(StartError::Pve(e))
                            if e.is_already_exists() && conflicts < MAX_CONFLICTS =>
                        {
                            conflicts += 1;
                            check_world = true;
                        }
                        Err(StartError::Taken(_)) if conflicts < MAX_CONFLICTS => {
                            conflicts += 1;
                            check_world = true;
                        }
                        Err(StartError::Taken(m)) => return Err(JobError::Permanent(m)),
                        Err(StartError::Pve(e)) => return Err(pve(e)),
                        Err(StartError::Job(e)) => return Err(e),
                    }
                }
                VmState::Cloning => {
                    let Some(upid) = self.vm.upid.as_deref().and_then(|u| Upid::parse(u).ok())
                    else {
                        self.set_state(VmState::Planned, None).await?;
                        check_world = true;
                        continue;
                    };
                    // Resumed from a park or another worker: the slots are still ours.
                    self.ctx
                        .slots
                        .renew(&self.holder, SLOT_TTL)
                        .await
                        .map_err(db)?;
                    let step = (self.method == DeployMethod::FullClone)
                        .then(|| format!("copying disks of {}", self.vm.vmid));
                    match wait_task(
                        self.ctx,
                        &self.client,
                        &upid,
                        step.as_deref(),
                        self.deadline,
                    )
                    .await
                    {
                        Ok(Waited::StillRunning) => {
                            return Ok(park(Duration::from_secs(1), "clone task running"))
                        }
                        Ok(Waited::Done) => {
                            self.release_slots().await;
                            self.set_state(VmState::Created, None).await?;
                            if self.ctx.cancel.is_cancelled() {
                                // Made before the cancel could stop it: recorded, not started.
                                return Ok(self.done());
                            }
                        }
                        Err(JobError::Cancelled) => return Err(JobError::Cancelled),
                        Err(e) => {
                            // A failed clone task leaves no VM behind (PVE cleans up).
                            self.release_slots().await;
                            self.set_state(VmState::Planned, None).await?;
                            let text = e.to_string().to_lowercase();
                            if (text.contains("already exists") || text.contains("file exists"))
                                && conflicts < MAX_CONFLICTS
                            {
                                conflicts += 1;
                                check_world = true;
                                continue;
                            }
                            return Err(e);
                        }
                    }
                }
                VmState::Created => {
                    if !self.class.start_vms {
                        return Ok(self.done());
                    }
                    self.ctx
                        .set_step(format!("starting {} on {}", self.vm.vmid, self.vm.node))
                        .await;
                    match self
                        .client
                        .qemu_start(&self.vm.node, self.vm.vmid as u32, &StartParams::default())
                        .await
                    {
                        Ok(upid) => self.set_state(VmState::Starting, Some(&upid)).await?,
                        Err(e) if e.to_string().contains("already running") => {
                            self.set_state(VmState::Running, None).await?
                        }
                        Err(e) => return Err(pve(e)),
                    }
                }
                VmState::Starting => {
                    let Some(upid) = self.vm.upid.as_deref().and_then(|u| Upid::parse(u).ok())
                    else {
                        self.set_state(VmState::Created, None).await?;
                        continue;
                    };
                    match wait_task(self.ctx, &self.client, &upid, None, self.deadline).await {
                        Ok(Waited::StillRunning) => {
                            return Ok(park(Duration::from_secs(1), "start task running"))
                        }
                        Ok(Waited::Done) => self.set_state(VmState::Running, None).await?,
                        Err(JobError::Cancelled) => return Err(JobError::Cancelled),
                        // Proxmox reports a start of a running VM in the start task, not in the
                        // request's answer: it runs, which is what was asked (an earlier run
                        // started it before its record was written).
                        Err(e) if e.to_string().contains("already running") => {
                            self.set_state(VmState::Running, None).await?
                        }
                        Err(e) => {
                            self.set_state(VmState::Created, None).await?;
                            return Err(e);
                        }
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
        let (found, in_use) = inspect(&self.client, self.vm.vmid, self.vm.id)
            .await
            .map_err(pve)?;
        match found {
            Found::Absent => {}
            Found::Ours {
                in_progress: true, ..
            } => {
                self.ctx
                    .set_step("waiting for an earlier clone of this VM to finish")
                    .await;
                return Ok(Some(park(Duration::from_secs(1), "earlier clone running")));
            }
            Found::BeingMade => {
                self.ctx
                    .set_step(format!(
                        "waiting for the clone on VMID {} to finish, to tell whose it is",
                        self.vm.vmid
                    ))
                    .await;
                return Ok(Some(park(Duration::from_secs(1), "a clone on our VMID")));
            }
            Found::Ours { running, .. } => {
                tracing::info!(vmid = self.vm.vmid, "adopting a VM made by an earlier run");
                self.set_state(VmState::made(running), None).await?;
            }
            Found::Foreign { node } => self.move_to_new_vmid(&node, &in_use).await?,
        }
        Ok(None)
    }

    /// A VM that is not ours sits on our VMID: quarantine the id and take another.
    async fn move_to_new_vmid(
        &mut self,
        node: &str,
        in_use: &std::collections::BTreeSet<i64>,
    ) -> Result<(), JobError> {
        let conn = self.ctx.store.db();
        vmids::quarantine(conn, self.cluster.id, self.vm.vmid)
            .await
            .map_err(db)?;
        let new = vmids::reserve(
            conn,
            self.cluster.id,
            (self.cluster.vmid_range_start, self.cluster.vmid_range_end),
            1,
            in_use,
            &format!("class:{}", self.class.id),
            Duration::from_secs(self.ctx.deploy.vmid_cooldown_secs),
        )
        .await
        .map_err(vmid_error)?[0];
        let name = vm_name(&self.class.slug, self.vm.idx as u32, new as u32);
        tracing::warn!(
            old = self.vm.vmid,
            new,
            node,
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
            .await
            .map_err(db)?;
        self.vm.vmid = new;
        self.vm.name = name;
        Ok(())
    }

    /// Starts the clone (or, for `config_clone`, the create) and returns its task.
    async fn start_clone(&self) -> Result<Upid, StartError> {
        let marker = Marker {
            class_id: self.class.id,
            class_vm_id: self.vm.id,
        };
        let vmid = self.vm.vmid as u32;
        let mut params = match self.method {
            DeployMethod::LinkedClone => CloneParams::linked(vmid),
            DeployMethod::FullClone => {
                let storage = self.full_clone_storage();
                CloneParams::full(vmid).storage(storage)
            }
            DeployMethod::ConfigClone => {
                return ConfigClone {
                    ctx: self.ctx,
                    client: &self.client,
                    cluster: &self.cluster,
                    template: &self.template,
                    vm: &self.vm,
                    description: marker.description(self.class.description.as_deref()),
                }
                .create()
                .await;
            }
        }
        .name(self.vm.name.clone())
        .description(marker.description(self.class.description.as_deref()));
        if self.vm.node != self.template.node {
            params = params.target(self.vm.node.clone());
        }
        self.client
            .qemu_clone(&self.template.node, self.template.vmid as u32, &params)
            .await
            .map_err(StartError::Pve)
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

    /// The slots this VM's clone needs: its node, and every storage whose lock the clone takes
    /// (the template's disk storages for a linked clone, the target for a full copy, the
    /// cloud-init drive's storage for every method).
    fn wants(&self) -> Vec<Want> {
        let d = &self.ctx.deploy;
        let cluster = self.cluster.id;
        let disks = self.template.disk_list();
        let mut wants = vec![Want::node(cluster, &self.vm.node, d.node_concurrency)];
        let mut storage = |name: &str, shared: bool, node: &str| {
            let node = (!shared).then_some(node);
            wants.push(Want::storage(cluster, node, name, d.storage_concurrency));
        };
        for disk in disks.iter().filter(|d| !d.iso) {
            let needs_lock = match self.method {
                DeployMethod::LinkedClone => true,
                DeployMethod::FullClone | DeployMethod::ConfigClone => disk.cloudinit,
            };
            if needs_lock {
                storage(&disk.storage, disk.shared, &self.template.node);
            }
        }
        if self.method == DeployMethod::FullClone {
            let target = self.full_clone_storage();
            let shared = disks.iter().any(|d| d.storage == target && d.shared);
            storage(&target, shared, &self.vm.node);
        }
        wants
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
            .map_err(db)
    }

    async fn release_slots(&self) {
        if let Err(e) = self.ctx.slots.release(&self.holder).await {
            tracing::warn!(error = %e, "could not release slots; they expire by themselves");
        }
    }

    /// The row's state, typed.
    fn state(&self) -> Result<VmState, JobError> {
        VmState::from_stored(&self.vm.state).map_err(|e| JobError::Permanent(e.to_string()))
    }

    async fn set_state(&mut self, state: VmState, upid: Option<&Upid>) -> Result<(), JobError> {
        let upid_text = upid.map(|u| u.to_string());
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
            .await
            .map_err(db)?;
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
