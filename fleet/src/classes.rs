//! Reading and writing classes and their VMs.

use chrono::Utc;
use labfleet_entities::{class, class_vm};

use labfleet_db::sql;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    request::NewClass,
    state::{ClassState, VmState},
};

/// Access to classes. Cheap to clone.
#[derive(Clone)]
pub struct ClassStore {
    db: DatabaseConnection,
}

/// A class's VM as the API shows it: its row, with the state of the job working on it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VmView {
    /// labfleet's id of the VM.
    pub id: i64,
    /// Student index (1-based).
    pub index: i32,
    /// VM name.
    pub name: String,
    /// Proxmox VMID.
    pub vmid: i64,
    /// Node.
    pub node: String,
    /// `planned`, `cloning`, `created`, `starting`, `running`, `failed`, `cancelled`, `deleting`.
    pub state: String,
    /// What its job is doing now.
    pub step: Option<String>,
    /// Why it failed (Proxmox's message).
    pub error: Option<String>,
    /// Its job.
    pub job_id: Option<Uuid>,
    /// The student it belongs to.
    pub student: Option<String>,
    /// Never shut down for idleness (set with `PATCH /api/classes/{id}/vms/{vm_id}`).
    pub keep_running: bool,
}

impl ClassStore {
    /// A store on a migrated database.
    pub fn new(db: DatabaseConnection) -> ClassStore {
        ClassStore { db }
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Stores a validated class (inside the transaction that also creates its deploy job).
    pub async fn insert<C: ConnectionTrait>(
        conn: &C,
        new: &NewClass,
        owner: &str,
    ) -> Result<class::Model, DbErr> {
        let now = Utc::now();
        class::ActiveModel {
            name: Set(new.name.clone()),
            slug: Set(new.slug.clone()),
            description: Set(new.description.clone()),
            owner: Set(owner.to_string()),
            cluster_db_id: Set(new.cluster.id),
            template_vmid: Set(new.template.vmid),
            method: Set(new.method.as_str().to_string()),
            deployment_node: Set(new.deployment_node.clone()),
            start_vms: Set(new.start),
            pool_size: Set(new.pool_size as i32),
            idle_cpu_percent: Set(new.idle_cpu_percent),
            idle_minutes: Set(new.idle_minutes),
            state: Set(ClassState::Active.as_str().to_string()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(conn)
        .await
    }

    /// One class, deleted ones included.
    pub async fn get(&self, id: i64) -> Result<Option<class::Model>, DbErr> {
        class::Entity::find_by_id(id).one(&self.db).await
    }

    /// Classes not deleted, newest first; only `owner`'s when given.
    pub async fn list(&self, owner: Option<&str>) -> Result<Vec<class::Model>, DbErr> {
        let mut q = class::Entity::find()
            .filter(class::Column::State.ne(ClassState::Deleted.as_str()))
            .order_by_desc(class::Column::Id);
        if let Some(owner) = owner {
            q = q.filter(class::Column::Owner.eq(owner));
        }
        q.all(&self.db).await
    }

    /// A class's VM rows by index.
    pub async fn vm_rows(&self, class_id: i64) -> Result<Vec<class_vm::Model>, DbErr> {
        class_vm::Entity::find()
            .filter(class_vm::Column::ClassId.eq(class_id))
            .order_by_asc(class_vm::Column::Idx)
            .all(&self.db)
            .await
    }

    /// One VM row.
    pub async fn vm(&self, id: i64) -> Result<Option<class_vm::Model>, DbErr> {
        class_vm::Entity::find_by_id(id).one(&self.db).await
    }

    /// A class's VMs with their jobs' state, by index.
    pub async fn vm_views(&self, class_id: i64) -> Result<Vec<VmView>, DbErr> {
        let rows = self
            .db
            .query_all(sql(
                self.db.get_database_backend(),
                "SELECT v.id, v.idx, v.name, v.vmid, v.node, v.state, v.error, v.job_id, v.student, v.keep_running, \
                        j.status AS job_status, j.step AS job_step, j.error AS job_error \
                 FROM class_vms v LEFT JOIN jobs j ON j.id = v.job_id \
                 WHERE v.class_id = ? ORDER BY v.idx",
                vec![class_id.into()],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("", "state")?;
            let job_status: Option<String> = r.try_get("", "job_status")?;
            let error: Option<String> = r.try_get("", "error")?;
            let job_error: Option<String> = r.try_get("", "job_error")?;
            let unfinished = VmState::parse(&state).is_some_and(VmState::deploying);
            // A VM whose job gave up stays where it got to; show why it stopped.
            let shown = match job_status.as_deref() {
                Some("failed" | "dead") if unfinished => VmState::Failed.as_str().to_string(),
                Some("cancelled") if unfinished => "cancelled".to_string(),
                _ => state,
            };
            let running = matches!(
                job_status.as_deref(),
                Some("running" | "retrying" | "queued")
            );
            out.push(VmView {
                id: r.try_get("", "id")?,
                index: r.try_get("", "idx")?,
                name: r.try_get("", "name")?,
                vmid: r.try_get("", "vmid")?,
                node: r.try_get("", "node")?,
                state: shown,
                step: if running {
                    r.try_get("", "job_step")?
                } else {
                    None
                },
                error: error.or(job_error),
                job_id: r.try_get("", "job_id")?,
                student: r.try_get("", "student")?,
                keep_running: r.try_get("", "keep_running")?,
            });
        }
        Ok(out)
    }

    /// Sets a class's state.
    pub async fn set_state<C: ConnectionTrait>(
        conn: &C,
        class_id: i64,
        state: ClassState,
    ) -> Result<(), DbErr> {
        class::Entity::update_many()
            .col_expr(class::Column::State, Expr::value(state.as_str()))
            .col_expr(class::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class::Column::Id.eq(class_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Sets a class's pool size.
    pub async fn set_pool_size<C: ConnectionTrait>(
        conn: &C,
        class_id: i64,
        pool_size: u32,
    ) -> Result<(), DbErr> {
        class::Entity::update_many()
            .col_expr(class::Column::PoolSize, Expr::value(pool_size as i32))
            .col_expr(class::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class::Column::Id.eq(class_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Records a VM's progress: its state, and optionally its task, error and job.
    pub async fn update_vm(&self, id: i64, change: VmChange<'_>) -> Result<(), DbErr> {
        let mut q = class_vm::Entity::update_many()
            .col_expr(class_vm::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class_vm::Column::Id.eq(id));
        if let Some(state) = change.state {
            q = q.col_expr(class_vm::Column::State, Expr::value(state.as_str()));
        }
        if let Some(upid) = change.upid {
            q = q.col_expr(
                class_vm::Column::Upid,
                Expr::value(upid.map(str::to_string)),
            );
        }
        if let Some(error) = change.error {
            q = q.col_expr(
                class_vm::Column::Error,
                Expr::value(error.map(str::to_string)),
            );
        }
        if let Some(job) = change.job_id {
            q = q.col_expr(class_vm::Column::JobId, Expr::value(job));
        }
        if let Some((vmid, name)) = change.vmid {
            q = q
                .col_expr(class_vm::Column::Vmid, Expr::value(vmid))
                .col_expr(class_vm::Column::Name, Expr::value(name.to_string()));
        }
        q.exec(&self.db).await?;
        Ok(())
    }

    /// Removes a VM's row (after its VM was destroyed).
    pub async fn delete_vm<C: ConnectionTrait>(conn: &C, id: i64) -> Result<(), DbErr> {
        // Its idle history (the scheduler's) goes with it.
        conn.execute(sql(
            conn.get_database_backend(),
            "DELETE FROM vm_activity WHERE class_vm_id = ?",
            vec![id.into()],
        ))
        .await?;
        class_vm::Entity::delete_by_id(id).exec(conn).await?;
        Ok(())
    }
}

/// Fields of a VM row to change; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct VmChange<'a> {
    /// New state.
    pub state: Option<VmState>,
    /// New task (`Some(None)` clears it).
    pub upid: Option<Option<&'a str>>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<&'a str>>,
    /// The job working on it.
    pub job_id: Option<Uuid>,
    /// A new VMID and name (after a foreign VM was found on the old one).
    pub vmid: Option<(i64, &'a str)>,
}
