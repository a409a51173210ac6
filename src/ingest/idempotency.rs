//! Idempotency-Key (SPEC §4): a request repeated with the same key and stream within 24 hours
//! is not ingested again; its first answer is returned.
//!
//! The key and the first answer travel inside the batch's WAL record, so they are durable
//! exactly when the events are; `journal` keeps them once the WAL has deleted the record, and
//! rebuilds this table at start-up.
//!
//! Bounded: at most `KEYS_MAX` keys are remembered; past it the oldest are forgotten early.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// How long a key is remembered.
pub const KEY_TTL_MICROS: i64 = 24 * 3_600 * 1_000_000;
/// Most keys remembered at once (about 300 bytes each).
pub const KEYS_MAX: usize = 200_000;

enum Entry {
    InFlight,
    Done { body: Bytes, received_at_micros: i64 },
}

#[derive(Default)]
struct Table {
    entries: HashMap<(String, String), Entry>,
    /// Keys in the order they were completed, for expiry and the size bound.
    order: VecDeque<(i64, (String, String))>,
}

#[derive(Default)]
pub struct IdempotencyTable {
    table: Mutex<Table>,
}

pub enum Begin {
    /// First time: go ahead, then `complete` the reservation.
    Fresh(Reservation),
    /// Seen before: here is the first answer.
    Replay(Bytes),
    /// The same key is being processed right now.
    InFlight,
}

/// A key being processed; dropped without `complete`, it frees the key again.
pub struct Reservation {
    table: Arc<IdempotencyTable>,
    key: Option<(String, String)>,
}

impl IdempotencyTable {
    pub fn begin(self: &Arc<Self>, stream: &str, key: &str) -> Begin {
        let mut table = self.table.lock().expect("idempotency lock is never poisoned");
        let id = (stream.to_owned(), key.to_owned());
        match table.entries.get(&id) {
            Some(Entry::Done { body, received_at_micros })
                if now_micros() - received_at_micros < KEY_TTL_MICROS =>
            {
                Begin::Replay(body.clone())
            }
            Some(Entry::InFlight) => Begin::InFlight,
            _ => {
                table.entries.insert(id.clone(), Entry::InFlight);
                Begin::Fresh(Reservation { table: self.clone(), key: Some(id) })
            }
        }
    }

    /// Remembers a first answer (from a request just answered, or found at start-up).
    pub fn remember(&self, stream: &str, key: &str, body: Bytes, received_at_micros: i64) {
        if now_micros() - received_at_micros >= KEY_TTL_MICROS {
            return;
        }
        let mut table = self.table.lock().expect("idempotency lock is never poisoned");
        let id = (stream.to_owned(), key.to_owned());
        table.entries.insert(id.clone(), Entry::Done { body, received_at_micros });
        table.order.push_back((received_at_micros, id));
        let oldest_allowed = now_micros() - KEY_TTL_MICROS;
        while table.order.len() > KEYS_MAX || table.order.front().is_some_and(|(t, _)| *t < oldest_allowed) {
            let Some((time, id)) = table.order.pop_front() else { break };
            // Only forget the entry if it is still the one this slot was recorded for.
            if matches!(table.entries.get(&id), Some(Entry::Done { received_at_micros, .. }) if *received_at_micros == time)
            {
                table.entries.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.lock().expect("idempotency lock is never poisoned").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reservation {
    pub fn complete(mut self, body: Bytes, received_at_micros: i64) {
        if let Some((stream, key)) = self.key.take() {
            self.table.remember(&stream, &key, body, received_at_micros);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(id) = self.key.take() {
            let mut table = self.table.table.lock().expect("idempotency lock is never poisoned");
            if matches!(table.entries.get(&id), Some(Entry::InFlight)) {
                table.entries.remove(&id);
            }
        }
    }
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
