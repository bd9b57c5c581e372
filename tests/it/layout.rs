//! The layout rule of the hypervisor seam: only the Proxmox adapter (`backends/proxmox`) and the
//! binary reach the Proxmox client crate; the API, the worker, the scheduler, the cluster
//! registry and the VM domain speak to hypervisors through the `Backend` trait only.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Each workspace package's dependencies on other workspace packages (normal, dev and build),
/// from `cargo metadata`.
fn workspace_graph() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str())
                .filter(|d| ours.contains(d))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect()
}

/// Every workspace package `from` depends on, directly or through others.
fn reaches(graph: &BTreeMap<String, Vec<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn only_the_adapter_and_the_binary_reach_the_proxmox_client() {
    let graph = workspace_graph();
    assert!(
        graph.contains_key("labfleet-proxmox") && graph.contains_key("labfleet-backend-proxmox"),
        "the workspace has the Proxmox client and its adapter: {:?}",
        graph.keys()
    );
    assert!(
        reaches(&graph, "labfleet-backend-proxmox").contains("labfleet-proxmox"),
        "the adapter uses the client"
    );
    for package in [
        "labfleet-api",
        "labfleet-worker",
        "labfleet-scheduler",
        "labfleet-clusters",
        "labfleet-fleet",
        "labfleet-jobs",
        "labfleet-access",
        "labfleet-config",
        "labfleet-db",
    ] {
        assert!(graph.contains_key(package), "{package} is in the workspace");
        let reached = reaches(&graph, package);
        for forbidden in ["labfleet-proxmox", "labfleet-backend-proxmox"] {
            assert!(
                !reached.contains(forbidden),
                "{package} depends on {forbidden} (directly or through {:?}); hypervisor calls \
                 belong behind the Backend trait",
                graph.get(package)
            );
        }
    }
}
