//! Every request the client can send, checked against the vendored PVE schema
//! (`fixtures/pve-api-subset.json`, the same file the simulator's tests use): the endpoint
//! registry statically, and the requests the client really sends, recorded by a fake server.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use labfleet_proxmox::endpoints::{self, ParamType};
use labfleet_proxmox::*;
use secrecy::SecretString;
use serde_json::Value;
use support::{FakePve, Recorded};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/pve-api-subset.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn path_params(template: &str) -> BTreeSet<String> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
    std::sync::LazyLock::new(serde_json::Map::new);

/// The parameters of `method path`, `None` if the schema has no such call.
fn props_of<'a>(
    fx: &'a Value,
    path: &str,
    method: &str,
) -> Option<&'a serde_json::Map<String, Value>> {
    let call = fx.get(path)?.get(method)?;
    Some(
        call.get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object)
            .unwrap_or(&EMPTY),
    )
}

fn properties<'a>(fx: &'a Value, path: &str, method: &str) -> &'a serde_json::Map<String, Value> {
    props_of(fx, path, method).unwrap_or_else(|| panic!("{method} {path} is not in the schema"))
}

/// The schema property for a concrete name (`net0` → `net[n]`).
fn schema_prop<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    props.get(name).or_else(|| {
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        (base.len() < name.len())
            .then(|| props.get(&format!("{base}[n]")))
            .flatten()
    })
}

fn is_optional(prop: &Value) -> bool {
    matches!(prop.get("optional"), Some(v) if v == 1 || v == true)
}

fn as_f64(v: Option<&Value>) -> Option<f64> {
    v.and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

/// Problems with one concrete value against its schema property.
fn value_problem(name: &str, value: &str, prop: &Value) -> Option<String> {
    let ty = prop["type"].as_str().unwrap_or("string");
    let bad = |why: &str| Some(format!("{name}={value:?}: {why}"));
    match ty {
        "boolean" if value != "0" && value != "1" => return bad("boolean must be 0 or 1"),
        "integer" | "number" => {
            let Ok(n) = value.parse::<f64>() else {
                return bad("not a number");
            };
            if ty == "integer" && value.parse::<i64>().is_err() {
                return bad("not an integer");
            }
            if as_f64(prop.get("minimum")).is_some_and(|m| n < m)
                || as_f64(prop.get("maximum")).is_some_and(|m| n > m)
            {
                return bad("out of range");
            }
        }
        _ => {}
    }
    if let Some(en) = prop.get("enum").and_then(|e| e.as_array()) {
        if !en.iter().any(|e| e.as_str() == Some(value)) {
            return bad("not in the enum");
        }
    }
    if let Some(max) = prop.get("maxLength").and_then(Value::as_u64) {
        if value.len() as u64 > max {
            return bad("too long");
        }
    }
    None
}

#[test]
fn every_registered_endpoint_matches_the_schema() {
    let fx = fixture();
    let mut problems = Vec::new();
    for ep in endpoints::ALL {
        let method = ep.method.as_str();
        let Some(props) = props_of(&fx, ep.path, method) else {
            problems.push(format!("{method} {} is not in the schema", ep.path));
            continue;
        };
        let in_path = path_params(ep.path);
        for name in &in_path {
            if !props.contains_key(name) {
                problems.push(format!(
                    "{method} {}: path parameter {name} unknown",
                    ep.path
                ));
            }
        }
        for p in ep.params {
            let Some(prop) = props.get(p.name) else {
                problems.push(format!("{method} {}: no parameter {}", ep.path, p.name));
                continue;
            };
            let want = prop["type"].as_str().unwrap_or("?");
            if p.ty.schema_name() != want {
                problems.push(format!(
                    "{method} {}: {} is {want}, registry says {}",
                    ep.path,
                    p.name,
                    p.ty.schema_name()
                ));
            }
            if p.required == is_optional(prop) {
                problems.push(format!(
                    "{method} {}: {} required={} disagrees with the schema",
                    ep.path, p.name, p.required
                ));
            }
        }
        for (name, prop) in props {
            if !is_optional(prop) && !in_path.contains(name) && ep.param(name).is_none() {
                problems.push(format!(
                    "{method} {}: required {name} is not in the registry",
                    ep.path
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_registry_check_matches_the_schema_types() {
    // A sanity check of the comparison itself: a wrong type must be caught.
    let fx = fixture();
    let props = properties(&fx, "/nodes/{node}/qemu/{vmid}/clone", "POST");
    assert!(value_problem("full", "true", &props["full"]).is_some());
    assert!(value_problem("newid", "99", &props["newid"]).is_some());
    assert!(value_problem("format", "vdi", &props["format"]).is_some());
    assert!(value_problem("full", "1", &props["full"]).is_none());
    assert_eq!(ParamType::Boolean.schema_name(), "boolean");
}

/// Finds the schema path template for a concrete path (literal segments win over `{x}`).
fn match_template<'a>(fx: &'a Value, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.split('/').collect();
    fx.as_object()
        .unwrap()
        .keys()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
        .map(String::as_str)
}

fn check_recorded(fx: &Value, r: &Recorded) -> Result<(String, String), String> {
    let template =
        match_template(fx, &r.path).ok_or(format!("{} {}: unknown path", r.method, r.path))?;
    let props = props_of(fx, template, &r.method)
        .ok_or(format!("{} {template}: method not in schema", r.method))?;
    match r.method.as_str() {
        "GET" | "DELETE" if !r.body.is_empty() => {
            return Err(format!("{} {}: has a body", r.method, r.path))
        }
        "POST" | "PUT" if !r.query.is_empty() => {
            return Err(format!("{} {}: has a query", r.method, r.path))
        }
        "POST" | "PUT" => {
            let ct = r.header("content-type").unwrap_or_default();
            if !ct.starts_with("application/x-www-form-urlencoded") {
                return Err(format!("{} {}: content-type {ct}", r.method, r.path));
            }
        }
        _ => {}
    }
    let in_path = path_params(template);
    for (name, value) in &r.params {
        if in_path.contains(name) {
            return Err(format!(
                "{} {template}: path parameter {name} also sent",
                r.method
            ));
        }
        let prop = schema_prop(props, name).ok_or(format!(
            "{} {template}: parameter {name} not in schema",
            r.method
        ))?;
        if let Some(p) = value_problem(name, value, prop) {
            return Err(format!("{} {template}: {p}", r.method));
        }
    }
    for (name, prop) in props {
        if !is_optional(prop) && !in_path.contains(name) && !r.params.iter().any(|(n, _)| n == name)
        {
            return Err(format!("{} {template}: required {name} missing", r.method));
        }
    }
    Ok((r.method.clone(), template.to_string()))
}

fn full_settings() -> VmSettings {
    // A struct literal without `..Default::default()`: a new field fails to compile here
    // until the test sends it.
    let mut devices = BTreeMap::new();
    for (k, v) in [
        ("net0", "virtio,bridge=vmbr0"),
        ("ipconfig0", "ip=dhcp"),
        ("scsi0", "local-lvm:8"),
        ("virtio1", "local-lvm:1"),
        ("sata2", "local-lvm:1"),
        ("ide2", "local-lvm:cloudinit"),
        ("efidisk0", "local-lvm:1,efitype=4m"),
        ("tpmstate0", "local-lvm:1,version=v2.0"),
        ("serial0", "socket"),
        ("usb0", "host=1234:5678"),
        ("hostpci0", "0000:01:00.0"),
    ] {
        devices.insert(k.to_string(), v.to_string());
    }
    VmSettings {
        name: Some("lab-01".into()),
        description: Some("labfleet".into()),
        tags: Some("labfleet;class-1".into()),
        memory: Some("2048".into()),
        balloon: Some(0),
        cores: Some(2),
        sockets: Some(1),
        vcpus: Some(2),
        cpu: Some("host".into()),
        cpulimit: Some(1.5),
        cpuunits: Some(100),
        numa: Some(false),
        ostype: Some("l26".into()),
        scsihw: Some("virtio-scsi-pci".into()),
        agent: Some("enabled=1".into()),
        boot: Some("order=scsi0".into()),
        bios: Some("ovmf".into()),
        machine: Some("q35".into()),
        vga: Some("std".into()),
        kvm: Some(true),
        acpi: Some(true),
        onboot: Some(false),
        protection: Some(false),
        ciuser: Some("student".into()),
        cipassword: Some(SecretString::from("pw")),
        citype: Some("nocloud".into()),
        ciupgrade: Some(false),
        sshkeys: None,
        nameserver: Some("1.1.1.1".into()),
        searchdomain: Some("lab.example".into()),
        devices,
    }
    .ssh_keys("ssh-ed25519 AAAA user@host")
}

async fn exercise_every_call(c: &ProxmoxClient) {
    let n = "pve1";
    let upid = Upid::parse(&support::upid_for(n)).unwrap();
    c.version().await.unwrap();
    c.nodes().await.unwrap();
    c.node_status(n).await.unwrap();
    c.cluster_resources(Some(ResourceType::Vm)).await.unwrap();
    c.cluster_resources(None).await.unwrap();
    c.cluster_status().await.unwrap();
    assert_eq!(c.next_id(None).await.unwrap(), 100);
    c.next_id(Some(150)).await.unwrap();
    c.qemu_list(n, true).await.unwrap();
    c.qemu_create(
        n,
        &CreateVmParams {
            vmid: 200,
            settings: full_settings(),
            pool: Some("class-1".into()),
            storage: Some("local-lvm".into()),
            start: Some(false),
            template: Some(false),
        },
    )
    .await
    .unwrap();
    c.qemu_delete(
        n,
        200,
        &DestroyParams {
            purge: Some(true),
            destroy_unreferenced_disks: Some(true),
            skiplock: Some(false),
        },
    )
    .await
    .unwrap();
    c.qemu_clone(
        n,
        9000,
        &CloneParams {
            newid: 201,
            name: Some("lab-02".into()),
            description: Some("labfleet:job=1".into()),
            full: Some(true),
            pool: Some("class-1".into()),
            snapname: Some("base".into()),
            storage: Some("local-lvm".into()),
            target: Some("pve2".into()),
            format: Some("qcow2".into()),
            bwlimit: Some(10_240),
        },
    )
    .await
    .unwrap();
    c.qemu_clone(n, 9000, &CloneParams::linked(202))
        .await
        .unwrap();
    c.qemu_config(n, 201, true, Some("base")).await.unwrap();
    c.qemu_config(n, 201, false, None).await.unwrap();
    let update = ConfigUpdate {
        settings: full_settings(),
        delete: Some("unused0,ide3".into()),
        digest: Some("0123abcd".into()),
        skiplock: Some(false),
    };
    c.qemu_update_config_async(n, 201, &update).await.unwrap();
    c.qemu_update_config(n, 201, &update).await.unwrap();
    c.qemu_status(n, 201).await.unwrap();
    c.qemu_start(
        n,
        201,
        &StartParams {
            timeout: Some(30),
            skiplock: Some(false),
        },
    )
    .await
    .unwrap();
    c.qemu_stop(
        n,
        201,
        &StopParams {
            timeout: Some(10),
            skiplock: Some(false),
            keep_active: Some(false),
            overrule_shutdown: Some(true),
        },
    )
    .await
    .unwrap();
    c.qemu_shutdown(
        n,
        201,
        &ShutdownParams {
            force_stop: Some(true),
            timeout: Some(60),
            keep_active: Some(false),
            skiplock: Some(false),
        },
    )
    .await
    .unwrap();
    c.qemu_reboot(n, 201, Some(30)).await.unwrap();
    c.snapshot_list(n, 201).await.unwrap();
    c.snapshot_create(
        n,
        201,
        &SnapshotParams {
            snapname: "clean".into(),
            description: Some("before class".into()),
            vmstate: Some(false),
        },
    )
    .await
    .unwrap();
    c.snapshot_delete(n, 201, "clean", true).await.unwrap();
    c.snapshot_rollback(n, 201, "clean", true).await.unwrap();
    c.qemu_template(n, 201, Some("scsi0")).await.unwrap();
    c.qemu_resize(
        n,
        201,
        &ResizeParams {
            disk: "scsi0".into(),
            size: "+8G".into(),
            digest: Some("0123abcd".into()),
            skiplock: Some(false),
        },
    )
    .await
    .unwrap();
    c.qemu_rrddata(n, 201, Timeframe::Hour, Some(Consolidation::Average))
        .await
        .unwrap();
    c.task_status(&upid).await.unwrap();
    c.task_log(&upid, 0, 50).await.unwrap();
    c.task_stop(&upid).await.unwrap();
    c.wait_task(&upid, Duration::from_secs(5)).await.unwrap();
    assert!(c.task_progress(&upid).await.unwrap().is_some());
    c.storage_list(
        n,
        &StorageListParams {
            content: Some("images".into()),
            enabled: Some(true),
            storage: Some("local-lvm".into()),
            target: Some("pve2".into()),
        },
    )
    .await
    .unwrap();
    c.storage_content(n, "local", Some("iso"), Some(201))
        .await
        .unwrap();
    c.lxc_list(n).await.unwrap();
}

#[tokio::test]
async fn every_request_the_client_sends_matches_the_schema() {
    let fake = FakePve::start(None).await;
    let token = ProxmoxClient::new(ClientConfig::new(
        &fake.url,
        Credentials::token("root@pam!labfleet", "secret-uuid"),
    ))
    .unwrap();
    exercise_every_call(&token).await;
    let ticket = ProxmoxClient::new(ClientConfig::new(
        &fake.url,
        Credentials::password("root@pam", "pw"),
    ))
    .unwrap();
    ticket.login().await.unwrap();

    let fx = fixture();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for r in fake.requests() {
        match check_recorded(&fx, &r) {
            Ok(key) => {
                seen.insert(key);
            }
            Err(p) => problems.push(p),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let registered: BTreeSet<(String, String)> = endpoints::ALL
        .iter()
        .map(|e| (e.method.to_string(), e.path.to_string()))
        .collect();
    let unexercised: Vec<_> = registered.difference(&seen).collect();
    assert!(
        unexercised.is_empty(),
        "endpoints never exercised: {unexercised:?}"
    );
    assert_eq!(
        seen, registered,
        "the client sent requests outside the registry"
    );
}

#[tokio::test]
async fn the_recorded_check_catches_a_wrong_parameter_name() {
    // Guards the guard: a request with a misspelt name must be reported.
    let fx = fixture();
    let r = Recorded {
        method: "POST".into(),
        path: "/nodes/pve1/qemu/100/status/shutdown".into(),
        params: vec![("force_stop".into(), "1".into())],
        query: vec![],
        body: vec![("force_stop".into(), "1".into())],
        headers: {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                "content-type",
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
            h
        },
    };
    let err = check_recorded(&fx, &r).unwrap_err();
    assert!(err.contains("force_stop"), "{err}");
}

#[tokio::test]
async fn the_client_refuses_parameters_the_schema_would_reject() {
    let fake = FakePve::start(None).await;
    let c = ProxmoxClient::new(ClientConfig::new(
        &fake.url,
        Credentials::token("root@pam!labfleet", "s"),
    ))
    .unwrap();
    let update = ConfigUpdate {
        settings: VmSettings::default().device("bogus0", "x"),
        ..Default::default()
    };
    let err = c.qemu_update_config(n(), 100, &update).await.unwrap_err();
    assert!(matches!(err, ProxmoxError::InvalidRequest { .. }), "{err}");
    assert!(err.to_string().contains("bogus0"));
    assert!(fake.requests().is_empty(), "nothing may be sent");
}

fn n() -> &'static str {
    "pve1"
}
