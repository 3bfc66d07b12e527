//! A budget of log lines for events that an outsider or a fault can repeat at will (refused
//! requests, failed sends): at most `burst` lines per window, and one line with the count of
//! the rest when the next window opens. The counters in `/metrics` count every event.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogBudget {
    window: Duration,
    burst: u32,
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What the budget allows for one event.
#[derive(Debug, PartialEq, Eq)]
pub struct Admit {
    /// Whether to log this event.
    pub log: bool,
    /// Events not logged in the window that just closed (log this count first if non-zero).
    pub suppressed: u64,
}

impl LogBudget {
    pub const fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            started: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Accounts for one event at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let mut closed = 0;
        if self
            .started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            closed = self.suppressed;
            self.started = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        let log = self.logged < self.burst;
        if log {
            self.logged += 1;
        } else {
            self.suppressed += 1;
        }
        Admit {
            log,
            suppressed: closed,
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_count_of_the_rest() {
        let mut b = LogBudget::new(Duration::from_secs(10), 2);
        let t = Instant::now();
        let logged = (0..5).filter(|_| b.admit(t).log).count();
        assert_eq!(logged, 2);
        let next = b.admit(t + Duration::from_secs(10));
        assert_eq!(
            next,
            Admit {
                log: true,
                suppressed: 3
            }
        );
        assert_eq!(b.admit(t + Duration::from_secs(11)).suppressed, 0);
    }
}
