//! Every path, method and parameter the simulator accepts exists in the real schema.

use serde_json::Value;

use crate::common::*;

fn fixture() -> Value {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pve-api-subset.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn every_handled_endpoint_exists_in_the_schema() {
    let f = fixture();
    for (method, path) in labfleet_sim::handled_endpoints() {
        assert!(
            f[*path][*method].is_object(),
            "{method} {path} is not in the schema"
        );
    }
    // the simulator validates against exactly this file
    assert_eq!(
        serde_json::from_str::<Value>(labfleet_sim::schema_fixture()).unwrap(),
        f
    );
}

#[test]
fn the_fixture_matches_the_full_schema_when_it_is_beside_the_checkout() {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/pve-api/pve-api-schema.json");
    let Ok(text) = std::fs::read_to_string(&full) else {
        eprintln!("skipping: {} not found", full.display());
        return;
    };
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut by_path = std::collections::HashMap::new();
    let mut stack: Vec<&Value> = schema.as_array().unwrap().iter().collect();
    while let Some(n) = stack.pop() {
        by_path.insert(n["path"].as_str().unwrap().to_string(), n);
        if let Some(c) = n["children"].as_array() {
            stack.extend(c.iter());
        }
    }
    for (method, path) in labfleet_sim::handled_endpoints() {
        let node = by_path
            .get(*path)
            .unwrap_or_else(|| panic!("{path} not in schema"));
        let real = &node["info"][*method]["parameters"]["properties"];
        let ours = &fixture()[*path][*method]["parameters"]["properties"];
        for (name, p) in ours.as_object().into_iter().flatten() {
            assert_eq!(real[name]["type"], p["type"], "{method} {path} {name}");
        }
    }
}

/// Black-box: every handled endpoint runs the schema validation (an unknown parameter is named
/// in a 400), so it accepts no parameter the schema lacks.
#[tokio::test]
async fn every_handled_endpoint_rejects_parameters_outside_the_schema() {
    let s = spawn_sim().await;
    for (method, path) in labfleet_sim::handled_endpoints() {
        if *path == "/access/ticket" {
            continue;
        }
        let concrete = path
            .replace("{node}", "pve1")
            .replace("{vmid}", "104")
            .replace("{snapname}", "snap1")
            .replace("{storage}", "local")
            .replace(
                "{upid}",
                "UPID:pve1:00001234:01234567:66DC5987:qmclone:104:root@pam:",
            );
        let r = s.api(method, &concrete, &[("not_a_pve_param", "1")]).await;
        assert_eq!(r.status, 400, "{method} {path}: {r:?}");
        assert!(
            r.body["errors"]["not_a_pve_param"].is_string(),
            "{method} {path}: {r:?}"
        );
    }
    s.h.shutdown().await;
}
