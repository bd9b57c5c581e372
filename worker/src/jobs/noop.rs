//! The diagnostic `noop` job: works for a while, fails on request (transiently or for good),
//! continues itself, fans out children, and applies an observable effect exactly once. It lets
//! the engine be tested and benchmarked without Proxmox.

use std::time::Duration;

use chrono::Utc;
use labfleet_entities::noop_effect;
use labfleet_jobs::{JobSpec, NoopArgs};
use sea_orm::{
    sea_query::{Expr, OnConflict},
    ActiveValue::Set,
    EntityTrait,
};
use serde_json::json;

use crate::context::{JobContext, JobError, JobOutcome};

pub(crate) async fn run(args: NoopArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let continued: u32 = ctx
        .checkpoint
        .as_ref()
        .and_then(|c| c.get("continued"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;

    if continued == 0 && args.effect {
        apply_effect_once(&ctx).await?;
    }
    if args.duration_ms > 0 {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(JobError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(args.duration_ms)) => {}
        }
    }
    if args.fail_permanently {
        return Err(JobError::Permanent(
            "noop was asked to fail permanently".into(),
        ));
    }
    if ctx.attempt <= args.fail_attempts as i32 {
        return Err(JobError::Transient(format!(
            "noop was asked to fail attempt {} of its first {}",
            ctx.attempt, args.fail_attempts
        )));
    }
    if continued < args.continue_times {
        return Ok(JobOutcome::Continue {
            after: Duration::from_millis(args.continue_after_ms),
            checkpoint: json!({ "continued": continued + 1 }),
            note: Some(format!(
                "continuation {} of {}",
                continued + 1,
                args.continue_times
            )),
        });
    }
    if args.children > 0 {
        let child = args.child.as_deref().cloned().unwrap_or_default();
        let children = (0..args.children)
            .map(|_| {
                JobSpec::Noop(NoopArgs {
                    family: child.family.or(args.family),
                    ..child.clone()
                })
            })
            .collect();
        return ctx.spawn_children(children).await;
    }
    Ok(JobOutcome::Done(Some(json!({ "continued": continued }))))
}

/// The effect is idempotent: an existing row means a previous delivery applied it already. A
/// second application (which would be a bug) increments `applications` so tests can see it.
async fn apply_effect_once(ctx: &JobContext) -> Result<(), JobError> {
    let existing = noop_effect::Entity::find_by_id(ctx.job_id)
        .one(ctx.store.db())
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?;
    if existing.is_some() {
        return Ok(());
    }
    noop_effect::Entity::insert(noop_effect::ActiveModel {
        job_id: Set(ctx.job_id),
        applications: Set(1),
        applied_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::column(noop_effect::Column::JobId)
            .value(
                noop_effect::Column::Applications,
                Expr::col((noop_effect::Entity, noop_effect::Column::Applications)).add(1),
            )
            .to_owned(),
    )
    .exec_without_returning(ctx.store.db())
    .await
    .map_err(|e| JobError::Transient(e.to_string()))?;
    Ok(())
}
