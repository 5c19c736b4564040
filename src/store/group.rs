//! Group commit: the checkpoints of many runs written in one transaction.
//!
//! Each run hands its checkpoint to one writer task and waits for the answer,
//! so a run goes on only once what it did is durable, as before. While the
//! writer commits one batch, the checkpoints that arrive meanwhile queue up and
//! go in the next: under load a transaction carries many runs, and alone a run
//! waits for nothing more than its own write. A transaction (and, for SQLite,
//! each statement: a round trip to its driver's thread) costs more than the
//! rows it writes, so fewer of them is what makes a busy worker fast.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::engine::checkpoint::Saved;
use crate::store::{Checkpoint, Store, StoreError};

/// The most checkpoints one transaction carries.
const BATCH: usize = 256;

type Answer = Result<Saved, StoreError>;

struct Pending {
    point: Arc<Checkpoint>,
    done: oneshot::Sender<Answer>,
}

/// Writes checkpoints into a store, many to a transaction.
pub struct GroupCommit {
    store: Arc<dyn Store>,
    /// The writer's queue, started with the first checkpoint, on the runtime
    /// that wrote it.
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl GroupCommit {
    pub fn new(store: Arc<dyn Store>) -> GroupCommit {
        GroupCommit {
            store,
            queue: OnceLock::new(),
        }
    }

    /// Writes one checkpoint, with others that are waiting, and says what
    /// the store answered for it.
    pub async fn checkpoint(&self, point: Arc<Checkpoint>) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write(self.store.clone(), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let sent = queue.send(Pending {
            point: point.clone(),
            done,
        });
        match sent {
            Ok(()) => match answer.await {
                Ok(answer) => answer,
                // The writer is gone (its runtime is shutting down): what it
                // did with this one is unknown, and writing it again is safe.
                Err(_) => self.store.checkpoint(&point).await,
            },
            Err(_) => self.store.checkpoint(&point).await,
        }
    }
}

/// The writer: takes what is queued, up to [`BATCH`], and writes it in one
/// transaction, until every sender is gone.
async fn write(store: Arc<dyn Store>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let points: Vec<&Checkpoint> = batch.iter().map(|p| &*p.point).collect();
        let answers = match store.checkpoint_many(&points).await {
            Ok(answers) => answers,
            // Nothing was kept. Alone, each fails or not on its own account:
            // one bad write does not hold back the others.
            Err(e) if points.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut answers = Vec::with_capacity(points.len());
                for p in &points {
                    answers.push(store.checkpoint(p).await);
                }
                answers
            }
        };
        drop(points);
        for (pending, answer) in batch.drain(..).zip(answers) {
            // A run that stopped waiting (its task ended) needs no answer.
            let _ = pending.done.send(answer);
        }
    }
}
