//! Publishing after commit: sends job ids on their family's queue, waits for the broker's confirms,
//! then marks the jobs published in the background, many per statement. A job whose publish fails
//! stays unpublished in the database and the recovery sweep sends it later: nothing accepted is
//! lost, and a duplicate message is harmless because claiming is conditional.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    queue::{Queue, QueueError},
    spec::Family,
    store::{JobStore, Republish},
};

/// Publishes jobs and records that they were published.
#[derive(Clone)]
pub struct Publisher {
    queue: Queue,
    confirmed: mpsc::UnboundedSender<Vec<Uuid>>,
}

impl Publisher {
    /// Starts the background task that marks confirmed jobs as published; it ends when every
    /// `Publisher` clone is dropped.
    pub fn start(queue: Queue, store: JobStore) -> (Publisher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(mark_published_loop(store, rx));
        (
            Publisher {
                queue,
                confirmed: tx,
            },
            task,
        )
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
