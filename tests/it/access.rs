//! Access control and audit: every route answers every role as the table says, tokens live and
//! die as issued (expiry, revoke, disabled users), only their digests are stored, they never reach
//! a log, non-admins only see their own jobs, the audit log records who did what from where, and
//! the `labfleet user|token` commands work on the same database as `serve`.

use std::net::SocketAddr;

use reqwest::Method;
use sea_orm::{ConnectionTrait, EntityTrait};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    both_backends,
    harness::{capture_logs, captured_logs, spawn_app, spawn_app_with, Backend, TestApp},
};

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
enum Access {
    /// Everyone, without a token.
    Public,
    /// Any authenticated caller.
    AnyRole,
    /// Teachers and admins.
    Teacher,
    /// Admins only.
    Admin,
}
use Access::*;

/// Every route of the API, one line each. A route missing here fails the test: add its row.
const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/api/jobs", AnyRole),
    ("POST", "/api/jobs", Admin),
    ("GET", "/api/jobs/{id}", AnyRole),
    ("POST", "/api/jobs/{id}/cancel", Teacher),
    ("POST", "/api/jobs/{id}/retry", Teacher),
    ("GET", "/api/cluster-config", Admin),
    ("POST", "/api/cluster-config", Admin),
    ("PUT", "/api/cluster-config/{db_id}", Admin),
    ("DELETE", "/api/cluster-config/{db_id}", Admin),
    ("POST", "/api/cluster-config/{db_id}/test", Admin),
    ("GET", "/api/me", AnyRole),
    ("GET", "/api/users", Admin),
    ("POST", "/api/users", Admin),
    ("GET", "/api/users/{id}/tokens", Admin),
    ("POST", "/api/users/{id}/tokens", Admin),
    ("DELETE", "/api/tokens/{id}", Admin),
    ("GET", "/api/audit", Admin),
    ("GET", "/api/scheduler", Admin),
    ("GET", "/api/reconcile", Admin),
    ("GET", "/api/classes", Teacher),
    ("POST", "/api/classes", Teacher),
    ("GET", "/api/classes/{id}", Teacher),
    ("PATCH", "/api/classes/{id}", Teacher),
    ("DELETE", "/api/classes/{id}", Teacher),
    ("POST", "/api/classes/{id}/retry-failed", Teacher),
    ("POST", "/api/cluster-config/{db_id}/sync", Admin),
    ("GET", "/api/templates", Teacher),
    ("GET", "/api/isos", Teacher),
    ("GET", "/api/vms", AnyRole),
    ("GET", "/api/vms/{id}", AnyRole),
    ("POST", "/api/vms/{id}/power", AnyRole),
    ("PATCH", "/api/classes/{id}/vms/{vm_id}", Teacher),
];

/// Sends a request with `token` (or none); returns status and JSON body.
async fn call_as(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The string `key` of every object in the JSON array `list`.
fn strings(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap().to_string())
        .collect()
}

/// The status of `GET /api/me` with `token`: 200 while the token is accepted, else 401.
async fn me_status(app: &TestApp, token: &str) -> u16 {
    call_as(app, Some(token), Method::GET, "/api/me", None)
        .await
        .0
}

/// A user made through the API, with a fresh token.
struct TestUser {
    id: i64,
    token: String,
    token_id: i64,
}

async fn new_user(app: &TestApp, name: &str, role: &str) -> TestUser {
    let (status, body) = app
        .call(
            Method::POST,
            "/api/users",
            Some(json!({"name": name, "role": role})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["role"], role);
    let id = body["user"]["id"].as_i64().unwrap();
    let (token, token_id) = issue(app, id, json!({})).await;
    TestUser {
        id,
        token,
        token_id,
    }
}

async fn issue(app: &TestApp, user_id: i64, body: Value) -> (String, i64) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/users/{user_id}/tokens"),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["token"].as_str().unwrap().to_string(),
        body["token_id"].as_i64().unwrap(),
    )
}

async fn set_expiry(app: &TestApp, token_id: i64, at: chrono::DateTime<chrono::Utc>) {
    let row = labfleet_entities::api_token::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(token_id),
        expires_at: sea_orm::ActiveValue::Set(Some(at)),
        ..Default::default()
    };
    labfleet_entities::api_token::Entity::update(row)
        .exec(app.store.db())
        .await
        .unwrap();
}

/// A concrete path for a templated one: ids that do not exist, so no call changes anything.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            s if s.starts_with('{') && path.starts_with("/api/jobs") => Uuid::new_v4().to_string(),
            s if s.starts_with('{') => "999999".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn every_route_answers_each_role_as_the_table_says(backend: Backend) {
    let app = spawn_app(backend).await;
    let student = new_user(&app, "stu", "student").await;
    let teacher = new_user(&app, "tea", "teacher").await;
    let admin = new_user(&app, "adm", "admin").await;

    let (status, spec) = call_as(&app, None, Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut documented = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    for (method, path) in &documented {
        assert!(
            ROUTES.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} has no row in the authorization table of tests/it/access.rs"
        );
    }
    let mut failures = Vec::new();
    for (method, path, access) in ROUTES {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is in the table but not in the OpenAPI description"
        );
        let callers = [
            ("no token", None),
            ("student", Some(student.token.as_str())),
            ("teacher", Some(teacher.token.as_str())),
            ("admin", Some(admin.token.as_str())),
        ];
        for (i, (who, token)) in callers.into_iter().enumerate() {
            // 0 = allowed (anything but 401/403), else the exact refusal.
            let expected: u16 = match (access, i) {
                (Public, _) => 0,
                (_, 0) => 401,
                (AnyRole, _) => 0,
                (Teacher, 1) => 403,
                (Teacher, _) => 0,
                (Admin, 3) => 0,
                (Admin, _) => 403,
            };
            let url = concrete(path);
            let (status, body) = call_as(
                &app,
                token,
                Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
                None,
            )
            .await;
            let fine = match expected {
                0 => status != 401 && status != 403,
                code => status == code && body["ok"] == false,
            };
            if !fine {
                failures.push(format!(
                    "{method} {path} as {who}: got {status} {body}, expected {}",
                    if expected == 0 {
                        "allowed".to_string()
                    } else {
                        expected.to_string()
                    }
                ));
            }
        }
    }
    // The bootstrap token is an admin too.
    let (status, me) = app.call(Method::GET, "/api/me", None).await;
    assert_eq!(
        (status, &me["name"], &me["role"]),
        (200, &json!("admin"), &json!("admin"))
    );
    assert!(me["user_id"].is_null());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.finish().await;
}
both_backends!(
    every_route_answers_each_role_as_the_table_says_on,
    every_route_answers_each_role_as_the_table_says
);

async fn api_tokens_work_until_they_expire_or_are_revoked(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = new_user(&app, "ann", "teacher").await;
    assert!(
        ann.token.starts_with("lf_") && ann.token.len() == 46,
        "{}",
        ann.token
    );

    let (status, me) = call_as(&app, Some(&ann.token), Method::GET, "/api/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("ann"), Some("teacher"))
    );
    assert_eq!(me["user_id"].as_i64(), Some(ann.id));

    // Listed without the token or its digest.
    let (status, list) = app
        .call(Method::GET, &format!("/api/users/{}/tokens", ann.id), None)
        .await;
    assert_eq!(status, 200, "{list}");
    let text = list.to_string();
    let digest = hex::encode(Sha256::digest(ann.token.as_bytes()));
    assert!(
        !text.contains(&ann.token[3..]) && !text.contains(&digest),
        "{text}"
    );
    let listed = &list["tokens"][0];
    assert_eq!(listed["id"].as_i64(), Some(ann.token_id));
    assert_eq!(listed["prefix"].as_str(), Some(&ann.token[..8]));
    assert!(listed.get("token").is_none() && listed.get("token_hash").is_none());

    // An expiring token: expires_at is reported; once past, the token is refused.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/users/{}/tokens", ann.id),
            Some(json!({"label": "ci", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let expires: chrono::DateTime<chrono::Utc> =
        body["expires_at"].as_str().unwrap().parse().unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
    assert!((in_a_day - expires).num_seconds().abs() < 60, "{expires}");
    let short = body["token"].as_str().unwrap().to_string();
    let short_id = body["token_id"].as_i64().unwrap();
    assert_eq!(me_status(&app, &short).await, 200);

    // Expiry is checked on every use, not only when the cache asks the database: a token seen
    // (and cached) while valid is refused once its time is up, well within the cache's TTL.
    let (soon, soon_id) = issue(&app, ann.id, json!({"expires_in_days": 1})).await;
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    set_expiry(&app, soon_id, expires_at).await;
    assert_eq!(me_status(&app, &soon).await, 200);
    let left = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(100)).await;
    let (status, body) = call_as(&app, Some(&soon), Method::GET, "/api/me", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );

    // Revoked: refused at once by this process, though its verdict was cached.
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{}", ann.token_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"]["revoked_at"].is_string(), "{body}");
    assert_eq!(me_status(&app, &ann.token).await, 401);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{}", ann.token_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "revoking twice changes nothing");

    // A disabled user's tokens are refused, and no new one is issued to them.
    let bob = new_user(&app, "bob", "student").await;
    labfleet_access::AccessStore::new(app.store.db().clone())
        .disable_user(bob.id)
        .await
        .unwrap();
    assert_eq!(me_status(&app, &bob.token).await, 401);
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/users/{}/tokens", bob.id),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // Junk is refused without a fuss.
    for junk in [
        "nonsense",
        &format!("lf_{}", "A".repeat(43)),
        &format!("{}x", ann.token),
    ] {
        assert_eq!(me_status(&app, junk).await, 401);
    }

    // The last use is written lazily, off the request path.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let row = labfleet_entities::api_token::Entity::find_by_id(short_id)
            .one(app.store.db())
            .await
            .unwrap()
            .unwrap();
        if row.last_used_at.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.finish().await;
}
both_backends!(
    api_tokens_work_until_they_expire_or_are_revoked_on,
    api_tokens_work_until_they_expire_or_are_revoked
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_and_token_requests_get_a_4xx_naming_the_field() {
    let app = spawn_app(Backend::Embedded).await;
    let u = new_user(&app, "carol", "teacher").await;
    let (users, tokens) = ("/api/users", format!("/api/users/{}/tokens", u.id));
    let tokens = tokens.as_str();
    let none = Value::Null;
    // (method, path, body or null, status, field named): one line per case.
    #[rustfmt::skip]
    let cases = [
        ("POST", users, json!({"name": "carol", "role": "student"}), 409, None),
        ("POST", users, json!({"name": "dave", "role": "root"}), 422, Some("role")),
        ("POST", users, json!({"name": "bad name", "role": "student"}), 422, Some("name")),
        ("POST", users, json!({"name": "admin", "role": "student"}), 422, Some("name")),
        ("POST", users, json!({"name": "dave"}), 400, Some("role")),
        ("POST", users, json!({"name": "dave", "role": "student", "x": 1}), 400, Some("x")),
        ("POST", tokens, json!({"expires_in_days": 0}), 422, Some("expires_in_days")),
        ("POST", tokens, json!({"expires_in_days": -1}), 400, Some("expires_in_days")),
        ("POST", tokens, json!({"label": "x".repeat(101)}), 422, Some("label")),
        ("POST", "/api/users/999999/tokens", json!({}), 404, None),
        ("GET", "/api/users/abc/tokens", none.clone(), 400, Some("id")),
        ("GET", "/api/users/999999/tokens", none.clone(), 404, None),
        ("DELETE", "/api/tokens/0", none.clone(), 400, Some("id")),
        ("DELETE", "/api/tokens/999999", none.clone(), 404, None),
        ("GET", "/api/audit?since=yesterday", none.clone(), 422, Some("since")),
        ("GET", "/api/audit?limit=0", none.clone(), 422, Some("limit")),
        ("GET", "/api/audit?colour=red", none, 400, Some("colour")),
    ];
    for (method, path, body, status, field) in cases {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (!body.is_null()).then_some(body);
        let (got, resp) = app.call(method.clone(), path, body.clone()).await;
        assert_eq!(got, status, "{method} {path} {body:?}: {resp}");
        assert_eq!(resp["ok"], false);
        assert_eq!(resp["field"].as_str(), field, "{method} {path}: {resp}");
    }
    app.finish().await;
}

async fn api_tokens_are_stored_only_as_digests(backend: Backend) {
    let app = spawn_app(backend).await;
    let u = new_user(&app, "dora", "student").await;
    let row = labfleet_entities::api_token::Entity::find_by_id(u.token_id)
        .one(app.store.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.token_hash,
        hex::encode(Sha256::digest(u.token.as_bytes()))
    );
    let secret_part = &u.token[8..];
    assert!(!format!("{row:?}").contains(secret_part), "{row:?}");
    if backend == Backend::Embedded {
        // Nothing in the database file (or its write-ahead log) holds the token.
        app.store
            .db()
            .execute_unprepared("PRAGMA wal_checkpoint(FULL)")
            .await
            .unwrap();
        for suffix in ["", "-wal"] {
            let path = app.settings.data_dir.join(format!("labfleet.db{suffix}"));
            let bytes = std::fs::read(&path).unwrap_or_default();
            let found = bytes
                .windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes());
            assert!(!found, "the token is in {}", path.display());
        }
    }
    app.finish().await;
}
both_backends!(
    api_tokens_are_stored_only_as_digests_on,
    api_tokens_are_stored_only_as_digests
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_never_appear_in_logs() {
    capture_logs();
    let app = spawn_app(Backend::Embedded).await;
    let eve = new_user(&app, "eve", "teacher").await;
    let (revoked, revoked_id) = issue(&app, eve.id, json!({"label": "old"})).await;
    app.call(Method::DELETE, &format!("/api/tokens/{revoked_id}"), None)
        .await;
    for token in [&eve.token, &revoked] {
        for path in ["/api/me", "/api/jobs", "/api/users", "/api/nowhere"] {
            call_as(&app, Some(token), Method::GET, path, None).await;
        }
    }
    let logs = captured_logs();
    assert!(
        logs.contains("/api/me"),
        "no request was logged, so this test proves nothing"
    );
    for token in [&eve.token, &revoked] {
        assert!(!logs.contains(&token[3..]), "a token was logged");
    }
    app.finish().await;
}

async fn cluster_changes_are_audited_with_actor_and_source(backend: Backend) {
    let app = spawn_app(backend).await;
    let ops = new_user(&app, "ops", "admin").await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/cluster-config",
            Some(
                json!({"cluster_id": "c1", "name": "One", "host": "127.0.0.1", "port": 8006,
                        "user": "root@pam", "password": "audit-pw-4711"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let db_id = created["cluster"]["db_id"].as_i64().unwrap();
    let (status, body) = call_as(
        &app,
        Some(&ops.token),
        Method::PUT,
        &format!("/api/cluster-config/{db_id}"),
        Some(json!({"name": "Renamed", "password": "new-pw-0815"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, log) = app
        .call(Method::GET, "/api/audit?action=cluster.update", None)
        .await;
    assert_eq!(status, 200, "{log}");
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{log}");
    let e = &events[0];
    assert_eq!(e["actor"], "ops");
    assert_eq!(e["actor_role"], "admin");
    assert_eq!(e["target"], format!("cluster:{db_id}"));
    assert_eq!(e["outcome"], "succeeded");
    let source: SocketAddr = e["source"].as_str().unwrap().parse().unwrap();
    assert!(
        source.ip().is_loopback() && source.port() != app.addr.port(),
        "{source}"
    );
    let fields: Vec<&str> = e["detail"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"name") && fields.contains(&"password"),
        "{e}"
    );

    // Newest first, filtered by actor, nothing secret anywhere.
    let (_, all) = app.call(Method::GET, "/api/audit", None).await;
    let actions = strings(&all["events"], "action");
    assert_eq!(
        actions,
        [
            "cluster.update",
            "cluster.create",
            "token.issue",
            "user.create"
        ],
        "{all}"
    );
    let ids: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let text = all.to_string();
    for secret in ["audit-pw-4711", "new-pw-0815", &ops.token[3..]] {
        assert!(
            !text.contains(secret),
            "a secret is in the audit log: {text}"
        );
    }
    let (_, mine) = app.call(Method::GET, "/api/audit?actor=admin", None).await;
    assert_eq!(mine["events"].as_array().unwrap().len(), 3, "{mine}");
    let (_, paged) = app
        .call(Method::GET, "/api/audit?limit=1&offset=1", None)
        .await;
    assert_eq!(paged["events"][0]["action"], "cluster.create", "{paged}");
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, none) = app
        .call(Method::GET, &format!("/api/audit?since={later}"), None)
        .await;
    assert_eq!(none["events"], json!([]), "{none}");
    app.finish().await;
}
both_backends!(
    cluster_changes_are_audited_with_actor_and_source_on,
    cluster_changes_are_audited_with_actor_and_source
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_audit_write_does_not_fail_the_action() {
    capture_logs();
    let app = spawn_app(Backend::Embedded).await;
    app.store
        .db()
        .execute_unprepared("DROP TABLE audit_events")
        .await
        .unwrap();
    let (status, body) = app
        .call(
            Method::POST,
            "/api/users",
            Some(json!({"name": "frank", "role": "student"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(captured_logs().contains("could not write the audit log"));
    app.finish().await;
}

/// A job owned by `owner`, created straight in the store (only admins may create jobs over the
/// API today; classes will create teachers' jobs).
async fn job_of(app: &TestApp, owner: &str, duration_ms: u64) -> Uuid {
    let args = serde_json::from_value(json!({ "duration_ms": duration_ms })).unwrap();
    let job = labfleet_jobs::store::NewJob {
        spec: labfleet_jobs::JobSpec::Noop(args),
        parent_id: None,
        created_by: owner.into(),
        max_attempts: 1,
        class_id: None,
    };
    app.store.create(&[job]).await.unwrap()[0]
}

async fn non_admins_see_and_control_only_their_own_jobs(backend: Backend) {
    let app = spawn_app(backend).await;
    let tina = new_user(&app, "tina", "teacher").await;
    let theo = new_user(&app, "theo", "teacher").await;
    let sam = new_user(&app, "sam", "student").await;
    let admins = app.submit_noop(json!({"duration_ms": 0})).await;
    let tinas = job_of(&app, "tina", 30_000).await;
    let sams = job_of(&app, "sam", 0).await;

    let listed = |body: &Value| strings(&body["jobs"], "id");
    let (status, mine) = call_as(&app, Some(&tina.token), Method::GET, "/api/jobs", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(listed(&mine), [tinas.to_string()], "{mine}");
    let (_, all) = app.call(Method::GET, "/api/jobs", None).await;
    for id in [admins, tinas, sams] {
        assert!(
            listed(&all).contains(&id.to_string()),
            "admins see every job: {all}"
        );
    }
    let (_, sams_list) = call_as(&app, Some(&sam.token), Method::GET, "/api/jobs", None).await;
    assert_eq!(listed(&sams_list), [sams.to_string()]);

    let get = |token: &str, id: Uuid| {
        let token = token.to_string();
        let app = &app;
        async move {
            call_as(
                app,
                Some(&token),
                Method::GET,
                &format!("/api/jobs/{id}"),
                None,
            )
            .await
            .0
        }
    };
    assert_eq!(get(&tina.token, tinas).await, 200);
    assert_eq!(
        get(&tina.token, admins).await,
        404,
        "another's job is not found, not forbidden"
    );
    assert_eq!(get(&theo.token, tinas).await, 404);
    assert_eq!(get(&sam.token, sams).await, 200);
    assert_eq!(get(&sam.token, tinas).await, 404);

    let post = |token: &str, path: String| {
        let token = token.to_string();
        let app = &app;
        async move { call_as(app, Some(&token), Method::POST, &path, None).await }
    };
    assert_eq!(
        post(&theo.token, format!("/api/jobs/{tinas}/cancel"))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&tina.token, format!("/api/jobs/{admins}/retry"))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&sam.token, format!("/api/jobs/{sams}/cancel")).await.0,
        403
    );
    let (status, body) = post(&tina.token, format!("/api/jobs/{tinas}/cancel")).await;
    assert_eq!(status, 200, "{body}");
    app.wait_status(tinas, "cancelled", std::time::Duration::from_secs(20))
        .await;
    let (status, body) = post(&tina.token, format!("/api/jobs/{tinas}/retry")).await;
    assert_eq!(status, 202, "{body}");
    let (_, body) = post(&tina.token, format!("/api/jobs/{tinas}/cancel")).await;
    assert_eq!(body["ok"], true, "{body}");

    let (_, log) = app.call(Method::GET, "/api/audit?actor=tina", None).await;
    let actions = strings(&log["events"], "action");
    assert_eq!(actions, ["job.cancel", "job.retry", "job.cancel"], "{log}");
    assert_eq!(log["events"][0]["target"], format!("job:{tinas}"));
    app.wait_status(tinas, "cancelled", std::time::Duration::from_secs(20))
        .await;
    for id in [admins, sams] {
        app.wait_status(id, "succeeded", std::time::Duration::from_secs(20))
            .await;
    }
    app.finish().await;
}
both_backends!(
    non_admins_see_and_control_only_their_own_jobs_on,
    non_admins_see_and_control_only_their_own_jobs
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_users_and_tokens_that_the_api_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labfleet"))
            .args(args)
            .env("LABFLEET_DATA_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["user", "create", "--name", "gina", "--role", "teacher"]);
    assert!(ok && out.is_empty(), "{out} {err}");
    assert!(err.contains("created user gina"), "{err}");
    let (ok, _, err) = run(&["user", "create", "--name", "gina", "--role", "student"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(&["user", "create", "--name", "hal", "--role", "root"]);
    assert!(!ok && err.contains("unknown role"), "{err}");

    let (ok, gina_token, err) = run(&["token", "create", "--user", "gina", "--label", "laptop"]);
    assert!(ok, "{err}");
    let gina_token = gina_token.trim().to_string();
    assert!(
        gina_token.starts_with("lf_") && gina_token.len() == 46,
        "stdout holds only the token: {gina_token}"
    );
    let (ok, ci_token, err) = run(&[
        "token",
        "create",
        "--user",
        "ci",
        "--role",
        "admin",
        "--expires-in-days",
        "30",
    ]);
    assert!(ok && err.contains("created user ci"), "{err}");
    let ci_token = ci_token.trim().to_string();
    let (ok, _, err) = run(&["token", "create", "--user", "nobody"]);
    assert!(!ok && err.contains("--role"), "{err}");
    let (ok, _, err) = run(&["token", "create", "--user", "gina", "--role", "student"]);
    assert!(!ok && err.contains("teacher"), "{err}");
    let (ok, list, _) = run(&["user", "list"]);
    assert!(
        ok && list.contains("gina") && list.contains("teacher") && list.contains("ci"),
        "{list}"
    );

    // A server on the same data directory accepts the tokens.
    let path = dir.path().to_path_buf();
    let app = spawn_app_with(Backend::Embedded, |s| s.data_dir = path).await;
    let (status, me) = call_as(&app, Some(&gina_token), Method::GET, "/api/me", None).await;
    assert_eq!(
        (status, me["name"].as_str(), me["role"].as_str()),
        (200, Some("gina"), Some("teacher")),
        "{me}"
    );
    let (status, users) = call_as(&app, Some(&ci_token), Method::GET, "/api/users", None).await;
    assert_eq!(status, 200, "{users}");
    let gina_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "gina")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // Revoked from the command line: refused by a server that had not cached it.
    let (ok, spare, _) = run(&["token", "create", "--user", "gina"]);
    assert!(ok);
    let (_, tokens) = call_as(
        &app,
        Some(&ci_token),
        Method::GET,
        &format!("/api/users/{gina_id}/tokens"),
        None,
    )
    .await;
    let spare_id = tokens["tokens"][0]["id"].as_i64().unwrap();
    let (ok, _, err) = run(&["token", "revoke", "--id", &spare_id.to_string()]);
    assert!(ok && err.contains("revoked"), "{err}");
    assert_eq!(me_status(&app, spare.trim()).await, 401);
    let (ok, _, err) = run(&["token", "revoke", "--id", "999999"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // A disabled user's unseen token is refused; no new token is issued to them.
    let (ok, hal_token, _) = run(&["token", "create", "--user", "hal", "--role", "student"]);
    assert!(ok);
    let (ok, _, err) = run(&["user", "disable", "--name", "hal"]);
    assert!(ok && err.contains("disabled"), "{err}");
    assert_eq!(me_status(&app, hal_token.trim()).await, 401);
    let (ok, _, err) = run(&["token", "create", "--user", "hal"]);
    assert!(!ok && err.contains("disabled"), "{err}");

    let (_, log) = app.call(Method::GET, "/api/audit?actor=cli", None).await;
    let actions = strings(&log["events"], "action");
    assert_eq!(
        actions,
        [
            "user.disable",
            "token.issue",
            "user.create",
            "token.revoke",
            "token.issue",
            "token.issue",
            "user.create",
            "token.issue",
            "user.create"
        ],
        "{log}"
    );
    assert!(!log.to_string().contains(&gina_token[3..]));
    app.finish().await;
}

/// Teachers deploy by template id, so they read the templates and ISOs of the active clusters
/// that allow deployment, and nothing of the others; students read neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teachers_read_the_inventory_of_clusters_that_allow_deployment() {
    use crate::inventory::CLUSTER;
    let lab = crate::deploy::Lab::start(Backend::Embedded, |_| {}).await;
    let app = &lab.app;
    let teacher = new_user(app, "tina", "teacher").await;
    let student = new_user(app, "sam", "student").await;
    let read = |token: String, path: &'static str| async move {
        call_as(app, Some(&token), Method::GET, path, None).await
    };
    let (code, body) = read(teacher.token.clone(), "/api/templates").await;
    assert_eq!(code, 200, "{body}");
    let vmids: Vec<i64> = body["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["vmid"].as_i64().unwrap())
        .collect();
    assert!(vmids.contains(&104), "{body}");
    let (code, body) = read(teacher.token.clone(), "/api/isos").await;
    assert_eq!(code, 200, "{body}");
    assert!(!body["isos"].as_array().unwrap().is_empty(), "{body}");
    for path in ["/api/templates", "/api/isos"] {
        assert_eq!(read(student.token.clone(), path).await.0, 403, "{path}");
    }

    let (code, body) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{}", lab.cluster_db_id),
            Some(json!({"allow_vm_deployment": false})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = read(teacher.token.clone(), "/api/templates").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["templates"], json!([]), "{body}");
    let (code, body) = read(teacher.token.clone(), "/api/isos").await;
    assert_eq!((code, &body["isos"]), (200, &json!([])), "{body}");
    let path = format!("/api/templates?cluster={CLUSTER}");
    let (code, body) = call_as(app, Some(&teacher.token), Method::GET, &path, None).await;
    assert_eq!(code, 404, "{body}");
    // Admins still read it.
    let (code, body) = app.call(Method::GET, &path, None).await;
    assert_eq!(code, 200, "{body}");
    assert!(!body["templates"].as_array().unwrap().is_empty(), "{body}");
    lab.app.finish().await;
}
