//! The observable side effect of the diagnostic `noop` job, so tests can prove that an effect is
//! applied exactly once however often a job is delivered.

use sea_orm::entity::prelude::*;

/// One row of `noop_effects`: `applications` counts how often the effect was applied (must be 1).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "noop_effects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: Uuid,
    pub applications: i32,
    pub applied_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
