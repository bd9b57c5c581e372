//! The allowed values of the idle auto-shutdown thresholds, which a cluster and a class can both
//! set (`idle_cpu_percent`, `idle_minutes`): one rule for both requests.

/// Longest idle window: a week.
pub const MAX_IDLE_MINUTES: i64 = 10_080;

/// Checks a CPU threshold in percent; the message says what is allowed.
pub fn check_cpu_percent(percent: f64) -> Result<f64, &'static str> {
    if percent > 0.0 && percent <= 100.0 {
        Ok(percent)
    } else {
        Err("must be above 0 and at most 100")
    }
}

/// Checks an idle window in minutes; the message says what is allowed.
pub fn check_minutes(minutes: i64) -> Result<i32, &'static str> {
    if (1..=MAX_IDLE_MINUTES).contains(&minutes) {
        Ok(minutes as i32)
    } else {
        Err("must be between 1 and 10080 (a week)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(check_cpu_percent(0.0).is_err());
        assert!(check_cpu_percent(f64::NAN).is_err());
        assert_eq!(check_cpu_percent(100.0), Ok(100.0));
        assert!(check_minutes(0).is_err());
        assert_eq!(check_minutes(10_080), Ok(10_080));
        assert!(check_minutes(10_081).is_err());
    }
}
