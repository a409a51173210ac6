//! The hand-off between ingestion and the sinks: whole batches, moved by ownership through
//! bounded queues, one per sink, so each sink works at its own pace.
//!
//! This is where the write-ahead log goes: ingestion will append a batch to the log and wait
//! for it to be durable, and each sink will read the log from its own checkpoint. Until then a
//! batch is handed to every sink's queue directly.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use arrow_array::RecordBatch;

use crate::budget::BudgetPermit;
use crate::schema::decode::DeadLetter;
use crate::schema::registry::Stream;
use crate::schema::types::StreamSchema;

/// Batches a sink may have queued; the memory budget bounds their bytes first.
pub const SINK_QUEUE_BATCHES: usize = 1024;

/// Accepted events of one request, with the invalid ones kept for the dead-letter output.
pub struct Batch {
    pub stream: Arc<Stream>,
    pub schema: Arc<StreamSchema>,
    pub records: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
    /// When the request arrived, microseconds since the epoch (dead letters record it).
    pub received_at_micros: i64,
    /// Released when every sink has written the batch.
    pub permit: Arc<BudgetPermit>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("a sink queue is full")]
    Full,
    #[error("the sinks have stopped")]
    Closed,
}

/// What a sink receives: batches in order, then a last word to flush and stop.
pub enum SinkMessage {
    Batch(Arc<Batch>),
    Shutdown,
}

/// Sends each batch to every sink.
#[derive(Clone)]
pub struct Dispatcher {
    sinks: Vec<SyncSender<SinkMessage>>,
}

impl Dispatcher {
    /// Makes the queue of one more sink; the sink thread owns the receiver.
    pub fn add_sink(&mut self) -> Receiver<SinkMessage> {
        let (sender, receiver) = sync_channel(SINK_QUEUE_BATCHES);
        self.sinks.push(sender);
        receiver
    }

    pub fn new() -> Dispatcher {
        Dispatcher { sinks: Vec::new() }
    }

    pub fn dispatch(&self, batch: Batch) -> Result<(), DispatchError> {
        let batch = Arc::new(batch);
        for sink in &self.sinks {
            sink.try_send(SinkMessage::Batch(batch.clone())).map_err(|e| match e {
                TrySendError::Full(_) => DispatchError::Full,
                TrySendError::Disconnected(_) => DispatchError::Closed,
            })?;
        }
        Ok(())
    }

    /// Tells every sink to flush and stop once it has written what it was sent. Blocks while
    /// a queue is full, so call it from a thread that may block.
    pub fn shutdown(&self) {
        for sink in &self.sinks {
            // A sink that already stopped has nothing left to flush.
            let _ = sink.send(SinkMessage::Shutdown);
        }
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher::new()
    }
}
