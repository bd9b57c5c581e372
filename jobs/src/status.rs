//! The job state machine's states: `queued → running → succeeded | failed | cancelled`, with
//! `retrying` between attempts and `dead` once attempts are exhausted.

use serde::{Deserialize, Serialize};

/// A job's status as stored in `jobs.status` and shown by the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// Claimed by a worker, or parked waiting for a continuation or for its children.
    Running,
    /// A transient failure happened; waiting for the delayed retry.
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// Finished with a permanent error (or, for a parent, with failed children).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Every attempt failed.
    Dead,
}

impl JobStatus {
    /// Every status, in state-machine order.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Dead,
    ];

    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Dead => "dead",
        }
    }

    /// Parses a stored or user-supplied status name.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for the states a job never leaves on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Dead
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
