//! One entry of the audit log: who did what to which object, when, from where, and how it ended.

use sea_orm::entity::prelude::*;

/// One row of `audit_events`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// The user's name (`admin` for the bootstrap token).
    pub actor: String,
    pub actor_role: String,
    /// What was done, `<object>.<verb>` (`cluster.update`).
    pub action: String,
    /// What it was done to, `<object>:<id>` (`cluster:3`).
    pub target: String,
    /// Non-secret particulars (names, the fields changed).
    pub detail: Option<Json>,
    /// The peer address of the request (or `cli`).
    pub source: String,
    /// How it ended (`succeeded`, `failed`), when recorded.
    pub outcome: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
