//! Measures the simulator at time scale 0: API requests/s and linked clones/s (no qemu-img).
//! Run: `cargo run --release -p labfleet-sim --example sim_perf [-- SECONDS CONNECTIONS CLONES]`
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

async fn connect(addr: &str) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn call(
    s: &mut SendRequest<Full<Bytes>>,
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> serde_json::Value {
    s.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("authorization", token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let clones: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("labfleet-sim-perf-{}", std::process::id()));
    let mut cfg = labfleet_sim::SimConfig::for_tests(&dir);
    cfg.use_qemu_img = false;
    let h = labfleet_sim::start(cfg).await.unwrap();
    let addr = h.url.trim_start_matches("http://").to_string();
    let token = h.token_header();

    // 1. API requests/s: status/current of a template over keep-alive connections
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut joins = Vec::new();
    for _ in 0..conns {
        let (addr, token, count) = (addr.clone(), token.clone(), count.clone());
        joins.push(tokio::spawn(async move {
            let mut s = connect(&addr).await;
            while Instant::now() < deadline {
                let v = call(
                    &mut s,
                    &addr,
                    &token,
                    "GET",
                    "/api2/json/nodes/pve1/qemu/104/status/current",
                    "",
                )
                .await;
                assert_eq!(v["data"]["vmid"], 104);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t0 = Instant::now();
    for j in joins {
        j.await.unwrap();
    }
    let rps = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    println!("api: {rps:.0} requests/s ({conns} connections, {secs} s, GET status/current)");

    // 2. linked clones/s of template 104 (shared NFS storage lock), each polled to completion
    let next = Arc::new(AtomicU64::new(1000));
    let done = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..conns {
        let (addr, token, next, done, polls) = (
            addr.clone(),
            token.clone(),
            next.clone(),
            done.clone(),
            polls.clone(),
        );
        joins.push(tokio::spawn(async move {
            let mut s = connect(&addr).await;
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= 1000 + clones as u64 {
                    break;
                }
                let v = call(
                    &mut s,
                    &addr,
                    &token,
                    "POST",
                    "/api2/json/nodes/pve1/qemu/104/clone",
                    &format!("newid={id}"),
                )
                .await;
                let upid = v["data"].as_str().unwrap().to_string();
                let path = format!(
                    "/api2/json/nodes/pve1/tasks/{}/status",
                    upid.replace(':', "%3A")
                );
                loop {
                    let st = call(&mut s, &addr, &token, "GET", &path, "").await;
                    polls.fetch_add(1, Ordering::Relaxed);
                    if st["data"]["status"] == "stopped" {
                        assert_eq!(st["data"]["exitstatus"], "OK", "{st}");
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let el = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "clones: {:.0} linked clones/s ({n} clones in {el:.2} s, {conns} clients, {} status polls)",
        n as f64 / el,
        polls.load(Ordering::Relaxed)
    );
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
