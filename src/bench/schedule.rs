//! When each request goes out, and the loop each connection runs.
//!
//! Requests are numbered 0, 1, 2, ... and dealt to the connections in turn: connection `c`
//! sends numbers `c`, `c + C`, `c + 2C`, ... (`C` connections).
//!
//! - Open loop (`--rate N`): request `n` is meant to leave `n × batch / N` seconds after the
//!   start, whatever happened to earlier ones. A connection still waiting for an answer when
//!   its next request is due sends it as soon as the answer arrives, and that request's
//!   latency counts from when it was due. This corrects for coordinated omission: a stall of
//!   the target shows as the queueing delay every scheduled request suffered, not as one slow
//!   sample.
//! - Closed loop (`--max`): each connection sends its next request when the answer to the
//!   previous one arrives; latency counts from the actual send.
//!
//! Promises: no request starts at or after the deadline; every exchange is bounded by
//! `REQUEST_TIMEOUT`; retries happen only before the deadline and at most `--retries` times.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper::header::HeaderValue;
use tokio::time::Instant;

use super::client::{Answer, Connection, EventsRequest, RequestError, RetryPolicy, Target};
use super::events::{Body, BodyPool};
use super::report::Tally;

/// Longest wait for one answer. Past it the request counts as an error and its connection is
/// replaced. It also bounds how long the run lasts past `--duration`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection attempt, so a closed loop against a target that is down
/// does not spin on refused connections.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
const NANOS_PER_SECOND: u128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Open { events_per_second: u64 },
    Closed,
}

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub mode: Mode,
    batch: u64,
    connections: u64,
}

impl Schedule {
    pub fn new(mode: Mode, batch: u32, connections: u32) -> Schedule {
        assert!(batch > 0);
        assert!(connections > 0);
        if let Mode::Open { events_per_second } = mode {
            assert!(events_per_second > 0);
        }
        Schedule { mode, batch: u64::from(batch), connections: u64::from(connections) }
    }

    /// The number of the `round`-th request (0-based) of `connection`.
    pub fn request_number(&self, connection: u32, round: u64) -> u64 {
        round.saturating_mul(self.connections).saturating_add(u64::from(connection))
    }

    /// Open loop: when request `number` is due, counted from the start. `None` in a closed loop.
    pub fn due_offset(&self, number: u64) -> Option<Duration> {
        let Mode::Open { events_per_second } = self.mode else { return None };
        // Integer nanoseconds from the request number, not an accumulated float interval,
        // so the schedule does not drift over a long run.
        let nanos =
            u128::from(number) * u128::from(self.batch) * NANOS_PER_SECOND / u128::from(events_per_second);
        Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// Open loop: how many requests are due strictly before `elapsed`. `None` in a closed loop.
    pub fn requests_due_before(&self, elapsed: Duration) -> Option<u64> {
        let Mode::Open { events_per_second } = self.mode else { return None };
        // Request n is due before T ⟺ n × batch / rate < T ⟺ n < T × rate / batch.
        let numerator = elapsed.as_nanos() * u128::from(events_per_second);
        let denominator = u128::from(self.batch) * NANOS_PER_SECOND;
        Some(u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX))
    }
}

/// Everything the connections share during a run.
pub struct Load {
    pub schedule: Schedule,
    pub pool: BodyPool,
    pub target: Target,
    pub request: EventsRequest,
    pub retry: RetryPolicy,
    /// `bench-<run id>-` when `--idempotency-keys` is given.
    pub idempotency_prefix: Option<String>,
    pub start: Instant,
    pub deadline: Instant,
    /// One per connection, so recording never waits for another connection.
    pub tallies: Vec<Mutex<Tally>>,
}

impl Load {
    fn tally(&self, connection: u32) -> std::sync::MutexGuard<'_, Tally> {
        // A panic elsewhere cannot leave a tally half-updated in a way that matters for counts.
        self.tallies[connection as usize].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idempotency_key(&self, number: u64) -> Option<HeaderValue> {
        let prefix = self.idempotency_prefix.as_ref()?;
        // The prefix is hex and digits: always a valid header value.
        HeaderValue::from_str(&format!("{prefix}{number}")).ok()
    }
}

/// The loop of connection `connection`, until the deadline.
pub async fn drive_connection(load: std::sync::Arc<Load>, connection: u32) {
    let mut link: Option<Connection> = None;
    // Bounded by the deadline: every round either sends before it or ends the loop.
    for round in 0u64.. {
        let number = load.schedule.request_number(connection, round);
        let due = match load.schedule.due_offset(number) {
            Some(offset) => {
                let due = load.start + offset;
                // A connection that fell behind stops at the deadline too: the requests it did
                // not get to are reported as behind schedule, not sent late past the end.
                if due >= load.deadline || Instant::now() >= load.deadline {
                    break;
                }
                tokio::time::sleep_until(due).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= load.deadline {
                    break;
                }
                now
            }
        };
        let body = load.pool.body(number);
        {
            let mut tally = load.tally(connection);
            tally.requests_sent += 1;
            tally.events_sent += u64::from(load.pool.events_per_body);
        }
        let key = load.idempotency_key(number);
        // At most `retries + 1` attempts: `settle` allows a retry only while attempts remain.
        for attempt in 0..=load.retry.retries {
            let outcome = send_once(&load, &mut link, body.wire.clone(), key.clone()).await;
            match settle(&load, connection, body, due, attempt, outcome) {
                Next::Done => break,
                Next::PauseThenDone(until) => {
                    // A failed request pauses the connection briefly before its next one.
                    tokio::time::sleep_until(until).await;
                    break;
                }
                Next::RetryAt(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

/// What a connection does after an attempt.
enum Next {
    Done,
    PauseThenDone(Instant),
    RetryAt(Instant),
}

/// Records the outcome of attempt `attempt` of a request due at `due`, and decides what comes
/// next. A retry is allowed only when attempts remain and its wait ends before the deadline,
/// so no attempt starts after it.
fn settle(
    load: &Load,
    connection: u32,
    body: &Body,
    due: Instant,
    attempt: u32,
    outcome: Result<Answer, RequestError>,
) -> Next {
    let now = Instant::now();
    let retry_at = |wait: Duration| {
        let at = now + wait;
        (attempt < load.retry.retries && at < load.deadline).then_some(at)
    };
    let mut tally = load.tally(connection);
    tally.wire_bytes_sent += body.wire.len() as u64;
    tally.raw_bytes_sent += body.raw_bytes as u64;
    tally.last_activity = Some(now);
    match outcome {
        Ok(answer) => {
            tally.count_answer(answer.status.as_u16(), answer.replayed);
            if answer.status.is_success() {
                tally.events_accepted += answer.accepted().unwrap_or(0);
            } else {
                tally.note_problem(|| format!("answer {}: {}", answer.status, answer.body_excerpt()));
            }
            let retry = if RetryPolicy::retries_status(answer.status) {
                retry_at(load.retry.delay(attempt, answer.retry_after))
            } else {
                None
            };
            match retry {
                Some(at) => {
                    tally.retries += 1;
                    Next::RetryAt(at)
                }
                None => {
                    tally.latency.record(now.saturating_duration_since(due));
                    Next::Done
                }
            }
        }
        Err(error) => {
            tally.errors += 1;
            tally.note_problem(|| format!("{:#}", anyhow::Error::from(error)));
            match retry_at(load.retry.delay(attempt, None).max(RECONNECT_PAUSE)) {
                Some(at) => {
                    tally.retries += 1;
                    Next::RetryAt(at)
                }
                None => Next::PauseThenDone((now + RECONNECT_PAUSE).min(load.deadline)),
            }
        }
    }
}

/// One attempt: (re)connect when needed, send, read the answer. A failed attempt drops the
/// connection so the next one starts clean.
async fn send_once(
    load: &Load,
    link: &mut Option<Connection>,
    body: bytes::Bytes,
    key: Option<HeaderValue>,
) -> Result<Answer, RequestError> {
    if link.as_ref().is_none_or(|c| !c.is_open()) {
        *link = Some(Connection::open(&load.target).await?);
    }
    let Some(connection) = link.as_mut() else { unreachable!("the connection was just opened") };
    let result = connection.send(load.request.build(body, key), REQUEST_TIMEOUT).await;
    if result.is_err() {
        *link = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_spaces_requests_by_batch_over_rate() {
        let schedule = Schedule::new(Mode::Open { events_per_second: 200_000 }, 1_000, 16);
        assert_eq!(schedule.due_offset(0), Some(Duration::ZERO));
        assert_eq!(schedule.due_offset(1), Some(Duration::from_millis(5)));
        assert_eq!(schedule.due_offset(200), Some(Duration::from_secs(1)));
        // Fractions of a nanosecond are dropped per request, never accumulated.
        let schedule = Schedule::new(Mode::Open { events_per_second: 3 }, 1, 1);
        assert_eq!(schedule.due_offset(1), Some(Duration::from_nanos(333_333_333)));
        assert_eq!(schedule.due_offset(3_000), Some(Duration::from_secs(1_000)));
    }

    #[test]
    fn open_loop_counts_the_requests_due_in_a_run() {
        let schedule = Schedule::new(Mode::Open { events_per_second: 2_000 }, 100, 2);
        assert_eq!(schedule.requests_due_before(Duration::from_secs(2)), Some(40));
        let schedule = Schedule::new(Mode::Open { events_per_second: 200_000 }, 1_000, 16);
        assert_eq!(schedule.requests_due_before(Duration::from_secs(10)), Some(2_000));
        // A rate below one batch per second: one request at 0 s, the next at 2 s.
        let schedule = Schedule::new(Mode::Open { events_per_second: 500 }, 1_000, 16);
        assert_eq!(schedule.requests_due_before(Duration::from_secs(2)), Some(1));
        assert_eq!(schedule.requests_due_before(Duration::from_millis(2_001)), Some(2));
        for number in 0..100 {
            let due = schedule.due_offset(number).expect("open loop");
            let before = schedule.requests_due_before(due + Duration::from_nanos(1)).expect("open loop");
            assert_eq!(before, number + 1);
        }
    }

    #[test]
    fn requests_are_dealt_to_connections_in_turn() {
        let schedule = Schedule::new(Mode::Closed, 1_000, 4);
        let numbers: Vec<u64> = (0..3)
            .flat_map(|round| (0..4).map(move |c| (c, round)))
            .map(|(c, r)| schedule.request_number(c, r))
            .collect();
        assert_eq!(numbers, (0..12).collect::<Vec<u64>>());
        assert_eq!(schedule.due_offset(5), None);
        assert_eq!(schedule.requests_due_before(Duration::from_secs(1)), None);
    }

    #[test]
    fn open_loop_spreads_each_connection_evenly() {
        // 20 requests/s over 2 connections: each connection every 100 ms, offset by 50 ms.
        let schedule = Schedule::new(Mode::Open { events_per_second: 2_000 }, 100, 2);
        let due = |connection, round| schedule.due_offset(schedule.request_number(connection, round));
        assert_eq!(due(0, 0), Some(Duration::ZERO));
        assert_eq!(due(1, 0), Some(Duration::from_millis(50)));
        assert_eq!(due(0, 1), Some(Duration::from_millis(100)));
        assert_eq!(due(1, 1), Some(Duration::from_millis(150)));
    }
}
