//! A job: one unit of work with its state machine, lease and retry bookkeeping.

use sea_orm::entity::prelude::*;

/// One row of `jobs`. `status` holds a `labfleet_jobs::JobStatus` in snake_case.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    pub family: String,
    pub payload: Json,
    pub status: String,
    pub parent_id: Option<Uuid>,
    pub created_by: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub lease_token: Option<Uuid>,
    pub next_run_at: Option<DateTimeUtc>,
    pub published: bool,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub checkpoint: Option<Json>,
    pub result: Option<Json>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// The class a deployment belongs to (set on the parent job only).
    pub class_id: Option<i64>,
    /// What the handler is doing now (`cloning on pve2`), for progress views.
    pub step: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
