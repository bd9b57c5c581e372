//! The cluster registry: CRUD with the older lab tool's shapes, exactly one default, the last
//! cluster kept, connection tests against the simulator (token, password, wrong secret, TLS), and
//! secrets that never leave: not in responses, not in logs, not in clear text in the database.

use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::harness::{
    capture_logs, captured_logs, sim_port, spawn_app, spawn_sim, Backend, TestApp,
};

fn cluster_body(cluster_id: &str, port: u16, extra: Value) -> Value {
    let mut body = json!({
        "cluster_id": cluster_id,
        "name": format!("Cluster {cluster_id}"),
        "host": "127.0.0.1",
        "port": port,
        "user": "root@pam",
        "is_active": true,
        "allow_vm_deployment": true,
        "priority": 50,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, resp) = app
        .call(Method::POST, "/api/cluster-config", Some(body))
        .await;
    assert_eq!(status, 201, "{resp}");
    resp["cluster"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_round_trip_with_exactly_one_default() {
    let app = spawn_app(Backend::Real).await;
    let first = create(
        &app,
        cluster_body(
            "cluster1",
            8006,
            json!({"password": "pw-one-4711", "default_storage": "local-lvm"}),
        ),
    )
    .await;
    assert_eq!(first["id"], "cluster1");
    assert!(first["db_id"].as_i64().unwrap() > 0);
    assert_eq!(
        first["is_default"], true,
        "the first cluster becomes the default"
    );
    assert_eq!(first["has_password"], true);
    assert_eq!(first["default_storage"], "local-lvm");
    assert!(first.get("password").is_none());

    let (status, dup) = app
        .call(
            Method::POST,
            "/api/cluster-config",
            Some(cluster_body("cluster1", 8006, json!({"password": "x"}))),
        )
        .await;
    assert_eq!(status, 409, "{dup}");

    let second = create(
        &app,
        cluster_body(
            "cluster2",
            8006,
            json!({"password": "pw-two", "is_default": true, "priority": 80}),
        ),
    )
    .await;
    assert_eq!(second["is_default"], true);
    let (_, list) = app.call(Method::GET, "/api/cluster-config", None).await;
    assert_eq!(list["ok"], true);
    let clusters = list["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(
        clusters.iter().filter(|c| c["is_default"] == true).count(),
        1,
        "{list}"
    );
    assert_eq!(clusters[0]["id"], "cluster2", "the default is listed first");

    // PUT without a password keeps it; fields not sent keep their values.
    let db1 = first["db_id"].as_i64().unwrap();
    let (status, updated) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{db1}"),
            Some(json!({"name": "Renamed", "password": ""})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["cluster"]["name"], "Renamed");
    assert_eq!(updated["cluster"]["has_password"], true);
    assert_eq!(updated["cluster"]["default_storage"], "local-lvm");
    let (status, resp) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{db1}"),
            Some(json!({"cluster_id": "other"})),
        )
        .await;
    assert_eq!((status, resp["field"].as_str()), (422, Some("cluster_id")));

    // The default cannot simply be switched off; deleting it hands the flag on.
    let db2 = second["db_id"].as_i64().unwrap();
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{db2}"),
            Some(json!({"is_default": false})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/cluster-config/{db2}"), None)
        .await;
    assert_eq!(status, 200);
    let (_, list) = app.call(Method::GET, "/api/cluster-config", None).await;
    assert_eq!(list["clusters"][0]["id"], "cluster1");
    assert_eq!(list["clusters"][0]["is_default"], true);
    // The last cluster stays.
    let (status, resp) = app
        .call(Method::DELETE, &format!("/api/cluster-config/{db1}"), None)
        .await;
    assert_eq!(status, 409, "{resp}");
    let (status, _) = app
        .call(Method::DELETE, "/api/cluster-config/999999", None)
        .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_input_gets_a_4xx_naming_the_field() {
    let app = spawn_app(Backend::Embedded).await;
    let cases = [
        (
            cluster_body("Bad Id", 8006, json!({"password": "x"})),
            422,
            "cluster_id",
        ),
        (
            cluster_body(
                "c1",
                8006,
                json!({"password": "x", "host": "https://pve:8006/"}),
            ),
            422,
            "host",
        ),
        (
            cluster_body("c1", 8006, json!({"password": "x", "port": 0})),
            422,
            "port",
        ),
        (
            cluster_body("c1", 8006, json!({"password": "x", "port": "8006"})),
            400,
            "port",
        ),
        (
            cluster_body("c1", 8006, json!({"password": "x", "priority": 101})),
            422,
            "priority",
        ),
        (
            cluster_body("c1", 8006, json!({"password": "x", "idle_cpu_percent": 0})),
            422,
            "idle_cpu_percent",
        ),
        (
            cluster_body("c1", 8006, json!({"password": "x", "idle_minutes": 10081})),
            422,
            "idle_minutes",
        ),
        (
            cluster_body(
                "c1",
                8006,
                json!({"token_id": "root@pam", "token_secret": "s"}),
            ),
            422,
            "token_id",
        ),
        (
            cluster_body("c1", 8006, json!({"token_id": "root@pam!lf"})),
            400,
            "token_secret",
        ),
        (cluster_body("c1", 8006, json!({})), 400, "password"),
        (
            cluster_body("c1", 8006, json!({"password": "x", "colour": "red"})),
            400,
            "colour",
        ),
        (
            json!({"name": "x", "host": "h", "password": "p"}),
            400,
            "cluster_id",
        ),
    ];
    for (body, status, field) in cases {
        let (got, resp) = app
            .call(Method::POST, "/api/cluster-config", Some(body.clone()))
            .await;
        assert_eq!(
            (got, resp["field"].as_str()),
            (status, Some(field)),
            "{body} → {resp}"
        );
        assert_eq!(resp["ok"], false);
    }
    let (status, resp) = app
        .call(Method::PUT, "/api/cluster-config/abc", Some(json!({})))
        .await;
    assert_eq!((status, resp["field"].as_str()), (400, Some("db_id")));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_works_with_a_token_and_with_a_password() {
    let app = spawn_app(Backend::Embedded).await;
    let (sim, _dir) = spawn_sim().await;
    let port = sim_port(&sim);
    let token = create(
        &app,
        cluster_body(
            "tok",
            port,
            json!({
                "token_id": sim.token_id, "token_secret": sim.token_secret, "verify_ssl": false,
            }),
        ),
    )
    .await;
    let password = create(
        &app,
        cluster_body("pw", port, json!({"password": sim.root_password})),
    )
    .await;
    for c in [&token, &password] {
        let (status, resp) = app
            .call(
                Method::POST,
                &format!("/api/cluster-config/{}/test", c["db_id"]),
                None,
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["ok"], true);
        assert_eq!(resp["message"], "Connection successful");
        assert_eq!(resp["nodes"], 3);
        assert_eq!(resp["node_names"], json!(["pve1", "pve2", "pve3"]));
        assert!(
            resp["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{resp}"
        );
    }
    sim.shutdown().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_failures_are_502_with_a_clear_reason() {
    let app = spawn_app(Backend::Embedded).await;
    let (sim, _dir) = spawn_sim().await;
    let port = sim_port(&sim);
    let wrong = "not-the-password-3141";
    let bad_password = create(
        &app,
        cluster_body("badpw", port, json!({"password": wrong})),
    )
    .await;
    let strict_tls = create(
        &app,
        cluster_body(
            "strict",
            port,
            json!({"password": sim.root_password, "verify_ssl": true}),
        ),
    )
    .await;
    let pinned = create(
        &app,
        cluster_body(
            "pinned",
            port,
            json!({
                "password": sim.root_password, "verify_ssl": true,
                "tls_fingerprint": sim.cert_sha256_fingerprint.clone().unwrap(),
            }),
        ),
    )
    .await;
    let closed = create(&app, cluster_body("closed", 1, json!({"password": "x"}))).await;

    let test = |c: &Value| format!("/api/cluster-config/{}/test", c["db_id"]);
    let (status, resp) = app.call(Method::POST, &test(&bad_password), None).await;
    assert_eq!(
        (status, resp["code"].as_str()),
        (502, Some("cluster_auth_failed")),
        "{resp}"
    );
    assert!(
        !resp.to_string().contains(wrong),
        "the secret must not be echoed: {resp}"
    );
    let (status, resp) = app.call(Method::POST, &test(&strict_tls), None).await;
    assert_eq!(
        (status, resp["code"].as_str()),
        (502, Some("cluster_tls_error")),
        "{resp}"
    );
    assert!(
        resp["error"].as_str().unwrap().contains("verify_ssl"),
        "{resp}"
    );
    let (status, resp) = app.call(Method::POST, &test(&pinned), None).await;
    assert_eq!(
        status, 200,
        "a pinned self-signed certificate is trusted: {resp}"
    );
    let (status, resp) = app.call(Method::POST, &test(&closed), None).await;
    assert_eq!(
        (status, resp["code"].as_str()),
        (502, Some("cluster_unreachable")),
        "{resp}"
    );
    sim.shutdown().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_secrets_never_leave_in_clear_text() {
    capture_logs();
    let app = spawn_app(Backend::Real).await;
    let (sim, _dir) = spawn_sim().await;
    let port = sim_port(&sim);
    let secrets = [
        format!("pw-{}", crate::harness::hex_id()),
        format!("tok-{}", crate::harness::hex_id()),
        format!("sshpw-{}", crate::harness::hex_id()),
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----{}",
            crate::harness::hex_id()
        ),
    ];
    let mut bodies = Vec::new();
    let c = create(
        &app,
        cluster_body(
            "leak",
            port,
            json!({
                "password": secrets[0], "token_id": "root@pam!other", "token_secret": secrets[1],
                "ssh_password": secrets[2], "ssh_private_key": secrets[3],
            }),
        ),
    )
    .await;
    bodies.push(c.to_string());
    let db_id = c["db_id"].as_i64().unwrap();
    for (method, path, body) in [
        (Method::GET, "/api/cluster-config".to_string(), None),
        (
            Method::PUT,
            format!("/api/cluster-config/{db_id}"),
            Some(json!({"password": secrets[0], "priority": 60})),
        ),
        (
            Method::POST,
            format!("/api/cluster-config/{db_id}/test"),
            None,
        ),
        (
            Method::POST,
            "/api/cluster-config".to_string(),
            Some(cluster_body("leak", port, json!({"password": secrets[0]}))),
        ),
        (
            Method::POST,
            "/api/cluster-config".to_string(),
            Some(cluster_body(
                "leak2",
                port,
                json!({"password": secrets[0], "port": 99999}),
            )),
        ),
        (Method::GET, "/api/openapi.json".to_string(), None),
    ] {
        let (_, resp) = app.call(method, &path, body).await;
        bodies.push(resp.to_string());
    }
    let logs = captured_logs();
    assert!(
        logs.contains("cluster registered"),
        "the log capture must see this test's lines"
    );
    let row = app
        .store
        .db()
        .query_one(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT row_to_json(c)::text AS row FROM clusters c WHERE cluster_id = 'leak'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "row")
        .unwrap();
    for secret in &secrets {
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a response carries a secret: {body}"
            );
        }
        assert!(
            !logs.contains(secret.as_str()),
            "a log line carries a secret"
        );
        assert!(
            !row.contains(secret.as_str()),
            "the database row holds a secret in clear text"
        );
    }
    assert!(row.contains("v1:"), "secrets are stored sealed: {row}");
    // The sealed secrets still open: the connection test used the stored token.
    let secrets_back = app
        .clusters
        .secrets_of(&app.clusters.get(db_id).await.unwrap())
        .unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        secrets_back.ssh_private_key.unwrap().expose_secret(),
        secrets[3]
    );
    sim.shutdown().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_clusters_json_is_imported_once() {
    use secrecy::ExposeSecret;
    let app = spawn_app(Backend::Real).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        json!([
            {"id": "cluster1", "name": "Main", "host": "10.220.15.249", "port": 8006, "user": "root@pam",
             "password": "legacy-secret", "verify_ssl": false, "is_default": true, "is_active": true},
            {"id": "cluster2", "name": "Second", "host": "10.220.12.6", "password": "other"},
            {"id": "Bad Id", "host": "x", "password": "p"},
            {"name": "no id"},
        ])
        .to_string(),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labfleet"))
            .arg("import-clusters")
            .arg(file.path())
            .env("DATABASE_URL", &app.database_url)
            .env(
                "LABFLEET_SECRET_KEY",
                app.settings.secret_key.as_ref().unwrap().expose_secret(),
            )
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = run();
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("2 imported, 0 unchanged, 2 skipped"), "{out}");
    assert!(out.contains("skipped entry 2: cluster_id"), "{out}");
    assert!(out.contains("skipped entry 3:"), "{out}");
    assert!(!out.contains("legacy-secret"));
    let second = run();
    let out = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(out.contains("0 imported, 2 unchanged, 2 skipped"), "{out}");

    let (_, list) = app.call(Method::GET, "/api/cluster-config", None).await;
    let clusters = list["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(clusters[0]["id"], "cluster1");
    assert_eq!(clusters[0]["is_default"], true);
    assert_eq!(clusters[0]["verify_ssl"], false);
    assert_eq!(clusters[1]["port"], 8006);
    app.finish().await;
}
