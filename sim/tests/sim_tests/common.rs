//! Test harness: a simulator per test on loopback port 0 with its own data dir, and a tiny
//! HTTP/1.1 client that also reads the reason phrase.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use labfleet_sim::{SimConfig, SimHandle};
use serde_json::Value;

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "labfleet-sim-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A response: status, reason phrase, JSON body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

pub struct TestSim {
    pub h: SimHandle,
    pub dir: TempDir,
    pub addr: String,
}

pub async fn spawn_sim_with(f: impl FnOnce(&mut SimConfig)) -> TestSim {
    let dir = TempDir::new();
    let mut cfg = SimConfig::for_tests(dir.0.join("data"));
    f(&mut cfg);
    let h = labfleet_sim::start(cfg).await.unwrap();
    let addr = h
        .url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    TestSim { h, dir, addr }
}

pub async fn spawn_sim() -> TestSim {
    spawn_sim_with(|_| {}).await
}

/// One HTTP/1.1 request on a new connection.
pub async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, Vec<u8>)>,
) -> Resp {
    try_raw(addr, method, path, headers, body).await.unwrap()
}

/// Like [`raw`], but a connection closed without an answer is an `Err`.
pub async fn try_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, Vec<u8>)>,
) -> Result<Resp, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let req = match body {
        Some((ct, bytes)) => b
            .header("content-type", ct)
            .body(Full::new(Bytes::from(bytes)))
            .unwrap(),
        None => b.body(Full::new(Bytes::new())).unwrap(),
    };
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_else(|| resp.status().canonical_reason().unwrap_or("").to_string());
    let bytes = resp.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Resp {
        status,
        reason,
        body,
    })
}

pub fn form(params: &[(&str, &str)]) -> Vec<u8> {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl TestSim {
    pub fn token(&self) -> (&'static str, String) {
        ("authorization", self.h.token_header())
    }

    /// An API call with the token; GET/DELETE parameters go in the query string.
    pub async fn api(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Resp {
        let full = format!("/api2/json{path}");
        if method == "GET" || method == "DELETE" {
            let q = String::from_utf8(form(params)).unwrap();
            let p = if q.is_empty() {
                full
            } else {
                format!("{full}?{q}")
            };
            raw(&self.addr, method, &p, &[self.token()], None).await
        } else {
            raw(
                &self.addr,
                method,
                &full,
                &[self.token()],
                Some(("application/x-www-form-urlencoded", form(params))),
            )
            .await
        }
    }

    /// Starts a task and returns its UPID (panics on a synchronous error).
    pub async fn start_task(&self, method: &str, path: &str, params: &[(&str, &str)]) -> String {
        let r = self.api(method, path, params).await;
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
        r.data().as_str().unwrap().to_string()
    }

    /// Polls a task until it stops; returns (exitstatus, log lines).
    pub async fn wait_task(&self, upid: &str) -> (String, Vec<String>) {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .api(
                    "GET",
                    &format!("/nodes/{node}/tasks/{}/status", enc(upid)),
                    &[],
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            if r.data()["status"] == "stopped" {
                let exit = r.data()["exitstatus"].as_str().unwrap().to_string();
                let log = self
                    .api(
                        "GET",
                        &format!("/nodes/{node}/tasks/{}/log", enc(upid)),
                        &[("limit", "1000")],
                    )
                    .await;
                let lines = log
                    .data()
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["t"].as_str().unwrap().to_string())
                    .collect();
                return (exit, lines);
            }
            assert!(Instant::now() < deadline, "task {upid} did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs a task to its end and returns its exitstatus.
    pub async fn run_task(&self, method: &str, path: &str, params: &[(&str, &str)]) -> String {
        let upid = self.start_task(method, path, params).await;
        self.wait_task(&upid).await.0
    }

    pub async fn config(&self, node: &str, vmid: u32) -> Resp {
        self.api("GET", &format!("/nodes/{node}/qemu/{vmid}/config"), &[])
            .await
    }

    pub async fn control(&self, method: &str, path: &str, json: Value) -> Resp {
        raw(
            &self.addr,
            method,
            path,
            &[],
            Some(("application/json", serde_json::to_vec(&json).unwrap())),
        )
        .await
    }
}
