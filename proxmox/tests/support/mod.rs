//! Test doubles: a recording fake PVE API (axum on 127.0.0.1:0) and a raw HTTP/TLS server
//! for responses axum cannot produce (non-canonical reason phrases, self-signed TLS).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path below `/api2/json`, percent-decoded.
    pub path: String,
    /// Query pairs (GET/DELETE) or form pairs (POST/PUT).
    pub params: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Vec<(String, String)>,
    pub headers: HeaderMap,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Overrides the canned answer: `Some((status, body))`.
pub type Responder = Arc<dyn Fn(&Recorded) -> Option<(u16, Value)> + Send + Sync>;

pub const TICKET: &str = "PVE:root@pam:66DC5987::c2ln+bmF0/dXJl==";
pub const CSRF: &str = "66DC5987:Y3NyZg";

pub fn upid_for(node: &str) -> String {
    format!("UPID:{node}:00001234:00005678:66DC5987:qmclone:100:root@pam:")
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn canned(r: &Recorded) -> (u16, Value) {
    let p = r.path.as_str();
    let node = p.split('/').nth(2).unwrap_or("pve1").to_string();
    if p == "/access/ticket" {
        return (
            200,
            json!({"data": {"ticket": TICKET, "CSRFPreventionToken": CSRF, "username": "root@pam"}}),
        );
    }
    if p.contains("/tasks/") && p.ends_with("/status") {
        let upid = p.split('/').nth(4).unwrap_or_default();
        return (
            200,
            json!({"data": {"status": "stopped", "exitstatus": "OK", "upid": upid, "node": node,
                "type": "qmclone", "id": "100", "user": "root@pam", "pid": 1, "pstart": 2, "starttime": 3}}),
        );
    }
    if p.contains("/tasks/") && p.ends_with("/log") {
        return (
            200,
            json!({"data": [{"n": 1, "t": "transferred 1.0 GiB of 4.0 GiB (25.00%)"}], "total": 1}),
        );
    }
    if p == "/cluster/nextid" {
        return (200, json!({"data": "100"}));
    }
    match r.method.as_str() {
        "GET" => {
            let node_status =
                p.starts_with("/nodes/") && p.ends_with("/status") && p.split('/').count() == 4;
            let object = node_status
                || ["/version", "/config", "/current"]
                    .iter()
                    .any(|s| p.ends_with(s));
            (
                200,
                json!({"data": if object { json!({}) } else { json!([]) }}),
            )
        }
        "PUT" if p.ends_with("/config") => (200, json!({"data": null})),
        "DELETE" if p.contains("/tasks/") => (200, json!({"data": null})),
        _ => (200, json!({"data": upid_for(&node)})),
    }
}

/// A recording fake PVE API.
pub struct FakePve {
    pub url: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePve {
    pub async fn start(responder: Option<Responder>) -> FakePve {
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log2 = log.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log2.clone();
            let responder = responder.clone();
            async move {
                let path = percent_decode(uri.path().trim_start_matches("/api2/json"));
                let query: Vec<(String, String)> =
                    serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap();
                let body: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&body).unwrap_or_default();
                let params = if method == Method::GET || method == Method::DELETE {
                    query.clone()
                } else {
                    body.clone()
                };
                let rec = Recorded {
                    method: method.to_string(),
                    path,
                    params,
                    query,
                    body,
                    headers,
                };
                let (status, value) = responder
                    .as_ref()
                    .and_then(|r| r(&rec))
                    .unwrap_or_else(|| canned(&rec));
                log.lock().unwrap().push(rec);
                let resp: Response = (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json;charset=UTF-8")],
                    value.to_string(),
                )
                    .into_response();
                resp
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakePve { url, log, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

/// Serves a fixed raw HTTP response to every connection, optionally over TLS.
pub struct RawServer {
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S>(mut s: S, response: Arc<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the head; bodies of our test requests are small and fully sent with it or right after.
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let _ = s.write_all(response.as_bytes()).await;
    let _ = s.shutdown().await;
}

impl RawServer {
    pub async fn start(response: String, tls: Option<tokio_rustls::TlsAcceptor>) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = Arc::new(response);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let response = response.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                serve_one(s, response).await;
                            }
                        }
                        None => serve_one(sock, response).await,
                    }
                });
            }
        });
        RawServer { addr, task }
    }
}

/// `HTTP/1.1 {status_line}` with a JSON body.
pub fn raw_response(status_line: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A self-signed certificate for 127.0.0.1 and its TLS acceptor; returns the DER too.
pub fn self_signed_acceptor() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let der = cert.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der.clone())],
            key,
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), der)
}
