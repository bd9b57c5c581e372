//! The command-line client as a user runs it: the real `labfleet` binary, `deploy` against a test
//! app with a registered, synced simulated cluster (exit status, table, error naming the field),
//! and `demo` as a long-running process that is queried over its API and stopped with SIGTERM.

use std::{
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::deploy::Lab;
use crate::harness::{Backend, TOKEN};

/// The binary under test, with no inherited labfleet configuration.
fn labfleet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labfleet"));
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "LABFLEET_CONFIG",
        "LABFLEET_ADMIN_TOKEN",
        "LABFLEET_SERVER",
        "LABFLEET_TOKEN",
        "LABFLEET_BIND",
        "LABFLEET_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Runs `labfleet deploy <args>` against the lab's API, the token in `LABFLEET_TOKEN` as a
/// shell that also runs `labfleet serve` would export it.
async fn deploy(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let output: Output = tokio::time::timeout(
        Duration::from_secs(90),
        labfleet()
            .arg("deploy")
            .args(args)
            .args(["--server", &lab.app.url("")])
            .env("LABFLEET_TOKEN", TOKEN)
            .output(),
    )
    .await
    .expect("labfleet deploy finished in time")
    .expect("labfleet deploy ran");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let code = output.status.code().expect("exited, not killed");
    (code, stdout, stderr)
}

/// The VM table's rows as (index, name, vmid, node, state), read from the command's output.
fn table_rows(stdout: &str) -> Vec<[String; 5]> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("#  "))
        .skip(1)
        .take_while(|l| !l.starts_with("class "))
        .map(|l| {
            let cells: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            assert!(cells.len() >= 5, "a short table row: {l:?}\n{stdout}");
            [0, 1, 2, 3, 4].map(|i| cells[i].clone())
        })
        .collect()
}

/// The id of the only class the lab's API lists.
async fn only_class(lab: &Lab) -> i64 {
    let (status, list) = lab
        .app
        .call(reqwest::Method::GET, "/api/classes", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let classes = list["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 1, "{list:#}");
    classes[0]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_shows_progress_and_a_table_of_ready_vms_and_exits_0() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    let (code, stdout, stderr) = deploy(
        &lab,
        &[
            "--name",
            "CLI Lab",
            "--template",
            "104",
            "--count",
            "5",
            "--method",
            "linked_clone",
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Off a terminal the bar becomes plain lines, the last one saying everything is done.
    assert!(stdout.contains("5/5 VMs  0 running  0 failed"), "{stdout}");

    let class_id = only_class(&lab).await;
    let vms = lab.check_vms_exist(class_id, 5).await;
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 5, "{stdout}");
    for (row, vm) in rows.iter().zip(&vms) {
        assert_eq!(row[0], vm["index"].to_string(), "{stdout}");
        assert_eq!(row[1], vm["name"].as_str().unwrap(), "{stdout}");
        assert_eq!(row[2], vm["vmid"].to_string(), "{stdout}");
        assert_eq!(row[3], vm["node"].as_str().unwrap(), "{stdout}");
        assert_eq!(row[4], "created", "{stdout}");
    }
    assert!(
        stdout.contains(&format!(
            "class {class_id} \"CLI Lab\": 5 of 5 VMs ready, 0 failed"
        )),
        "{stdout}"
    );
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_names_the_field_of_a_refused_request_and_exits_2() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    for (args, field) in [
        (["--count", "0", "--node", "pve1"], "pool_size"),
        (["--count", "2", "--node", "pve9"], "deployment_node"),
    ] {
        let mut all = vec!["--name", "Refused", "--template", "104"];
        all.extend(args);
        let (code, stdout, stderr) = deploy(&lab, &all).await;
        assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stderr.contains(&format!("(field: {field})")), "{stderr}");
    }
    let (status, list) = lab
        .app
        .call(reqwest::Method::GET, "/api/classes", None)
        .await;
    assert_eq!(list["classes"], serde_json::json!([]), "{status} {list}");
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_exits_1_with_the_reason_when_the_deployment_fails() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    lab.remove_template_behind_our_back("pve1", 105).await;
    let (code, stdout, stderr) = deploy(
        &lab,
        &[
            "--name",
            "Ghost",
            "--template",
            "105",
            "--count",
            "3",
            "--method",
            "linked_clone",
        ],
    )
    .await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("template 105 does not exist"),
        "the job's error is shown: {stdout}"
    );
    assert!(stdout.contains("0 of 0 VMs ready"), "{stdout}");
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_exits_1_and_lists_proxmox_s_message_for_each_failed_vm() {
    // One attempt, and every storage lock times out: each clone fails for good.
    let lab = Lab::start(Backend::Embedded, |s| s.retry.max_attempts = 1).await;
    lab.api
        .set_faults(serde_json::json!({"lock_timeout": 1.0}))
        .await;
    let (code, stdout, stderr) = deploy(
        &lab,
        &[
            "--name",
            "Locked",
            "--template",
            "104",
            "--count",
            "2",
            "--method",
            "linked_clone",
        ],
    )
    .await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows.iter().all(|r| r[4] == "failed"), "{stdout}");
    let with_message = stdout
        .lines()
        .filter(|l| l.contains(" failed ") && l.contains("lock") && l.contains("timeout"))
        .count();
    assert_eq!(
        with_message, 2,
        "each failed VM shows Proxmox's message: {stdout}"
    );
    assert!(stdout.contains("0 of 2 VMs ready, 2 failed"), "{stdout}");
    lab.app.finish().await;
}

/// A running `labfleet demo` and the lines it has printed so far.
struct Demo {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Demo {
    fn start(data_dir: &std::path::Path, port: u16) -> Demo {
        let mut child = labfleet()
            .args(["demo", "--nodes", "2", "--count", "3", "--time-scale", "0"])
            .env("LABFLEET_DATA_DIR", data_dir)
            .env("LABFLEET_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("labfleet demo starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads output until a line satisfies `want`; returns that line.
    async fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("demo output so far:\n{}", self.seen.join("\n")))
                .unwrap();
            let Some(line) = line else {
                panic!("demo ended early:\n{}", self.seen.join("\n"));
            };
            self.seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }

    /// SIGTERM, then the exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        // Drain the rest of the output so the demo never blocks on a full pipe.
        while let Ok(Some(_)) = self.lines.next_line().await {}
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the demo stops within 30 s of SIGTERM")
            .unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_deploys_a_class_serves_it_stops_on_sigterm_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    for (run, class_name) in [(1, "Demo class"), (2, "Demo class 2")] {
        let port = free_port();
        let mut demo = Demo::start(dir.path(), port);
        let token_line = demo.wait_for(|l| l.starts_with("admin token:")).await;
        let token = token_line.split_whitespace().last().unwrap().to_string();
        demo.wait_for(|l| l.contains("3 of 3 VMs ready")).await;
        let rows = table_rows(&(demo.seen.join("\n") + "\n"));
        assert_eq!(rows.len(), 3, "run {run}: {:#?}", demo.seen);

        let get = |path: String| {
            let req = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(&token);
            async move {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<Value>().await.unwrap()
            }
        };
        let list = get("/api/classes".into()).await;
        let classes = list["classes"].as_array().unwrap();
        assert_eq!(classes.len(), run, "one class per run: {list:#}");
        // Newest first.
        assert_eq!(classes[0]["name"], class_name, "{list:#}");
        let class = get(format!("/api/classes/{}", classes[0]["id"])).await;
        assert_eq!(class["counts"]["ready"], 3, "{class:#}");
        assert_eq!(class["counts"]["total"], 3, "{class:#}");

        let status = demo.terminate().await;
        assert!(status.success(), "run {run}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_says_clearly_when_its_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        labfleet()
            .args(["demo", "--nodes", "1", "--count", "1", "--time-scale", "0"])
            .env("LABFLEET_DATA_DIR", dir.path())
            .env("LABFLEET_BIND", addr.to_string())
            .output(),
    )
    .await
    .expect("the demo gives up in time")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );
}
