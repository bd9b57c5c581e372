//! The jobs API's contract: authentication, envelopes, field-naming errors, idempotency keys.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{spawn_app, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_with_401() {
    let app = spawn_app(Backend::Embedded).await;
    for (method, path) in [
        (Method::GET, "/api/jobs"),
        (Method::POST, "/api/jobs"),
        (
            Method::GET,
            "/api/jobs/00000000-0000-0000-0000-000000000000",
        ),
        (
            Method::POST,
            "/api/jobs/00000000-0000-0000-0000-000000000000/cancel",
        ),
        (
            Method::POST,
            "/api/jobs/00000000-0000-0000-0000-000000000000/retry",
        ),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("Basic dGVzdDp0ZXN0")] {
            let mut req = app.http.request(method.clone(), app.url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["ok"], false);
            assert_eq!(body["code"], "unauthorized");
        }
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_field() {
    let app = spawn_app(Backend::Embedded).await;
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (
            json!({"kind": "noop", "args": {"duration_ms": "soon"}}),
            400,
            Some("args.duration_ms"),
        ),
        (
            json!({"kind": "noop", "args": {"bogus": 1}}),
            400,
            Some("args.bogus"),
        ),
        (json!({"kind": "noop", "extra": true}), 400, Some("extra")),
        (json!({"args": {}}), 400, Some("kind")),
        (json!({"kind": 7}), 400, Some("kind")),
        (json!({"kind": "deploy_class"}), 422, Some("kind")),
        (
            json!({"kind": "noop", "args": {"duration_ms": 3_600_000}}),
            422,
            Some("args.duration_ms"),
        ),
        (
            json!({"kind": "noop", "args": {"children": -1}}),
            400,
            Some("args.children"),
        ),
        (
            json!({"kind": "noop", "max_attempts": 0}),
            422,
            Some("max_attempts"),
        ),
        (
            json!({"kind": "noop", "args": {"family": "nope"}}),
            400,
            Some("args.family"),
        ),
        (json!([1, 2]), 400, None),
    ];
    for (body, status, field) in cases {
        let (got, resp) = app
            .call(Method::POST, "/api/jobs", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} → {resp}");
        assert_eq!(resp["ok"], false, "{resp}");
        assert!(
            resp["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{resp}"
        );
        if let Some(field) = field {
            assert_eq!(resp["field"], field, "{body} → {resp}");
        }
    }
    // Malformed JSON and an empty body.
    for raw in ["{\"kind\": ", "", "not json"] {
        let resp = app
            .http
            .post(app.url("/api/jobs"))
            .bearer_auth(crate::harness::TOKEN)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{raw:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_request");
    }
    // Bad ids, filters and paging.
    for (path, status, field) in [
        ("/api/jobs/not-a-uuid", 400, "id"),
        ("/api/jobs?status=done", 422, "status"),
        ("/api/jobs?limit=0", 422, "limit"),
        ("/api/jobs?limit=abc", 400, "limit"),
        ("/api/jobs?offset=9223372036854775808", 422, "offset"),
        (
            "/api/jobs/00000000-0000-0000-0000-000000000000?children_offset=99999999999",
            422,
            "children_offset",
        ),
        ("/api/jobs?parent=xyz", 400, "parent"),
        ("/api/jobs?unknown=1", 400, "unknown"),
    ] {
        let (got, resp) = app.call(Method::GET, path, None).await;
        assert_eq!(got, status, "{path} → {resp}");
        assert_eq!(resp["field"], field, "{path} → {resp}");
    }
    let (got, resp) = app
        .call(
            Method::GET,
            "/api/jobs/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!((got, resp["code"].as_str()), (404, Some("not_found")));
    let (got, resp) = app.call(Method::GET, "/api/nothing-here", None).await;
    assert_eq!((got, resp["ok"].as_bool()), (404, Some(false)));
    let (got, resp) = app.call(Method::DELETE, "/api/jobs", None).await;
    assert_eq!((got, resp["ok"].as_bool()), (405, Some(false)));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_job() {
    let app = spawn_app(Backend::Real).await;
    let send = |body: Value, key: &'static str| {
        let req = app
            .http
            .post(app.url("/api/jobs"))
            .bearer_auth(crate::harness::TOKEN)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (status, location, resp.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"kind": "noop", "args": {"duration_ms": 1}});
    let (s1, loc1, b1) = send(body.clone(), "key-1").await;
    let (s2, loc2, b2) = send(body.clone(), "key-1").await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1["job_id"], b2["job_id"]);
    assert_eq!(loc1, loc2);
    assert_eq!(
        loc1.unwrap(),
        format!("/api/jobs/{}", b1["job_id"].as_str().unwrap())
    );
    let (s3, _, b3) = send(json!({"kind": "noop", "args": {"duration_ms": 2}}), "key-1").await;
    assert_eq!(s3, 409, "{b3}");
    let (s4, _, b4) = send(body, "key-2").await;
    assert_eq!(s4, 202);
    assert_ne!(b4["job_id"], b1["job_id"]);
    let (_, list) = app.call(Method::GET, "/api/jobs", None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "one job per key");
    for b in [&b1, &b4] {
        app.wait_status(
            b["job_id"].as_str().unwrap().parse().unwrap(),
            "succeeded",
            std::time::Duration::from_secs(20),
        )
        .await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_health_and_metrics_are_served() {
    let app = spawn_app(Backend::Real).await;
    let spec: Value = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/retry",
        "/readyz",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI description"
        );
    }
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let id = app.submit_noop(json!({})).await;
    app.wait_status(id, "succeeded", std::time::Duration::from_secs(20))
        .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("labfleet_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("labfleet_jobs_total"), "{metrics}");
    app.finish().await;
}
