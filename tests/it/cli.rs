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
    let mut tokens = Vec::new();
    for (run, class_name) in [(1, "Demo class"), (2, "Demo class 2")] {
        let port = free_port();
        let mut demo = Demo::start(dir.path(), port);
        let token_line = demo.wait_for(|l| l.starts_with("admin token:")).await;
        let token = token_line.split_whitespace().last().unwrap().to_string();
        tokens.push(token.clone());
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
        // A clean stop folds SQLite's write-ahead log back into the database file.
        assert!(dir.path().join("labfleet.db").exists());
        assert!(
            !dir.path().join("labfleet.db-wal").exists(),
            "run {run}: the WAL was left beside the database"
        );
    }
    // The demo keeps its admin token in its data directory: an exported token keeps working.
    assert_eq!(
        tokens[0], tokens[1],
        "the demo's token changed between runs"
    );
}

/// `labfleet user list` run where there is no labfleet database says so (and creates none),
/// instead of listing nobody from a new empty database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_command_on_a_directory_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = labfleet()
        .args(["user", "list"])
        .env("LABFLEET_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("there is no labfleet database at"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("labfleet.db").exists(),
        "a database was made"
    );
    // One line, no backtrace, even with RUST_BACKTRACE set.
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A user error is one clear line even with RUST_BACKTRACE=1, and the client commands, which
/// read no settings, are not stopped by a stray (server) LABFLEET_* variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_line_and_client_commands_ignore_server_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = labfleet()
        .args(["migrate"])
        .env("LABFLEET_DATA_DIR", dir.path())
        .env("LABFLEET_NO_SUCH_SETTING", "1")
        .env("LABFLEET_WORKER__LEASE_SECS", "not a number")
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // `jobs watch` needs only its server and token: it gets as far as asking the server.
    let port = free_port();
    let output = labfleet()
        .args(["jobs", "watch", "00000000-0000-0000-0000-000000000000"])
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .env("LABFLEET_TOKEN", "t")
        .env("LABFLEET_WORKER__LEASE_SECS", "not a number")
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("lease_secs"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
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

/// `LABFLEET_SECRET_KEY` is taken as written: a key of 64 zeros is refused as too weak (saying
/// so, not that it is malformed), and a key of decimal digits only is accepted as hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_is_read_verbatim_and_a_weak_one_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("clusters.json");
    std::fs::write(&legacy, "[]").unwrap();
    let import = |key: String| {
        labfleet()
            .arg("import-clusters")
            .arg(&legacy)
            .env("LABFLEET_DATA_DIR", dir.path())
            .env("LABFLEET_SECRET_KEY", key)
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = import("0".repeat(64)).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the secret key is too weak"), "{stderr}");
    let digits = "3141592653589793238462643383279502884197169399375105820974944592";
    let out = import(digits.to_string()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 imported"),
        "{stderr}"
    );
}

/// `labfleet jobs watch` on a job that finished long ago reports the job's own duration (from
/// its accepted and finished times), not the watch's fraction of a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_finished_job_reports_how_long_the_job_took() {
    // Proxmox-like latencies: three linked clones on one storage take about 1.3 s.
    let lab = Lab::start_with_sim(Backend::Embedded, |_| {}, |sim| sim.time_scale = 1.0).await;
    let (_, job) = lab
        .create_class(crate::deploy::class_body("Watched", "linked_clone", 3))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let output = labfleet()
        .args(["jobs", "watch", &job.to_string()])
        .args(["--server", &lab.app.url("")])
        .env("LABFLEET_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains(&format!("job {job} succeeded in ")))
        .unwrap_or_else(|| panic!("no summary line: {stdout}"));
    let secs: f64 = summary
        .rsplit(" in ")
        .next()
        .and_then(|t| t.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no duration: {summary}"));
    assert!(
        secs >= 1.0,
        "the job took about 1.3 s, the summary says {secs} s: {stdout}"
    );
    lab.app.finish().await;
}
