//! Publishing after commit, and the one way new work enters the system (`submit`, `submit_with`):
//! jobs are stored, then their ids are sent on the queue of the family their spec travels on;
//! after the broker's confirms the jobs are marked published in the background, many per
//! statement. A job whose publish fails stays unpublished in the database and the recovery sweep
//! sends it later: nothing accepted is lost, and a duplicate message is harmless because claiming
//! is conditional.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    queue::{Queue, QueueError},
    spec::Family,
    store::{CreateOutcome, IdempotencyClaim, JobStore, NewJob, Republish, StoreError, TxnFuture},
};

/// How long a request path waits for the broker to confirm a job it just stored. A slower (or
/// absent) broker does not hold the answer back: the job is stored, and the recovery sweep
/// publishes what was not confirmed.
const REQUEST_PUBLISH_WAIT: Duration = Duration::from_secs(1);

/// Ids per publish: a fan-out of thousands of children goes out in a few batches.
const PUBLISH_CHUNK: usize = 500;

/// Creates jobs, publishes them and records that they were published.
#[derive(Clone)]
pub struct Publisher {
    queue: Queue,
    store: JobStore,
    confirmed: mpsc::UnboundedSender<Vec<Uuid>>,
}

impl Publisher {
    /// Starts the background task that marks confirmed jobs as published; it ends when every
    /// `Publisher` clone is dropped.
    pub fn start(queue: Queue, store: JobStore) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(mark_published_loop(store.clone(), rx));
        (
            Publisher {
                queue,
                store,
                confirmed: tx,
            },
            task,
        )
    }

    /// Stores `jobs` (rows and `queued` events, one transaction), then publishes each on the
    /// queue of its spec's family; returns their ids in order. Once stored, a job is accepted:
    /// a failed publish is logged and the recovery sweep sends it later.
    pub async fn submit(&self, jobs: &[NewJob]) -> Result<Vec<Uuid>, StoreError> {
        let ids = self.store.create(jobs).await?;
        let routed: Vec<(Family, Uuid)> = jobs
            .iter()
            .zip(&ids)
            .map(|(job, id)| (job.spec.family(), *id))
            .collect();
        self.publish_stored(&routed).await;
        Ok(ids)
    }

    /// Stores one job for a request, with an optional idempotency claim and rows of the
    /// caller's own written in the job's transaction (see [`JobStore::create_with`]), then
    /// publishes a newly created job on its spec's family, waiting at most a second for the
    /// broker.
    pub async fn submit_with<F>(
        &self,
        claim: Option<&IdempotencyClaim>,
        build: F,
    ) -> Result<CreateOutcome, StoreError>
    where
        F: for<'t> FnOnce(&'t sea_orm::DatabaseTransaction) -> TxnFuture<'t, NewJob>,
    {
        let (outcome, family) = self.store.create_with_family(claim, build).await?;
        if let (CreateOutcome::Created(id), Some(family)) = (&outcome, family) {
            let ids = [*id];
            match tokio::time::timeout(REQUEST_PUBLISH_WAIT, self.publish(family, &ids)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(job.id = %id, error = %e, "job stored, publish deferred")
                }
                Err(_) => {
                    tracing::warn!(job.id = %id, "job stored, publish deferred (broker slow)")
                }
            }
        }
        Ok(outcome)
    }

    /// Publishes stored jobs, each on its own family's queue (the children a parent made, jobs
    /// a retry requeued). A failure is logged: the recovery sweep sends what was not confirmed.
    pub async fn publish_stored(&self, jobs: &[(Family, Uuid)]) {
        let mut by_family: HashMap<Family, Vec<Uuid>> = HashMap::new();
        for (family, id) in jobs {
            by_family.entry(*family).or_default().push(*id);
        }
        for (family, ids) in by_family {
            for chunk in ids.chunks(PUBLISH_CHUNK) {
                if let Err(e) = self.publish(family, chunk).await {
                    tracing::warn!(%family, error = %e, jobs = chunk.len(), "jobs stored, publish deferred");
                }
            }
        }
    }

    /// The transport.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Publishes jobs due now.
    pub async fn publish(&self, family: Family, ids: &[Uuid]) -> Result<(), QueueError> {
        self.queue.publish(family, ids).await?;
        let _ = self.confirmed.send(ids.to_vec());
        Ok(())
    }

    /// Publishes jobs that must not run before `delay` has passed.
    pub async fn publish_delayed(
        &self,
        family: Family,
        ids: &[Uuid],
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.queue.publish_delayed(family, ids, delay).await?;
        let _ = self.confirmed.send(ids.to_vec());
        Ok(())
    }

    /// Publishes jobs found by a recovery sweep, each with the delay left until it is due.
    /// Returns how many were published; failures are logged and left for the next sweep.
    pub async fn republish(&self, jobs: &[Republish]) -> usize {
        let now = Utc::now();
        let mut groups: HashMap<(Family, u64), Vec<Uuid>> = HashMap::new();
        for job in jobs {
            let delay_ms = job
                .due
                .map(|due| (due - now).num_milliseconds().max(0) as u64)
                .unwrap_or(0);
            groups
                .entry((job.family, delay_ms))
                .or_default()
                .push(job.id);
        }
        let mut published = 0;
        for ((family, delay_ms), ids) in groups {
            let result = if delay_ms == 0 {
                self.publish(family, &ids).await
            } else {
                self.publish_delayed(family, &ids, Duration::from_millis(delay_ms))
                    .await
            };
            match result {
                Ok(()) => published += ids.len(),
                Err(e) => {
                    tracing::warn!(error = %e, family = family.as_str(), jobs = ids.len(), "republish failed; will try again");
                }
            }
        }
        published
    }
}

async fn mark_published_loop(store: JobStore, mut rx: mpsc::UnboundedReceiver<Vec<Uuid>>) {
    const BATCH: usize = 1_000;
    while let Some(first) = rx.recv().await {
        let mut ids = first;
        while ids.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => ids.extend(more),
                Err(_) => break,
            }
        }
        for chunk in ids.chunks(BATCH) {
            if let Err(e) = store.mark_published(chunk).await {
                // Harmless: the sweep publishes these again and the duplicates are ignored.
                tracing::debug!(error = %e, "could not mark jobs published");
            }
        }
    }
}
