//! Byte budgets. The memory budget bounds the checked batches held in memory between decoding
//! and the end of their WAL append (`limits.max_buffered_bytes`, 429 above it). A permit
//! travels with its batch and gives its bytes back when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    held: AtomicU64,
    max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{held} bytes are buffered, {requested} more would pass limits.max_buffered_bytes = {max}")]
pub struct OverBudget {
    pub requested: u64,
    pub held: u64,
    pub max: u64,
}

/// Bytes held by one batch until it is written.
#[derive(Debug)]
pub struct BudgetPermit {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(max: u64) -> Arc<MemoryBudget> {
        assert!(max > 0);
        Arc::new(MemoryBudget { held: AtomicU64::new(0), max })
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Result<BudgetPermit, OverBudget> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let wanted = held.saturating_add(bytes);
            if wanted > self.max {
                return Err(OverBudget { requested: bytes, held, max: self.max });
            }
            match self.held.compare_exchange_weak(held, wanted, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(BudgetPermit { budget: self.clone(), bytes }),
                Err(actual) => held = actual,
            }
        }
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        let before = self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        assert!(before >= self.bytes, "a permit gives back only what it took");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_above_the_limit_and_released_on_drop() {
        let budget = MemoryBudget::new(100);
        let first = budget.try_reserve(60).unwrap();
        let refused = budget.try_reserve(41).unwrap_err();
        assert_eq!(refused, OverBudget { requested: 41, held: 60, max: 100 });
        let exact = budget.try_reserve(40).unwrap();
        drop(first);
        assert_eq!(budget.held(), 40);
        drop(exact);
        assert_eq!(budget.held(), 0);
    }
}
