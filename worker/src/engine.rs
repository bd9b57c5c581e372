//! The consume → claim → run loop of one worker process. Each family has its own consumer and its
//! own concurrency. Deliveries that are ready together are claimed in one transaction; outcomes
//! are written in batches by the completion task, and messages are acked only after that write.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use labfleet_clusters::ClusterStore;
use labfleet_config::{DeploySettings, FamilyConcurrency, Settings};
use labfleet_fleet::{BackendFactory, ClassStore, Slots};
use labfleet_jobs::{
    queue::Delivery,
    retry::{Reconnect, RetryPolicy},
    store::{Claimed, Completion, Outcome},
    Family, JobStore, Publisher,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    completion::{completion_loop, Finished},
    context::{JobContext, JobError, JobOutcome},
    heartbeat::heartbeat_loop,
    jobs,
};

/// A worker process's engine. Build it, then `run_until_stopped`.
#[derive(Clone)]
pub struct Worker {
    pub(crate) shared: Arc<Shared>,
}

/// A job running in this process.
pub(crate) struct RunningJob {
    /// The claim it runs under.
    pub(crate) lease_token: Uuid,
    /// When it was claimed (a lease renewal that started earlier cannot have seen it).
    pub(crate) claimed_at: Instant,
    /// Stops its handler.
    pub(crate) cancel: CancellationToken,
}

pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) store: JobStore,
    pub(crate) publisher: Publisher,
    pub(crate) clusters: ClusterStore,
    pub(crate) backends: Arc<dyn BackendFactory>,
    pub(crate) classes: ClassStore,
    pub(crate) slots: Slots,
    pub(crate) deploy: Arc<DeploySettings>,
    pub(crate) settings: Settings,
    pub(crate) policy: RetryPolicy,
    /// The jobs running in this process: their claim and cancellation handle.
    pub(crate) running: Mutex<HashMap<Uuid, RunningJob>>,
    /// Set once shutdown's grace period is over: stopped jobs are handed back, not cancelled.
    pub(crate) handing_back: AtomicBool,
    /// Set when shutdown begins: outcomes that cannot be written are then given up on (the
    /// messages go back to the broker and the leases expire) instead of retried forever.
    pub(crate) stopping: AtomicBool,
}

impl Worker {
    /// A worker with a unique id (host, process, random suffix) used as its lease owner.
    pub fn new(
        store: JobStore,
        publisher: Publisher,
        clusters: ClusterStore,
        backends: Arc<dyn BackendFactory>,
        settings: Settings,
    ) -> Worker {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let id = format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let policy = RetryPolicy::new(settings.retry.clone());
        let classes = ClassStore::new(store.db().clone());
        let slots = Slots::new(store.db().clone());
        Worker {
            shared: Arc::new(Shared {
                id,
                store,
                classes,
                slots,
                deploy: Arc::new(settings.deploy.clone()),
                publisher,
                clusters,
                backends,
                settings,
                policy,
                running: Mutex::new(HashMap::new()),
                handing_back: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// This worker's lease-owner id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Consumes every family with a non-zero concurrency until `shutdown` resolves, then stops
    /// consuming, lets running jobs finish for the grace period, hands the rest back, writes
    /// every outcome and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let s = &self.shared;
        let stop_consuming = CancellationToken::new();
        let stop_heartbeat = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
        let completion = tokio::spawn(completion_loop(self.shared.clone(), done_rx));
        let heartbeat = tokio::spawn(heartbeat_loop(self.shared.clone(), stop_heartbeat.clone()));

        let mut consumers = Vec::new();
        for family in Family::ALL {
            let concurrency = concurrency_of(&s.settings.worker.concurrency, family);
            if concurrency == 0 {
                continue;
            }
            consumers.push(tokio::spawn(consume_family(
                self.clone(),
                family,
                concurrency,
                stop_consuming.clone(),
                tracker.clone(),
                done_tx.clone(),
            )));
        }
        drop(done_tx);
        tracing::info!(worker = %s.id, "worker started");

        shutdown.await;
        tracing::info!(worker = %s.id, "worker stopping: no new jobs are taken");
        s.stopping.store(true, Ordering::SeqCst);
        stop_consuming.cancel();
        for c in consumers {
            let _ = c.await;
        }
        tracker.close();
        let grace = Duration::from_secs(s.settings.worker.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over: handing running jobs back");
            s.handing_back.store(true, Ordering::SeqCst);
            if let Ok(running) = s.running.lock() {
                running.values().for_each(|r| r.cancel.cancel());
            }
            tracker.wait().await;
        }
        // Every running task has sent its outcome; the completion task drains and exits.
        let _ = completion.await;
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        tracing::info!(worker = %s.id, "worker stopped");
    }
}

async fn consume_family(
    worker: Worker,
    family: Family,
    concurrency: u16,
    stop: CancellationToken,
    tracker: TaskTracker,
    done: mpsc::UnboundedSender<Finished>,
) {
    let s = worker.shared.clone();
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut backoff = Reconnect::new(Duration::from_secs(5));
    while !stop.is_cancelled() {
        let mut consumer = match s.publisher.queue().consume(family, concurrency).await {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, family = family.as_str(), retry_in_ms = delay.as_millis() as u64, "cannot consume");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        loop {
            // A slot is taken before a delivery, so at most `concurrency` jobs run at once.
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                d = consumer.next() => d,
            };
            let first = match first {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, family = family.as_str(), "consumer broke; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!(family = family.as_str(), "consumer closed; reconnecting");
                    break;
                }
            };
            let mut batch = vec![(first, permit)];
            while batch.len() < s.settings.worker.batch_max {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                match consumer.ready() {
                    Some(d) => batch.push((d, permit)),
                    None => break,
                }
            }
            if !claim_and_start(&worker, batch, &stop, &tracker, &done).await {
                return;
            }
        }
    }
}

/// Claims a batch and starts a task per claimed job. Returns false when stopping.
async fn claim_and_start(
    worker: &Worker,
    batch: Vec<(Delivery, OwnedSemaphorePermit)>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
    done: &mpsc::UnboundedSender<Finished>,
) -> bool {
    let s = &worker.shared;
    let ids: Vec<Uuid> = batch.iter().filter_map(|(d, _)| d.job_id).collect();
    let mut backoff = Reconnect::new(Duration::from_secs(5));
    let claimed = loop {
        let lease_until = Utc::now() + chrono_lease(&s.settings);
        match s.store.claim_batch(&s.id, &ids, lease_until).await {
            Ok(c) => break c,
            Err(e) => {
                // Without the database nothing can be claimed; keep the messages (unacked) and
                // try again. On shutdown they go back to the broker with the channel.
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot claim jobs");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    let mut by_id: HashMap<Uuid, Claimed> = claimed.into_iter().map(|c| (c.id, c)).collect();
    for (delivery, permit) in batch {
        match delivery.job_id.and_then(|id| by_id.remove(&id)) {
            Some(job) => {
                let worker = worker.clone();
                let done = done.clone();
                tracker.spawn(async move {
                    let finished = run_claimed(&worker, job, delivery, permit).await;
                    let _ = done.send(finished);
                });
            }
            None => {
                // Not claimable: finished, held by another worker, a duplicate, or not due yet
                // (its own delayed message or the recovery sweep brings it back).
                if delivery.job_id.is_none() {
                    tracing::warn!("dropping a message that is not a job id");
                }
                delivery.ack().await;
                drop(permit);
            }
        }
    }
    true
}

/// How many jobs of `family` this worker runs at once (0: it does not consume the family).
fn concurrency_of(c: &FamilyConcurrency, family: Family) -> u16 {
    match family {
        Family::Deploy => c.deploy,
        Family::Vm => c.vm,
        Family::Power => c.power,
        Family::Reset => c.reset,
        Family::Sync => c.sync,
        Family::Diag => c.diag,
    }
}

fn chrono_lease(settings: &Settings) -> chrono::Duration {
    chrono::Duration::from_std(settings.worker.lease()).unwrap_or(chrono::Duration::seconds(30))
}

async fn run_claimed(
    worker: &Worker,
    job: Claimed,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
) -> Finished {
    let s = &worker.shared;
    let kind = job.kind_name();
    let span =
        tracing::info_span!("job", job.id = %job.id, job.kind = kind, job.attempt = job.attempt);
    let started = Instant::now();
    let family = job.family;
    let outcome = async {
        if !job.continuation && job.attempt > job.max_attempts {
            return Outcome::Dead {
                error: format!(
                    "no attempt left: delivered {} times for {} attempts (workers lost while running it)",
                    job.attempt, job.max_attempts
                ),
            };
        }
        let spec = match &job.spec {
            Ok(spec) => spec.clone(),
            Err(invalid) => {
                return Outcome::Failed {
                    error: invalid.to_string(),
                }
            }
        };
        let cancel = CancellationToken::new();
        if let Ok(mut running) = s.running.lock() {
            running.insert(
                job.id,
                RunningJob {
                    lease_token: job.lease_token,
                    claimed_at: started,
                    cancel: cancel.clone(),
                },
            );
        }
        let ctx = JobContext {
            job_id: job.id,
            attempt: job.attempt,
            lease_token: job.lease_token,
            checkpoint: job.checkpoint.clone(),
            created_by: job.created_by.clone(),
            cancel: cancel.clone(),
            store: s.store.clone(),
            publisher: s.publisher.clone(),
            clusters: s.clusters.clone(),
            backends: s.backends.clone(),
            classes: s.classes.clone(),
            slots: s.slots.clone(),
            deploy: s.deploy.clone(),
            power: s.settings.power.clone(),
            max_attempts: s.policy.max_attempts(),
        };
        let timeout = Duration::from_secs(s.settings.worker.handler_timeout_secs.max(1));
        let result = match tokio::time::timeout(timeout, jobs::run(spec, ctx)).await {
            Ok(r) => r,
            Err(_) => Err(JobError::Transient(format!(
                "the handler ran longer than {} s and was stopped",
                timeout.as_secs()
            ))),
        };
        if let Ok(mut running) = s.running.lock() {
            // A newer claim of the same job (after a lost lease) keeps its own entry.
            if running
                .get(&job.id)
                .is_some_and(|r| r.lease_token == job.lease_token)
            {
                running.remove(&job.id);
            }
        }
        to_outcome(s, &job, result)
    }
    .instrument(span.clone())
    .await;
    let label = outcome_label(&outcome);
    metrics::counter!("labfleet_jobs_total", "kind" => kind, "outcome" => label).increment(1);
    metrics::histogram!("labfleet_job_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(outcome = label, "job run ended"));
    Finished {
        completion: Completion {
            job_id: job.id,
            lease_token: job.lease_token,
            attempt: job.attempt,
            outcome,
        },
        family,
        parent_id: job.parent_id,
        delivery,
        _permit: permit,
    }
}

fn to_outcome(s: &Shared, job: &Claimed, result: Result<JobOutcome, JobError>) -> Outcome {
    let handing_back = s.handing_back.load(Ordering::SeqCst);
    match result {
        Ok(JobOutcome::Done(result)) => Outcome::Succeeded { result },
        Ok(JobOutcome::Continue {
            after,
            checkpoint,
            note,
        }) => Outcome::Park {
            at: Utc::now() + chrono::Duration::from_std(after).unwrap_or_default(),
            checkpoint,
            note,
        },
        Ok(JobOutcome::WaitChildren) => Outcome::WaitChildren,
        Err(_) if handing_back => Outcome::HandBack,
        Err(JobError::Cancelled) => Outcome::Cancelled {
            reason: "cancelled on request".into(),
        },
        Err(JobError::Permanent(error)) => Outcome::Failed { error },
        Err(JobError::Transient(error)) if job.attempt < job.max_attempts => {
            let delay = s.policy.delay_after(job.attempt.max(1) as u32);
            Outcome::Retry {
                at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                error,
            }
        }
        Err(JobError::Transient(error)) => Outcome::Dead {
            error: format!("{error} (after {} attempts)", job.attempt),
        },
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Retry { .. } => "retry",
        Outcome::Failed { .. } => "failed",
        Outcome::Dead { .. } => "dead",
        Outcome::Park { .. } => "continued",
        Outcome::WaitChildren => "waiting_children",
        Outcome::Cancelled { .. } => "cancelled",
        Outcome::HandBack => "handed_back",
    }
}
