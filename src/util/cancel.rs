//! Cooperative cancellation: a deadline that long work checks between its steps.
//!
//! A server cannot kill the thread a timed-out request runs on; it can only ask the work to
//! stop. Work that takes a [`Cancel`] calls [`Cancel::check`] at the boundaries of its
//! steps (after decoding, after embedding, every few hundred rows of an export), so a
//! request past its deadline returns [`Error::Cancelled`] within one step and frees its
//! slot instead of running on unseen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A deadline and a stop flag shared by the caller and the work it started. Cloning shares
/// the same flag; the default never cancels.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    stopped: Arc<AtomicBool>,
}

impl Cancel {
    /// A token that cancels `after` from now.
    pub fn after(after: Duration) -> Self {
        Cancel {
            deadline: Instant::now().checked_add(after),
            stopped: Arc::default(),
        }
    }

    /// A token that cancels only when [`Cancel::stop`] is called.
    pub fn never() -> Self {
        Cancel::default()
    }

    /// Asks the work to stop at its next check (a client that went away, a shutdown).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(Cancelled)` naming `step` once the deadline has passed or `stop` was called.
    pub fn check(&self, step: &str) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::Cancelled {
                step: step.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_or_a_stop_cancels_every_clone() {
        assert!(Cancel::never().check("x").is_ok());
        let expired = Cancel::after(Duration::ZERO);
        assert!(matches!(
            expired.check("embedding"),
            Err(Error::Cancelled { step }) if step == "embedding"
        ));
        let token = Cancel::after(Duration::from_secs(3600));
        let shared = token.clone();
        assert!(shared.check("x").is_ok());
        token.stop();
        assert!(shared.is_cancelled());
    }
}
