//! The in-process queue of the embedded default: one unbounded channel per family, delayed
//! messages through timers. Messages die with the process; start-up republishes pending jobs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Acker, DeadLetter, Delivery};
use crate::spec::Family;

type Receiver = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Uuid>>>;

/// The in-process transport. Cloning shares the same queues.
#[derive(Clone)]
pub struct MemoryQueue {
    queues: Arc<HashMap<Family, (mpsc::UnboundedSender<Uuid>, Receiver)>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// Most dead letters kept in memory (the database keeps every failed job anyway).
    const DEAD_LETTERS_KEPT: usize = 10_000;

    /// Empty queues for every family.
    pub fn new() -> Self {
        let queues = Family::ALL
            .into_iter()
            .map(|f| {
                let (tx, rx) = mpsc::unbounded_channel();
                (f, (tx, Arc::new(tokio::sync::Mutex::new(rx))))
            })
            .collect();
        MemoryQueue {
            queues: Arc::new(queues),
            dead_letters: Arc::default(),
        }
    }

    pub(super) fn publish(
        &self,
        family: Family,
        ids: &[Uuid],
        delay: Option<Duration>,
    ) -> Result<(), super::QueueError> {
        let Some((tx, _)) = self.queues.get(&family) else {
            return Err(super::QueueError::Unsupported(format!(
                "no queue for family {}",
                family.as_str()
            )));
        };
        match delay {
            Some(delay) if !delay.is_zero() => {
                let tx = tx.clone();
                let ids = ids.to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for id in ids {
                        let _ = tx.send(id);
                    }
                });
            }
            _ => {
                for id in ids {
                    // The receiver lives as long as the queue itself.
                    let _ = tx.send(*id);
                }
            }
        }
        Ok(())
    }

    pub(super) fn dead_letter(&self, letter: DeadLetter) {
        if let Ok(mut letters) = self.dead_letters.lock() {
            if letters.len() >= Self::DEAD_LETTERS_KEPT {
                letters.remove(0);
            }
            letters.push(letter);
        }
    }

    /// The dead letters recorded so far (newest last).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub(super) fn consumer(&self, family: Family) -> MemoryConsumer {
        MemoryConsumer {
            rx: self.queues.get(&family).map(|(_, rx)| rx.clone()),
        }
    }
}

/// Deliveries of one family from the in-process queue.
pub struct MemoryConsumer {
    rx: Option<Receiver>,
}

impl MemoryConsumer {
    pub(super) async fn next(&mut self) -> Option<Delivery> {
        let rx = self.rx.as_ref()?;
        let id = rx.lock().await.recv().await?;
        Some(delivery(id))
    }

    pub(super) fn ready(&mut self) -> Option<Delivery> {
        let rx = self.rx.as_ref()?;
        let mut guard = rx.try_lock().ok()?;
        guard.try_recv().ok().map(delivery)
    }
}

fn delivery(id: Uuid) -> Delivery {
    Delivery {
        job_id: Some(id),
        redelivered: false,
        acker: Acker::None,
    }
}
