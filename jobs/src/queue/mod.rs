//! The queue transport: a job's message (its id) travels on its family's queue. Two transports
//! share one interface: RabbitMQ (durable queues, persistent messages, publisher confirms, manual
//! acks, per-delay retry queues, a dead-letter queue) and an in-process queue for the embedded
//! default. The database row stays the truth; a message only says "look at job X now".

mod memory;
mod rabbit;

use std::time::Duration;

use uuid::Uuid;

pub use memory::MemoryQueue;
pub use rabbit::RabbitQueue;

use crate::spec::Family;

/// Why the transport failed. Every variant is worth retrying after a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker could not be reached or the connection broke.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (negative confirm or unroutable).
    #[error("message broker refused the message: {0}")]
    Refused(String),
    /// This transport cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

/// A message on a dead-letter queue: a job that ended failed or dead.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The job.
    pub job_id: Uuid,
    /// Its final status (`failed` or `dead`).
    pub status: String,
    /// The error it ended with.
    pub error: String,
}

/// Longest a publish may wait for the broker (a blocked or black-holed broker must not stall the
/// worker's writes or the API).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    op: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(PUBLISH_TIMEOUT, op)
        .await
        .unwrap_or_else(|_| {
            Err(QueueError::Unavailable(format!(
                "no confirm from the broker within {PUBLISH_TIMEOUT:?}"
            )))
        })
}

/// The transport in use: chosen once at start-up from `Settings::amqp_url`.
#[derive(Clone)]
pub enum Queue {
    /// The embedded in-process queue (one process runs API, worker and scheduler).
    Memory(MemoryQueue),
    /// RabbitMQ through lapin.
    Rabbit(RabbitQueue),
}

impl Queue {
    /// True when messages live only in this process (they are lost with it, so every pending job
    /// must be republished at start-up).
    pub fn is_in_process(&self) -> bool {
        matches!(self, Queue::Memory(_))
    }

    /// Publishes job ids on the family's queue and returns once the broker confirmed all of them.
    /// Publishes are pipelined: the confirms of a batch are awaited together.
    pub async fn publish(&self, family: Family, ids: &[Uuid]) -> Result<(), QueueError> {
        match self {
            Queue::Memory(q) => q.publish(family, ids, None),
            Queue::Rabbit(q) => bounded(q.publish(family, ids, None)).await,
        }
    }

    /// Publishes job ids so that they arrive after `delay` (retries and continuations).
    pub async fn publish_delayed(
        &self,
        family: Family,
        ids: &[Uuid],
        delay: Duration,
    ) -> Result<(), QueueError> {
        match self {
            Queue::Memory(q) => q.publish(family, ids, Some(delay)),
            Queue::Rabbit(q) => bounded(q.publish(family, ids, Some(delay))).await,
        }
    }

    /// Records a job that ended failed or dead on the dead-letter queue.
    pub async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        match self {
            Queue::Memory(q) => {
                q.dead_letter(letter.clone());
                Ok(())
            }
            Queue::Rabbit(q) => bounded(q.publish_dead_letter(letter)).await,
        }
    }

    /// Starts consuming a family's queue with at most `prefetch` unacknowledged deliveries.
    pub async fn consume(&self, family: Family, prefetch: u16) -> Result<Consumer, QueueError> {
        match self {
            Queue::Memory(q) => Ok(Consumer::Memory(q.consumer(family))),
            Queue::Rabbit(q) => Ok(Consumer::Rabbit(Box::new(
                q.consume(family, prefetch).await?,
            ))),
        }
    }

    /// True when the transport can accept messages now (for `/readyz`).
    pub async fn is_ready(&self) -> bool {
        match self {
            Queue::Memory(_) => true,
            Queue::Rabbit(q) => q.ensure_connected().await.is_ok(),
        }
    }
}

/// A stream of deliveries from one family's queue.
pub enum Consumer {
    /// In-process.
    Memory(memory::MemoryConsumer),
    /// RabbitMQ.
    Rabbit(Box<rabbit::RabbitConsumer>),
}

impl Consumer {
    /// Waits for the next delivery; `None` or an error means the consumer must be recreated.
    pub async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        match self {
            Consumer::Memory(c) => c.next().await.map(Ok),
            Consumer::Rabbit(c) => c.next().await,
        }
    }

    /// A delivery that is ready now, without waiting (used to fill a batch).
    pub fn ready(&mut self) -> Option<Delivery> {
        match self {
            Consumer::Memory(c) => c.ready(),
            Consumer::Rabbit(c) => c.ready(),
        }
    }
}

/// One message: the job to look at, and the handle that acknowledges it.
pub struct Delivery {
    /// The job, or `None` when the message body was not a job id (it is acked and dropped).
    pub job_id: Option<Uuid>,
    /// True when the broker delivered this message before (a worker died holding it).
    pub redelivered: bool,
    acker: Acker,
}

enum Acker {
    None,
    Rabbit(lapin::acker::Acker),
}

impl Delivery {
    /// Acknowledges the message: it is done with, whatever the job's outcome.
    pub async fn ack(self) {
        if let Acker::Rabbit(acker) = self.acker {
            // A failed ack means the channel is gone; the broker redelivers the message, and the
            // conditional claim in the database turns that redelivery into a no-op.
            if let Err(e) = acker.ack(lapin::options::BasicAckOptions::default()).await {
                tracing::debug!(error = %e, "ack failed; the message will be redelivered");
            }
        }
    }
}

fn parse_job_id(body: &[u8]) -> Option<Uuid> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
}
