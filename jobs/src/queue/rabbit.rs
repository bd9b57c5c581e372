//! RabbitMQ transport: durable classic queues (`<prefix>.<family>`), persistent messages,
//! publisher confirms awaited together per batch, manual acks, a prefetch per consumer, one delay
//! queue per (family, delay) whose messages dead-letter back to the family queue when their TTL
//! runs out, and `<prefix>.dead` for jobs that ended failed or dead. The connection is re-opened on
//! demand after a broker restart.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use lapin::{
    options::{
        BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{parse_job_id, Acker, DeadLetter, Delivery, QueueError};
use crate::spec::Family;

/// Delay queues are declared again after this long so their `x-expires` never runs out while in use.
const REDECLARE_AFTER: Duration = Duration::from_secs(60);
/// A delay queue disappears this long after its last declaration.
const DELAY_QUEUE_EXPIRES_MS: u64 = 15 * 60 * 1000;

/// The RabbitMQ transport. Cloning shares the connection.
#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    prefix: String,
    queue_expires_ms: Option<u64>,
    state: Mutex<Option<Link>>,
}

struct Link {
    connection: Connection,
    publisher: Channel,
    declared: HashMap<String, Instant>,
}

impl RabbitQueue {
    /// A transport for `url`; nothing is connected until first use.
    pub fn new(
        url: impl Into<String>,
        prefix: impl Into<String>,
        queue_expires_ms: Option<u64>,
    ) -> Self {
        RabbitQueue {
            inner: Arc::new(Inner {
                url: url.into(),
                prefix: prefix.into(),
                queue_expires_ms,
                state: Mutex::new(None),
            }),
        }
    }

    /// The queue name of a family.
    pub fn queue_name(&self, family: Family) -> String {
        format!("{}.{}", self.inner.prefix, family.as_str())
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.inner.prefix)
    }

    fn base_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.inner.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
        }
        args
    }

    /// Connects (or reconnects) and returns the publishing channel.
    pub(super) async fn ensure_connected(&self) -> Result<Channel, QueueError> {
        let mut state = self.inner.state.lock().await;
        self.link(&mut state).await.map(|l| l.publisher.clone())
    }

    async fn link<'a>(&self, state: &'a mut Option<Link>) -> Result<&'a mut Link, QueueError> {
        let healthy = state
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.publisher.status().connected());
        if !healthy {
            if let Some(old) = state.take() {
                let _ = old.connection.close(0, "reconnecting").await;
            }
            let props = ConnectionProperties::default()
                .with_executor(tokio_executor_trait::Tokio::current())
                .with_reactor(tokio_reactor_trait::Tokio)
                .with_connection_name("labfleet".into());
            let connection = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&self.inner.url, props),
            )
            .await
            .map_err(|_| QueueError::Unavailable("connect timed out after 5 s".into()))??;
            let publisher = connection.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            tracing::info!("connected to the message broker");
            *state = Some(Link {
                connection,
                publisher,
                declared: HashMap::new(),
            });
        }
        state
            .as_mut()
            .ok_or_else(|| QueueError::Unavailable("no connection".into()))
    }

    async fn declare(
        &self,
        link: &mut Link,
        name: &str,
        args: FieldTable,
    ) -> Result<(), QueueError> {
        if link
            .declared
            .get(name)
            .is_some_and(|at| at.elapsed() < REDECLARE_AFTER)
        {
            return Ok(());
        }
        link.publisher
            .queue_declare(
                name,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        link.declared.insert(name.to_string(), Instant::now());
        Ok(())
    }

    /// Picks the queue a message goes to, declaring it (and for a delay its delay queue) first.
    async fn route(
        &self,
        link: &mut Link,
        family: Family,
        delay: Option<Duration>,
    ) -> Result<String, QueueError> {
        let target = self.queue_name(family);
        self.declare(link, &target, self.base_args()).await?;
        let Some(delay) = delay.map(quantize_delay).filter(|d| !d.is_zero()) else {
            return Ok(target);
        };
        let ms = delay.as_millis() as u64;
        let name = format!("{target}.delay.{ms}");
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms as i64));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(target.as_str())),
        );
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt((ms + DELAY_QUEUE_EXPIRES_MS) as i64),
        );
        self.declare(link, &name, args).await?;
        Ok(name)
    }

    pub(super) async fn publish(
        &self,
        family: Family,
        ids: &[Uuid],
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (channel, queue) = {
            let mut state = self.inner.state.lock().await;
            let link = self.link(&mut state).await?;
            let queue = self.route(link, family, delay).await?;
            (link.publisher.clone(), queue)
        };
        let bodies: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.publish_bodies(&channel, &queue, bodies.iter().map(String::as_bytes))
            .await
    }

    async fn publish_bodies<'a>(
        &self,
        channel: &Channel,
        queue: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), QueueError> {
        // Send every message first and only then await the confirms: one round trip per batch.
        let mut confirms = Vec::new();
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    "",
                    queue,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            match confirm {
                Ok(c) => confirms.push(c),
                Err(e) => {
                    self.forget_link().await;
                    return Err(e.into());
                }
            }
        }
        for confirm in futures::future::join_all(confirms).await {
            match confirm {
                Ok(lapin::publisher_confirm::Confirmation::Ack(None)) => {}
                Ok(lapin::publisher_confirm::Confirmation::Ack(Some(_))) => {
                    // Returned as unroutable: the queue vanished (x-expires); declare it again.
                    self.forget_declarations().await;
                    return Err(QueueError::Refused(format!("queue {queue} does not exist")));
                }
                Ok(other) => {
                    return Err(QueueError::Refused(format!(
                        "broker did not acknowledge the message ({other:?})"
                    )))
                }
                Err(e) => {
                    self.forget_link().await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    async fn forget_declarations(&self) {
        if let Some(link) = self.inner.state.lock().await.as_mut() {
            link.declared.clear();
        }
    }

    async fn forget_link(&self) {
        if let Some(link) = self.inner.state.lock().await.take() {
            let _ = link.connection.close(0, "reconnecting").await;
        }
    }

    pub(super) async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let queue = self.dead_letter_queue();
        let channel = {
            let mut state = self.inner.state.lock().await;
            let link = self.link(&mut state).await?;
            self.declare(link, &queue, self.base_args()).await?;
            link.publisher.clone()
        };
        let body = serde_json::to_vec(letter)
            .map_err(|e| QueueError::Refused(format!("dead letter not serializable: {e}")))?;
        self.publish_bodies(&channel, &queue, std::iter::once(body.as_slice()))
            .await
    }

    pub(super) async fn consume(
        &self,
        family: Family,
        prefetch: u16,
    ) -> Result<RabbitConsumer, QueueError> {
        let queue = self.queue_name(family);
        let channel = {
            let mut state = self.inner.state.lock().await;
            let link = self.link(&mut state).await?;
            self.declare(link, &queue, self.base_args()).await?;
            link.connection.create_channel().await?
        };
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                &queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(RabbitConsumer { consumer, channel })
    }

    /// Messages waiting in a family's queue (for tests and diagnostics).
    pub async fn depth(&self, family: Family) -> Result<u32, QueueError> {
        self.depth_of(&self.queue_name(family)).await
    }

    /// Messages waiting in any queue of this prefix by its full name.
    pub async fn depth_of(&self, queue: &str) -> Result<u32, QueueError> {
        let channel = self.ensure_connected().await?;
        let q = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match q {
            Ok(q) => Ok(q.message_count()),
            // A passive declare of a missing queue closes the channel: the queue is empty.
            Err(_) => {
                self.forget_link().await;
                Ok(0)
            }
        }
    }

    /// Removes and returns the job ids waiting in a family's queue (for tests and diagnostics).
    pub async fn take_job_ids(&self, family: Family) -> Result<Vec<Uuid>, QueueError> {
        let bodies = self.drain(&self.queue_name(family)).await?;
        Ok(bodies.iter().filter_map(|b| parse_job_id(b)).collect())
    }

    /// Removes and returns every dead letter (for tests and the operator's inspection).
    pub async fn take_dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let bodies = self.drain(&self.dead_letter_queue()).await?;
        Ok(bodies
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect())
    }

    /// Takes every message off a queue of ours.
    async fn drain(&self, queue: &str) -> Result<Vec<Vec<u8>>, QueueError> {
        let channel = {
            let mut state = self.inner.state.lock().await;
            let link = self.link(&mut state).await?;
            self.declare(link, queue, self.base_args()).await?;
            link.publisher.clone()
        };
        let mut bodies = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await?
        {
            bodies.push(msg.delivery.data);
        }
        Ok(bodies)
    }
}

/// Rounds a delay up to a coarse step so a handful of delay queues serve every retry: 10 ms steps
/// below 1 s, 100 ms below 10 s, whole seconds above. Rounding up never delivers early.
fn quantize_delay(delay: Duration) -> Duration {
    let ms = delay.as_millis() as u64;
    let step = match ms {
        0..=999 => 10,
        1_000..=9_999 => 100,
        _ => 1_000,
    };
    Duration::from_millis(ms.div_ceil(step) * step)
}

/// Deliveries of one family from RabbitMQ, on a channel of their own.
pub struct RabbitConsumer {
    consumer: lapin::Consumer,
    channel: Channel,
}

impl RabbitConsumer {
    pub(super) async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        let item = self.consumer.next().await?;
        Some(item.map(convert).map_err(QueueError::from))
    }

    pub(super) fn ready(&mut self) -> Option<Delivery> {
        match self.consumer.next().now_or_never() {
            Some(Some(Ok(d))) => Some(convert(d)),
            _ => None,
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        // Closing the channel hands every unacknowledged delivery back to the broker.
        let channel = self.channel.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.close(200, "consumer stopped").await;
            });
        }
    }
}

fn convert(d: lapin::message::Delivery) -> Delivery {
    Delivery {
        job_id: parse_job_id(&d.data),
        redelivered: d.redelivered,
        acker: Acker::Rabbit(d.acker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_rounded_up_to_few_distinct_queues() {
        assert_eq!(
            quantize_delay(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
        assert_eq!(
            quantize_delay(Duration::from_millis(990)),
            Duration::from_millis(990)
        );
        assert_eq!(
            quantize_delay(Duration::from_millis(1_001)),
            Duration::from_millis(1_100)
        );
        assert_eq!(
            quantize_delay(Duration::from_millis(12_300)),
            Duration::from_secs(13)
        );
        assert_eq!(quantize_delay(Duration::ZERO), Duration::ZERO);
    }
}
