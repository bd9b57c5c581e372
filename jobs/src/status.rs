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

    /// The states of a job not yet finished: waiting, running (or parked), or between attempts.
    pub const UNFINISHED: [JobStatus; 3] =
        [JobStatus::Queued, JobStatus::Running, JobStatus::Retrying];

    /// [`JobStatus::UNFINISHED`] as an SQL list, for `status IN …` (the one place it is spelled).
    pub const UNFINISHED_SQL: &'static str = "('queued', 'running', 'retrying')";

    /// True for a job not yet finished (see [`JobStatus::UNFINISHED`]).
    pub fn is_unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
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
    fn the_unfinished_sql_list_names_the_unfinished_states() {
        let named: Vec<String> = JobStatus::UNFINISHED
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(JobStatus::UNFINISHED_SQL, format!("({})", named.join(", ")));
        for s in JobStatus::ALL {
            assert_eq!(s.is_unfinished(), !s.is_terminal(), "{s:?}");
        }
    }

    #[test]
    fn every_status_round_trips_through_its_name() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
