//! The retry policy: how long a job waits before its next attempt. The design card names the
//! `backoff` crate; it is flagged unmaintained (RUSTSEC-2025-0012), so it is used here and nowhere
//! else, behind `RetryPolicy`.

use std::time::Duration;

use backoff::{backoff::Backoff, ExponentialBackoff, ExponentialBackoffBuilder};

use labfleet_config::RetrySettings;

/// Exponential delays with jitter, from the settings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    settings: RetrySettings,
}

impl RetryPolicy {
    /// A policy from the `retry` settings.
    pub fn new(settings: RetrySettings) -> Self {
        RetryPolicy { settings }
    }

    /// Attempts a job gets, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.settings.max_attempts
    }

    fn exponential(&self) -> ExponentialBackoff {
        ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(self.settings.initial_delay_ms))
            .with_multiplier(self.settings.multiplier)
            .with_randomization_factor(self.settings.jitter)
            .with_max_interval(Duration::from_millis(self.settings.max_delay_ms))
            .with_max_elapsed_time(None)
            .build()
    }

    /// The delay before the next attempt after attempt `failed_attempt` (1-based) failed
    /// transiently. Whether there is a next attempt is the job's own `max_attempts` to decide.
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        let mut backoff = self.exponential();
        let mut delay = Duration::from_millis(self.settings.initial_delay_ms);
        for _ in 0..failed_attempt.max(1) {
            delay = backoff.next_backoff().unwrap_or(backoff.max_interval);
        }
        delay
    }
}

/// Jittered exponential delays for reconnecting to infrastructure (database, broker): starts at
/// 100 ms, never gives up, capped at a maximum.
pub struct Reconnect(ExponentialBackoff);

impl Reconnect {
    /// Delays growing from 100 ms up to `max`.
    pub fn new(max: Duration) -> Self {
        Reconnect(
            ExponentialBackoffBuilder::new()
                .with_initial_interval(Duration::from_millis(100))
                .with_max_interval(max)
                .with_max_elapsed_time(None)
                .build(),
        )
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(self.0.max_interval)
    }

    /// Starts again from the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(RetrySettings {
            max_attempts: 4,
            initial_delay_ms: 100,
            multiplier: 2.0,
            max_delay_ms: 300,
            jitter,
        })
    }

    #[test]
    fn delays_grow_and_are_capped_without_jitter() {
        let p = policy(0.0);
        assert_eq!(p.delay_after(1), Duration::from_millis(100));
        assert_eq!(p.delay_after(2), Duration::from_millis(200));
        assert_eq!(p.delay_after(3), Duration::from_millis(300));
        assert_eq!(
            p.delay_after(9),
            Duration::from_millis(300),
            "capped, never exhausted"
        );
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = policy(0.5);
        for _ in 0..100 {
            let d = p.delay_after(1).as_millis();
            assert!((50..=150).contains(&d), "{d} ms outside ±50% of 100 ms");
        }
    }
}
