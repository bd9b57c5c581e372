//! A class's VMs as the people who use them see them (`/api/vms`): who may see which VM, the
//! student a VM is assigned to and its keep-running flag, and the power state the power jobs
//! record. Power jobs only ever move a VM between `created` and `running`: a VM being deployed
//! or destroyed keeps the state its own job gives it.

use chrono::Utc;
use labfleet_db::sql;
use labfleet_entities::class_vm;
use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryResult,
};
use serde::Serialize;

use crate::{
    classes::ClassStore,
    state::{ClassState, VmState},
};

/// The stored names of the states in which a VM may be powered on or off.
fn powerable() -> [&'static str; 2] {
    VmState::POWERABLE.map(VmState::as_str)
}

/// One VM of a class, for its teacher, its student and admins.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AssignedVm {
    /// labfleet's id of the VM (`class_vms.id`).
    pub id: i64,
    /// Its class.
    pub class_id: i64,
    /// Its class's name.
    pub class_name: String,
    /// Student index in the class (1-based).
    pub index: i32,
    /// VM name.
    pub name: String,
    /// The cluster's `cluster_id`.
    pub cluster: Option<String>,
    /// Node.
    pub node: String,
    /// Proxmox VMID.
    pub vmid: i64,
    /// `created` (exists, powered off), `running`, or a deployment state (`planned`, `cloning`,
    /// `starting`, `failed`, `deleting`).
    pub state: String,
    /// The student it is assigned to.
    pub student: Option<String>,
    /// Never shut down for idleness.
    pub keep_running: bool,
    /// The teacher who owns its class.
    #[serde(skip)]
    pub owner: String,
}

/// Whose VMs a listing shows.
#[derive(Clone, Copy, Debug)]
pub enum VmScope<'a> {
    /// Every VM (admins).
    All,
    /// VMs of classes this teacher owns.
    Owner(&'a str),
    /// VMs assigned to this student.
    Student(&'a str),
}

const SELECT: &str = "SELECT v.id, v.class_id, c.name AS class_name, c.owner, k.cluster_id, \
     v.idx, v.name, v.node, v.vmid, v.state, v.student, v.keep_running \
     FROM class_vms v JOIN classes c ON c.id = v.class_id \
     LEFT JOIN clusters k ON k.id = v.cluster_db_id";

fn assigned(r: &QueryResult) -> Result<AssignedVm, DbErr> {
    Ok(AssignedVm {
        id: r.try_get("", "id")?,
        class_id: r.try_get("", "class_id")?,
        class_name: r.try_get("", "class_name")?,
        owner: r.try_get("", "owner")?,
        cluster: r.try_get("", "cluster_id")?,
        index: r.try_get("", "idx")?,
        name: r.try_get("", "name")?,
        node: r.try_get("", "node")?,
        vmid: r.try_get("", "vmid")?,
        state: r.try_get("", "state")?,
        student: r.try_get("", "student")?,
        keep_running: r.try_get("", "keep_running")?,
    })
}

impl ClassStore {
    /// One VM with its class's owner; `None` when it or its class is gone.
    pub async fn assigned_vm(&self, id: i64) -> Result<Option<AssignedVm>, DbErr> {
        let db = self.db();
        let row = db
            .query_one(sql(
                db.get_database_backend(),
                &format!("{SELECT} WHERE v.id = ? AND c.state <> ?"),
                vec![id.into(), ClassState::Deleted.as_str().into()],
            ))
            .await?;
        row.as_ref().map(assigned).transpose()
    }

    /// The VMs `scope` may see, by class and index.
    pub async fn assigned_vms(
        &self,
        scope: VmScope<'_>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<AssignedVm>, DbErr> {
        let db = self.db();
        let mut values = vec![ClassState::Deleted.as_str().into()];
        let filter = match scope {
            VmScope::All => "",
            VmScope::Owner(owner) => {
                values.push(owner.into());
                " AND c.owner = ?"
            }
            VmScope::Student(student) => {
                values.push(student.into());
                " AND v.student = ?"
            }
        };
        values.push((limit as i64).into());
        values.push((offset as i64).into());
        let rows = db
            .query_all(sql(
                db.get_database_backend(),
                &format!(
                    "{SELECT} WHERE c.state <> ?{filter} \
                     ORDER BY v.class_id, v.idx LIMIT ? OFFSET ?"
                ),
                values,
            ))
            .await?;
        rows.iter().map(assigned).collect()
    }

    /// Sets a VM's student (`Some(None)` unassigns) and keep-running flag; `None` leaves a field
    /// alone. Returns whether the row exists.
    pub async fn set_assignment(
        &self,
        id: i64,
        student: Option<Option<&str>>,
        keep_running: Option<bool>,
    ) -> Result<bool, DbErr> {
        let mut q = class_vm::Entity::update_many()
            .col_expr(class_vm::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class_vm::Column::Id.eq(id));
        if let Some(student) = student {
            q = q.col_expr(
                class_vm::Column::Student,
                Expr::value(student.map(str::to_string)),
            );
        }
        if let Some(keep) = keep_running {
            q = q.col_expr(class_vm::Column::KeepRunning, Expr::value(keep));
        }
        Ok(q.exec(self.db()).await?.rows_affected == 1)
    }

    /// Records the power task working on a VM, unless the VM left the powerable states (a
    /// destroy began). Returns whether it was recorded.
    pub async fn record_power_task(&self, id: i64, upid: &str) -> Result<bool, DbErr> {
        let done = class_vm::Entity::update_many()
            .col_expr(class_vm::Column::Upid, Expr::value(upid.to_string()))
            .col_expr(class_vm::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class_vm::Column::Id.eq(id))
            .filter(class_vm::Column::State.is_in(powerable()))
            .exec(self.db())
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Records a VM's power state (`created` or `running`) after a power action, and forgets
    /// `upid` if it is still the row's task. A VM that left the powerable states meanwhile (a
    /// destroy began) keeps its state. Returns whether the state was written.
    pub async fn finish_power(
        &self,
        id: i64,
        state: VmState,
        upid: Option<&str>,
    ) -> Result<bool, DbErr> {
        let db = self.db();
        if let Some(upid) = upid {
            class_vm::Entity::update_many()
                .col_expr(class_vm::Column::Upid, Expr::value(Option::<String>::None))
                .filter(class_vm::Column::Id.eq(id))
                .filter(class_vm::Column::Upid.eq(upid))
                .exec(db)
                .await?;
        }
        let done = class_vm::Entity::update_many()
            .col_expr(class_vm::Column::State, Expr::value(state.as_str()))
            .col_expr(class_vm::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(class_vm::Column::Id.eq(id))
            .filter(class_vm::Column::State.is_in(powerable()))
            .exec(db)
            .await?;
        Ok(done.rows_affected == 1)
    }
}
