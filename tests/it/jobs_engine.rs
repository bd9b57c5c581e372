//! The job engine end to end (API → queue → worker → DB → API) on both backends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    both_backends,
    harness::{spawn_app, spawn_app_with, Backend},
};

const WITHIN: Duration = Duration::from_secs(30);

both_backends!(noop_job_runs_to_succeeded, noop_job_runs_to_succeeded);
async fn noop_job_runs_to_succeeded(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.submit_noop(json!({"duration_ms": 10})).await;
    let job = app.wait_status(id, "succeeded", WITHIN).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["progress"]["total"], 1);
    assert_eq!(job["progress"]["percent"], 100.0);
    let timeline: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["queued", "running", "succeeded"]);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    app.finish().await;
}

both_backends!(
    parent_progress_is_exact_at_every_poll,
    parent_progress_is_exact_at_every_poll
);
async fn parent_progress_is_exact_at_every_poll(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app
        .submit_noop(json!({"children": 100, "child": {"duration_ms": 20, "effect": true}}))
        .await;
    let mut last_done = 0;
    let mut polls = 0;
    let job = loop {
        let job = app.job(id).await;
        let p = &job["progress"];
        let parts = ["succeeded", "failed", "cancelled", "running", "queued"]
            .iter()
            .map(|k| p[k].as_i64().unwrap())
            .sum::<i64>();
        polls += 1;
        if p["total"].as_i64().unwrap() == 100 {
            assert_eq!(parts, 100, "progress parts must add up to the total: {p}");
            let children = job["children"].as_array().unwrap();
            let succeeded_children = children
                .iter()
                .filter(|c| c["status"] == "succeeded")
                .count() as i64;
            // The children listed were read after the counts: they can only be further along.
            assert!(
                succeeded_children >= p["succeeded"].as_i64().unwrap(),
                "{p}"
            );
            let done = p["succeeded"].as_i64().unwrap();
            assert!(
                done >= last_done,
                "progress went backwards: {done} < {last_done}"
            );
            last_done = done;
        }
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(polls < 2_000, "parent did not finish: {job:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["progress"]["succeeded"], 100);
    assert_eq!(job["children"].as_array().unwrap().len(), 100);
    // Every child applied its effect exactly once.
    let effects = app
        .store
        .db()
        .query_one(sea_orm::Statement::from_string(
            app.store.db().get_database_backend(),
            "SELECT COUNT(*) AS n, COALESCE(MAX(applications), 0) AS most FROM noop_effects",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effects.try_get::<i64>("", "n").unwrap(), 100);
    assert_eq!(effects.try_get::<i32>("", "most").unwrap(), 1);
    app.finish().await;
}

use sea_orm::ConnectionTrait;

both_backends!(
    permanent_failure_ends_failed_after_one_attempt,
    permanent_failure_ends_failed_after_one_attempt
);
async fn permanent_failure_ends_failed_after_one_attempt(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.submit_noop(json!({"fail_permanently": true})).await;
    let job = app.wait_status(id, "failed", WITHIN).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["error"], "noop was asked to fail permanently");
    // The dead letter is published after the outcome is written: wait for it, then for nothing
    // more (a second letter would arrive with the first batch).
    let seen = std::sync::Mutex::new(Vec::new());
    let (app_ref, seen) = (&app, &seen);
    let letters = crate::harness::eventually(WITHIN, "no dead letter", || async move {
        let app = app_ref;
        let mut got = match &app.queue {
            labfleet_jobs::Queue::Rabbit(q) => q.take_dead_letters().await.unwrap(),
            labfleet_jobs::Queue::Memory(q) => q.dead_letters(),
        };
        let mut seen = seen.lock().unwrap();
        if matches!(&app.queue, labfleet_jobs::Queue::Rabbit(_)) {
            seen.append(&mut got);
        } else {
            *seen = got;
        }
        if seen.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(seen.clone())
        }
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].job_id, id);
    assert_eq!(letters[0].status, "failed");
    app.finish().await;
}

both_backends!(
    flaky_job_succeeds_after_retries_with_the_configured_delays,
    flaky_job_succeeds_after_retries
);
async fn flaky_job_succeeds_after_retries(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.retry.initial_delay_ms = 300;
        s.retry.multiplier = 2.0;
        s.retry.max_delay_ms = 10_000;
        s.retry.jitter = 0.0;
    })
    .await;
    let id = app.submit_noop(json!({"fail_attempts": 2})).await;
    let job = app.wait_status(id, "succeeded", WITHIN).await;
    assert_eq!(job["attempts"], 3);
    let events = job["events"].as_array().unwrap();
    let at = |status: &str, attempt: i64| -> DateTime<Utc> {
        let e = events
            .iter()
            .find(|e| e["status"] == status && e["attempt"] == attempt)
            .unwrap_or_else(|| panic!("no {status} event for attempt {attempt}: {events:#?}"));
        e["at"].as_str().unwrap().parse().unwrap()
    };
    let first_gap = at("running", 2) - at("retrying", 1);
    let second_gap = at("running", 3) - at("retrying", 2);
    assert!(
        first_gap.num_milliseconds() >= 300 - 100,
        "first retry came after {first_gap}"
    );
    assert!(
        second_gap.num_milliseconds() >= 600 - 100,
        "second retry came after {second_gap}"
    );
    app.finish().await;
}

both_backends!(exhausted_attempts_end_dead, exhausted_attempts_end_dead);
async fn exhausted_attempts_end_dead(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.retry.max_attempts = 2).await;
    let id = app.submit_noop(json!({"fail_attempts": 5})).await;
    let job = app.wait_status(id, "dead", WITHIN).await;
    assert_eq!(job["attempts"], 2);
    assert!(
        job["error"].as_str().unwrap().contains("after 2 attempts"),
        "{job}"
    );
    app.finish().await;
}

both_backends!(continuations_park_and_resume, continuations_park_and_resume);
async fn continuations_park_and_resume(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app
        .submit_noop(json!({"continue_times": 3, "continue_after_ms": 100}))
        .await;
    let job = app.wait_status(id, "succeeded", WITHIN).await;
    assert_eq!(job["attempts"], 1, "continuations are not new attempts");
    assert_eq!(job["result"]["continued"], 3);
    app.finish().await;
}

both_backends!(
    cancel_stops_waiting_and_running_children,
    cancel_stops_children
);
async fn cancel_stops_children(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker.concurrency.diag = 2).await;
    let id = app
        .submit_noop(json!({"children": 20, "child": {"duration_ms": 2_000}}))
        .await;
    // Wait until some children run, then cancel the parent.
    app.wait_job(id, WITHIN, |j| {
        j["progress"]["running"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The parent is cancelled at once, or as soon as its worker lets go of it.
    app.wait_status(id, "cancelled", WITHIN).await;
    let job = app
        .wait_job(id, WITHIN, |j| {
            j["progress"]["cancelled"].as_i64() == Some(20)
        })
        .await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["progress"]["succeeded"], 0, "{job:#}");
    // Cancelling again is a conflict.
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 409);
    app.finish().await;
}

both_backends!(
    retrying_a_child_reopens_its_finished_parent,
    retrying_a_child_reopens_its_finished_parent
);
async fn retrying_a_child_reopens_its_finished_parent(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app
        .submit_noop(json!({"children": 2, "child": {"duration_ms": 1_500}}))
        .await;
    let job = app
        .wait_job(id, WITHIN, |j| {
            j["progress"]["running"].as_i64().unwrap_or(0) == 2
        })
        .await;
    let child: uuid::Uuid = job["children"][0]["id"].as_str().unwrap().parse().unwrap();
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{child}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_status(id, "failed", WITHIN).await;
    assert_eq!(job["progress"]["cancelled"], 1, "{job:#}");
    // Retrying the cancelled child alone: the parent waits again and ends with the child's outcome.
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{child}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let parent = app.job(id).await;
    assert_eq!(parent["status"], "running", "{parent:#}");
    let job = app.wait_status(id, "succeeded", WITHIN).await;
    assert_eq!(job["progress"]["succeeded"], 2, "{job:#}");
    assert!(
        job["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reopened"))),
        "{job:#}"
    );
    app.finish().await;
}

both_backends!(
    retry_reruns_only_failed_children,
    retry_reruns_only_failed_children
);
async fn retry_reruns_only_failed_children(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app
        .submit_noop(json!({"children": 3, "child": {"fail_permanently": true}}))
        .await;
    let job = app.wait_status(id, "failed", WITHIN).await;
    assert_eq!(job["error"], "3 of 3 children failed");
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["requeued"], 3);
    let job = app.wait_status(id, "failed", WITHIN).await;
    for child in job["children"].as_array().unwrap() {
        assert_eq!(
            child["attempts"], 1,
            "a retried child starts from attempt 1 again"
        );
    }
    // Retrying a job that succeeded is refused.
    let ok = app.submit_noop(json!({})).await;
    app.wait_status(ok, "succeeded", WITHIN).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{ok}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    if let labfleet_jobs::Queue::Rabbit(q) = &app.queue {
        assert_eq!(
            q.take_dead_letters().await.unwrap().len(),
            6,
            "3 failures, twice"
        );
    }
    app.finish().await;
}

both_backends!(
    concurrent_retries_run_a_job_once,
    concurrent_retries_run_a_job_once
);
async fn concurrent_retries_run_a_job_once(backend: Backend) {
    let app = spawn_app(backend).await;
    // Each run takes a while, so the retries below all land while the first one's run is
    // still going: only one of them may start it.
    let id = app
        .submit_noop(json!({"fail_permanently": true, "duration_ms": 1_000}))
        .await;
    app.wait_status(id, "failed", WITHIN).await;
    let path = format!("/api/jobs/{id}/retry");
    let calls = (0..4).map(|_| app.call(reqwest::Method::POST, &path, None));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 409),
        "{statuses:?}"
    );
    let job = app.wait_status(id, "failed", WITHIN).await;
    let runs = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "running")
        .count();
    assert_eq!(
        runs, 2,
        "one run before the retry, one after: {:#}",
        job["events"]
    );
    app.finish().await;
}

both_backends!(
    a_job_may_have_more_attempts_than_the_default,
    a_job_may_have_more_attempts_than_the_default
);
async fn a_job_may_have_more_attempts_than_the_default(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.retry.max_attempts = 2;
        s.retry.initial_delay_ms = 10;
        s.retry.max_delay_ms = 20;
    })
    .await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/api/jobs",
            Some(json!({"kind": "noop", "args": {"fail_attempts": 4}, "max_attempts": 6})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().parse().unwrap();
    let job = app.wait_status(id, "succeeded", WITHIN).await;
    assert_eq!(job["attempts"], 5);
    app.finish().await;
}

both_backends!(
    cancelling_a_failing_job_ends_it_cancelled,
    cancelling_a_failing_job_ends_it_cancelled
);
async fn cancelling_a_failing_job_ends_it_cancelled(backend: Backend) {
    // The job keeps failing transiently; a cancel that arrives while it runs must end it, not
    // leave it retrying forever.
    let app = spawn_app_with(backend, |s| s.retry.max_attempts = 20).await;
    let id = app
        .submit_noop(json!({"fail_attempts": 100, "duration_ms": 300}))
        .await;
    app.wait_status(id, "running", WITHIN).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_status(id, "cancelled", WITHIN).await;
    assert!(job["finished_at"].is_string());
    app.finish().await;
}

both_backends!(
    job_detail_shows_its_rows_exactly,
    job_detail_shows_its_rows_exactly
);
/// `GET /api/jobs/{id}` shows exactly what the rows hold: every field, timestamps in the same
/// format, children pages at an offset, at most the first 1,000 events, progress counted from
/// the children (or from the job itself when it has none).
async fn job_detail_shows_its_rows_exactly(backend: Backend) {
    use labfleet_entities::job_event;
    use sea_orm::{ActiveValue::NotSet, EntityTrait, Set};

    let app = spawn_app(backend).await;
    let finished = |j: &serde_json::Value| {
        j["status"]
            .as_str()
            .and_then(labfleet_jobs::JobStatus::parse)
            .is_some_and(labfleet_jobs::JobStatus::is_terminal)
    };
    let parent = app
        .submit_noop(json!({"children": 7, "child": {"fail_permanently": true}}))
        .await;
    let single = app.submit_noop(json!({"duration_ms": 5})).await;
    app.wait_job(parent, WITHIN, finished).await;
    app.wait_job(single, WITHIN, finished).await;

    // More events than a detail shows, with whole seconds, trailing zeros and text to escape.
    let base = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let extra: Vec<job_event::ActiveModel> = (0..1_005)
        .map(|i| job_event::ActiveModel {
            id: NotSet,
            job_id: Set(parent),
            at: Set(base + chrono::Duration::microseconds(i * 10)),
            status: Set("running".into()),
            attempt: Set(i as i32),
            message: Set((i % 3 == 0).then(|| format!("say \"hi\" \\ ü {i}\n\t"))),
        })
        .collect();
    for chunk in extra.chunks(200) {
        job_event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(app.store.db())
            .await
            .unwrap();
    }

    for (limit, offset) in [(1000, 0), (2, 1), (3, 6), (5, 20)] {
        let (status, shown) = app
            .call(
                reqwest::Method::GET,
                &format!("/api/jobs/{parent}?children_limit={limit}&children_offset={offset}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{shown}");
        let expected = expected_detail(&app, parent, limit, offset).await;
        assert_eq!(shown, expected, "page {limit}@{offset}");
    }
    let shown = app.job(parent).await;
    assert_eq!(shown["events"].as_array().unwrap().len(), 1_000);
    assert_eq!(shown["children"].as_array().unwrap().len(), 7);
    assert_eq!(shown["progress"]["total"], 7);
    let shown = app.job(single).await;
    assert_eq!(shown, expected_detail(&app, single, 1000, 0).await);
    assert_eq!(shown["progress"]["total"], 1);
    assert_eq!(shown["progress"]["percent"], 100.0);
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/jobs/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, 404);
    app.finish().await;
}

/// What `GET /api/jobs/{id}` must show, built from the rows through the entities.
async fn expected_detail(
    app: &crate::harness::TestApp,
    id: uuid::Uuid,
    limit: u64,
    offset: u64,
) -> serde_json::Value {
    use labfleet_entities::{job, job_event};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

    let db = app.store.db();
    let row = job::Entity::find_by_id(id).one(db).await.unwrap().unwrap();
    let children = job::Entity::find()
        .filter(job::Column::ParentId.eq(id))
        .order_by_asc(job::Column::Id)
        .all(db)
        .await
        .unwrap();
    let events = job_event::Entity::find()
        .filter(job_event::Column::JobId.eq(id))
        .order_by_asc(job_event::Column::Id)
        .limit(1_000)
        .all(db)
        .await
        .unwrap();
    let summary = |j: &job::Model| {
        json!({
            "id": j.id, "kind": j.kind, "status": j.status, "parent_id": j.parent_id,
            "attempts": j.attempts, "max_attempts": j.max_attempts, "error": j.error,
            "created_by": j.created_by, "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at, "step": j.step,
        })
    };
    let statuses: Vec<&str> = if children.is_empty() {
        vec![row.status.as_str()]
    } else {
        children.iter().map(|c| c.status.as_str()).collect()
    };
    let count = |of: &[&str]| statuses.iter().filter(|s| of.contains(s)).count() as i64;
    let total = statuses.len() as i64;
    let done = count(&["succeeded", "failed", "dead", "cancelled"]);
    let mut out = summary(&row);
    let fields = out.as_object_mut().unwrap();
    fields.insert("ok".into(), json!(true));
    fields.insert("args".into(), row.payload.clone());
    fields.insert("result".into(), json!(row.result));
    fields.insert(
        "progress".into(),
        json!({
            "total": total,
            "succeeded": count(&["succeeded"]),
            "failed": count(&["failed", "dead"]),
            "cancelled": count(&["cancelled"]),
            "running": count(&["running"]),
            "queued": count(&["queued", "retrying"]),
            "percent": (done as f64 * 1000.0 / total as f64).round() / 10.0,
        }),
    );
    fields.insert(
        "events".into(),
        events
            .iter()
            .map(|e| json!({"at": e.at, "status": e.status, "attempt": e.attempt, "message": e.message}))
            .collect(),
    );
    fields.insert(
        "children".into(),
        children
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(summary)
            .collect(),
    );
    out
}
