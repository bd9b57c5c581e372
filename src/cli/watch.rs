//! Following a job until it finishes: a live progress bar on a terminal (`[####>   ] 12/20 VMs
//! 2 running  0 failed  4.1s`), plain lines that change only when the counts do otherwise (logs,
//! pipes and tests read those). Polls `GET /api/jobs/{id}` with one child every 200 ms, which
//! costs the server one indexed count per poll.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::client::{ApiClient, ClientError, Job, Progress};

/// How often the job is read.
const POLL: Duration = Duration::from_millis(200);

/// How long the server may stay unreachable before the watch gives up: a restarting API or a
/// dropped connection should not end a long deployment's watch.
const PATIENCE: Duration = Duration::from_secs(15);

/// How a watch ended.
pub enum Watched {
    /// The job reached a final state.
    Finished(Job),
    /// Ctrl-C (or SIGTERM) came first; the job goes on without us.
    Interrupted,
}

/// What the counts are about, and how many to expect before the job has made its children.
pub struct Units {
    /// Plural noun shown after the counts ("VMs").
    pub noun: &'static str,
    /// The bar's length until the job's children exist (a class's pool size).
    pub expected: Option<u64>,
}

impl Units {
    /// The units of a job of `kind`.
    pub fn of_kind(kind: &str) -> Units {
        Units {
            noun: if kind == "deploy_class" {
                "VMs"
            } else {
                "jobs"
            },
            expected: None,
        }
    }
}

/// Follows job `id` until it finishes or `stop` fires; `started` is when the user's wait began.
pub async fn watch(
    client: &ApiClient,
    id: Uuid,
    units: Units,
    started: Instant,
    stop: &CancellationToken,
) -> Result<Watched, ClientError> {
    let mut view = View::new(units, started);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let poll = tokio::select! {
            _ = stop.cancelled() => {
                view.stop_drawing();
                return Ok(Watched::Interrupted);
            }
            poll = client.job(id) => poll,
        };
        match poll {
            Ok(job) => {
                unreachable_since = None;
                view.show(&job);
                if job.status.is_terminal() {
                    view.stop_drawing();
                    return Ok(Watched::Finished(job));
                }
            }
            Err(e @ ClientError::Unreachable { .. }) => {
                if unreachable_since.get_or_insert_with(Instant::now).elapsed() > PATIENCE {
                    view.stop_drawing();
                    return Err(e);
                }
            }
            Err(e) => {
                view.stop_drawing();
                return Err(e);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                view.stop_drawing();
                return Ok(Watched::Interrupted);
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The bar on a terminal, printed lines elsewhere.
struct View {
    units: Units,
    started: Instant,
    bar: Option<ProgressBar>,
    last_line: Option<(u64, u64, Progress)>,
}

impl View {
    fn new(units: Units, started: Instant) -> View {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(units.expected.unwrap_or(0)),
                ProgressDrawTarget::stdout(),
            );
            // The template is a constant; fall back to the default style rather than panic.
            if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}") {
                bar.set_style(style.progress_chars("#> "));
            }
            bar
        });
        View {
            units,
            started,
            bar,
            last_line: None,
        }
    }

    /// Shows the job's counts. Until a parent has made its children its progress counts itself,
    /// so the bar keeps the expected length and shows nothing done.
    fn show(&mut self, job: &Job) {
        let (p, len) = match self.units.expected {
            Some(expected) if job.children.is_empty() => (Progress::default(), expected),
            _ => (job.progress, job.progress.total),
        };
        let done = p.succeeded + p.failed + p.cancelled;
        let secs = self.started.elapsed().as_secs_f64();
        let mut msg = format!(
            "{}  {} running  {} failed",
            self.units.noun, p.running, p.failed
        );
        if p.cancelled > 0 {
            msg.push_str(&format!("  {} cancelled", p.cancelled));
        }
        match &self.bar {
            Some(bar) => {
                bar.set_length(len);
                bar.set_position(done);
                bar.set_message(format!("{msg}  {secs:.1}s"));
            }
            None => {
                if self.last_line != Some((done, len, p)) {
                    self.last_line = Some((done, len, p));
                    println!("{done}/{len} {msg}  {secs:.1}s");
                }
            }
        }
    }

    /// Leaves the bar's last state on screen.
    fn stop_drawing(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
