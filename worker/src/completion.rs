//! Writing outcomes: finished runs are collected and written in one transaction per batch (fenced
//! by the lease), then follow-ups are sent (delayed retries, continuations, dead letters, parents
//! finished) and only then are the messages acknowledged.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use chrono::Utc;
use labfleet_jobs::{
    queue::{DeadLetter, Delivery},
    retry::Reconnect,
    store::{Completion, Outcome},
    Family,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use uuid::Uuid;

use crate::engine::Shared;

/// A finished run waiting to be written.
pub(crate) struct Finished {
    pub(crate) completion: Completion,
    pub(crate) family: Family,
    pub(crate) parent_id: Option<Uuid>,
    pub(crate) delivery: Delivery,
    /// Held until the outcome is written, so the consumer does not take more than it can finish.
    pub(crate) _permit: OwnedSemaphorePermit,
}

pub(crate) async fn completion_loop(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Finished>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < s.settings.worker.batch_max {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        write_batch(&s, batch).await;
    }
}

async fn write_batch(s: &Shared, batch: Vec<Finished>) {
    let completions: Vec<Completion> = batch.iter().map(|f| f.completion.clone()).collect();
    let mut backoff = Reconnect::new(Duration::from_secs(5));
    let mut failures = 0;
    let applied = loop {
        match s.store.complete_batch(&s.id, &completions).await {
            Ok(applied) => break applied,
            Err(e) if s.stopping.load(Ordering::SeqCst) && failures >= 5 => {
                // Shutting down without a database: give up. The messages are not acked, so the
                // broker redelivers them; the leases expire and the jobs run again elsewhere.
                tracing::error!(error = %e, jobs = completions.len(), "giving up writing job outcomes at shutdown");
                return;
            }
            Err(e) => {
                failures += 1;
                // Keep trying: the messages stay unacked meanwhile. If this outlasts the lease,
                // another worker takes the jobs over and these writes are refused by the fence.
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, jobs = completions.len(), retry_in_ms = delay.as_millis() as u64, "cannot write job outcomes");
                tokio::time::sleep(delay).await;
            }
        }
    };

    let now = Utc::now();
    let mut delayed: HashMap<(Family, u64), Vec<Uuid>> = HashMap::new();
    let mut immediate: HashMap<Family, Vec<Uuid>> = HashMap::new();
    let mut parents = BTreeSet::new();
    for (f, ok) in batch.iter().zip(&applied) {
        if !ok {
            tracing::info!(job.id = %f.completion.job_id, "outcome not written: the lease was lost to another worker");
            continue;
        }
        match &f.completion.outcome {
            Outcome::Retry { at, .. } | Outcome::Park { at, .. } => {
                let ms = (*at - now).num_milliseconds().max(0) as u64;
                delayed
                    .entry((f.family, ms))
                    .or_default()
                    .push(f.completion.job_id);
            }
            Outcome::HandBack => immediate
                .entry(f.family)
                .or_default()
                .push(f.completion.job_id),
            Outcome::WaitChildren => {
                // Children may all have finished before the parent parked.
                parents.insert(f.completion.job_id);
            }
            Outcome::Failed { error } | Outcome::Dead { error } => {
                let status = if matches!(f.completion.outcome, Outcome::Dead { .. }) {
                    "dead"
                } else {
                    "failed"
                };
                let letter = DeadLetter {
                    job_id: f.completion.job_id,
                    status: status.into(),
                    error: error.clone(),
                };
                if let Err(e) = s.publisher.queue().publish_dead_letter(&letter).await {
                    tracing::warn!(error = %e, "could not record a dead letter");
                }
            }
            Outcome::Succeeded { .. } | Outcome::Cancelled { .. } => {}
        }
        let terminal = matches!(
            f.completion.outcome,
            Outcome::Succeeded { .. }
                | Outcome::Failed { .. }
                | Outcome::Dead { .. }
                | Outcome::Cancelled { .. }
        );
        if terminal {
            if let Some(parent) = f.parent_id {
                parents.insert(parent);
            }
        }
    }
    for ((family, ms), ids) in delayed {
        if let Err(e) = s
            .publisher
            .publish_delayed(family, &ids, Duration::from_millis(ms))
            .await
        {
            tracing::warn!(error = %e, "could not schedule retries; the recovery sweep will");
        }
    }
    for (family, ids) in immediate {
        if let Err(e) = s.publisher.publish(family, &ids).await {
            tracing::warn!(error = %e, "could not requeue handed-back jobs; the recovery sweep will");
        }
    }
    if !parents.is_empty() {
        let parents: Vec<Uuid> = parents.into_iter().collect();
        let mut backoff = Reconnect::new(Duration::from_secs(2));
        for _ in 0..5 {
            match s.store.finalize_parents(&parents).await {
                Ok(_) => break,
                Err(e) => {
                    // The recovery sweep finishes parents that are missed here.
                    tracing::warn!(error = %e, "could not finish parents");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
    for f in batch {
        f.delivery.ack().await;
    }
}
