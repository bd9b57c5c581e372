//! The job store driven directly, as a worker would, where the order of events must be exact.
//!
//! Row-lock order on PostgreSQL: a worker's lease renewal and its batched completions write the
//! same `jobs` rows at once; both lock them in id order, so they wait for each other instead of
//! deadlocking. The interleaving is forced with a third transaction and waits on
//! `pg_stat_activity`, so the test decides the order, not luck.

use std::time::Duration;

use chrono::Utc;
use labfleet_jobs::{
    store::{Completion, NewJob, Outcome},
    JobSpec, JobStore, NoopArgs,
};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement, TransactionTrait};
use uuid::Uuid;

use crate::harness::{drop_pg_database, eventually, fresh_pg_database, pg_url};

const OWNER: &str = "worker-under-test";

async fn exec(db: &impl ConnectionTrait, sql: String) {
    db.execute(Statement::from_string(DatabaseBackend::Postgres, sql))
        .await
        .unwrap();
}

/// Waits until a statement whose text contains `needle` is waiting for a row lock.
async fn waiting_on_a_lock(db: &sea_orm::DatabaseConnection, needle: &str) {
    let probe = format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query LIKE '%{}%'",
        needle.replace('\'', "''")
    );
    eventually(
        Duration::from_secs(10),
        &format!("no statement with {needle:?} waits for a lock"),
        || {
            let probe = probe.clone();
            async move {
                let n: i64 = db
                    .query_one(Statement::from_string(DatabaseBackend::Postgres, probe))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get("", "n")
                    .unwrap();
                if n > 0 {
                    Ok(())
                } else {
                    Err("none waiting".to_string())
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewal_and_batched_completion_on_shared_rows_do_not_deadlock() {
    let name = fresh_pg_database().await;
    let db = Database::connect(pg_url(&name)).await.unwrap();
    let store = JobStore::new(db.clone());
    let new = NewJob {
        spec: JobSpec::Noop(NoopArgs::default()),
        parent_id: None,
        created_by: "test".into(),
        max_attempts: 3,
        class_id: None,
    };
    // Three jobs, a < b < c by id, held by one worker (one claim, one lease token).
    let mut ids: Vec<Uuid> = Vec::new();
    for _ in 0..3 {
        ids.extend(store.create(std::slice::from_ref(&new)).await.unwrap());
    }
    ids.sort();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let until = Utc::now() + chrono::Duration::seconds(60);
    let claimed = store.claim_batch(OWNER, &ids, until).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let token = claimed[0].lease_token;
    // Row a gets a new version after c's (an indexed column changes twice): a scan of the
    // worker's rows in storage order now meets b, c, a — the opposite of id order at its ends.
    for owner in ["elsewhere", OWNER] {
        exec(
            &db,
            format!("UPDATE jobs SET lease_owner = '{owner}' WHERE id = '{a}'"),
        )
        .await;
    }

    // A third transaction holds c, so whoever reaches c first stops there.
    let blocker = db.begin().await.unwrap();
    exec(
        &blocker,
        format!("SELECT id FROM jobs WHERE id = '{c}' FOR UPDATE"),
    )
    .await;
    // The renewal locks what it meets before c, then waits for c.
    let renewal = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .renew_leases(OWNER, Utc::now() + chrono::Duration::seconds(90))
                .await
        }
    });
    waiting_on_a_lock(&db, "SET lease_expires_at = $").await;
    // The completion of a and b, in id order, waits for whichever the renewal holds.
    let completion = tokio::spawn({
        let store = store.clone();
        async move {
            let done = |job_id| Completion {
                job_id,
                lease_token: token,
                attempt: 1,
                outcome: Outcome::Succeeded { result: None },
            };
            store.complete_batch(OWNER, &[done(a), done(b)]).await
        }
    });
    waiting_on_a_lock(&db, "status = 'succeeded'").await;
    blocker.commit().await.unwrap();

    let renewed = renewal.await.unwrap();
    let completed = completion.await.unwrap();
    for (what, error) in [
        ("renewal", renewed.as_ref().err().map(|e| e.to_string())),
        (
            "completion",
            completed.as_ref().err().map(|e| e.to_string()),
        ),
    ] {
        assert_eq!(error, None, "the {what} failed");
    }
    assert_eq!(
        completed.unwrap(),
        vec![true, true],
        "both completions applied"
    );
    // The renewal ran after the blocker let go: c is still held and was renewed.
    let held: Vec<Uuid> = renewed.unwrap().iter().map(|h| h.job_id).collect();
    assert!(held.contains(&c), "{held:?}");
    for (id, status) in [(a, "succeeded"), (b, "succeeded"), (c, "running")] {
        assert_eq!(store.get_row(id).await.unwrap().status, status, "{id}");
    }
    db.close().await.unwrap();
    drop_pg_database(&name).await;
}

/// A job store alone on a fresh embedded (SQLite) database: no worker or sweep touches its jobs.
async fn embedded_store() -> (sea_orm::DatabaseConnection, JobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = labfleet_config::Settings {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let db = labfleet_db::connect(&settings).await.unwrap();
    labfleet_db::migrate(&db).await.unwrap();
    (db.clone(), JobStore::new(db), dir)
}

/// A parent cancelled while its only child ran, whose child then finished its work anyway (as a
/// clone done before the cancel could stop it does), ends `succeeded`, not `cancelled` with
/// every child succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_came_too_late_leaves_the_parent_succeeded() {
    let (db, store, _dir) = embedded_store().await;
    let new = |parent_id| NewJob {
        spec: JobSpec::Noop(NoopArgs::default()),
        parent_id,
        created_by: "test".into(),
        max_attempts: 3,
        class_id: None,
    };
    let until = Utc::now() + chrono::Duration::seconds(60);
    let parent = store.create(&[new(None)]).await.unwrap()[0];
    let claim = store.claim_batch(OWNER, &[parent], until).await.unwrap();
    let children = store
        .create_children(parent, &[new(Some(parent))])
        .await
        .unwrap()
        .expect("not cancelled");
    let child = children[0].1;
    let wait = Completion {
        job_id: parent,
        lease_token: claim[0].lease_token,
        attempt: 1,
        outcome: Outcome::WaitChildren,
    };
    assert_eq!(store.complete_batch(OWNER, &[wait]).await.unwrap(), [true]);
    let held = store.claim_batch(OWNER, &[child], until).await.unwrap();

    let cancel = store.cancel(parent, "cancelled on request").await.unwrap();
    assert_eq!(cancel.stop_requested, 1, "{cancel:?}");
    // The child's work was done before it noticed the cancel.
    let done = Completion {
        job_id: child,
        lease_token: held[0].lease_token,
        attempt: 1,
        outcome: Outcome::Succeeded { result: None },
    };
    assert_eq!(store.complete_batch(OWNER, &[done]).await.unwrap(), [true]);
    assert_eq!(store.finalize_parents(&[parent]).await.unwrap(), [parent]);
    let row = store.get_row(parent).await.unwrap();
    assert_eq!(row.status, "succeeded", "{row:?}");
    assert_eq!(row.error, None);
    // A parent whose children were really cancelled stays cancelled.
    let other = store.create(&[new(None)]).await.unwrap()[0];
    let claim = store.claim_batch(OWNER, &[other], until).await.unwrap();
    store
        .create_children(other, &[new(Some(other))])
        .await
        .unwrap();
    let wait = Completion {
        job_id: other,
        lease_token: claim[0].lease_token,
        attempt: 1,
        outcome: Outcome::WaitChildren,
    };
    store.complete_batch(OWNER, &[wait]).await.unwrap();
    store.cancel(other, "cancelled on request").await.unwrap();
    assert!(store.finalize_parents(&[other]).await.unwrap().is_empty());
    assert_eq!(store.get_row(other).await.unwrap().status, "cancelled");
    db.close().await.unwrap();
}

/// A claim comes back typed: the spec decoded from the stored kind and arguments (or what is
/// wrong with them), and the family the spec travels on, whatever the row's text says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_typed_and_a_bad_row_says_what_is_wrong() {
    let (db, store, _dir) = embedded_store().await;
    let on_power = NewJob {
        spec: JobSpec::Noop(NoopArgs {
            family: Some(labfleet_jobs::Family::Power),
            ..Default::default()
        }),
        parent_id: None,
        created_by: "test".into(),
        max_attempts: 3,
        class_id: None,
    };
    let ids = store
        .create(&[on_power.clone(), on_power.clone()])
        .await
        .unwrap();
    // One row's family text is garbled, the other's kind is one this build does not know.
    for (column, text, id) in [("family", "bogus", ids[0]), ("kind", "reticulate", ids[1])] {
        let changed = db
            .execute(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                format!("UPDATE jobs SET {column} = ? WHERE id = ?"),
                [text.into(), id.into()],
            ))
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1);
    }
    let until = Utc::now() + chrono::Duration::seconds(60);
    let claimed = store.claim_batch(OWNER, &ids, until).await.unwrap();
    let of = |id: Uuid| claimed.iter().find(|c| c.id == id).expect("claimed");
    assert_eq!(of(ids[0]).spec, Ok(on_power.spec.clone()));
    assert_eq!(of(ids[0]).family, labfleet_jobs::Family::Power);
    assert_eq!(
        of(ids[1]).spec,
        Err(labfleet_jobs::InvalidJob::UnknownKind("reticulate".into()))
    );
    assert_eq!(of(ids[1]).kind_name(), "unknown");
    db.close().await.unwrap();
}
