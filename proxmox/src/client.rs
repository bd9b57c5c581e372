//! The HTTP transport: configuration, the `{"data": …}` envelope, authentication headers,
//! request checking against the endpoint registry, and turning failures into [`ProxmoxError`]s
//! with PVE's message: the JSON body's `message` (PVE 8.4 and later), else the non-canonical HTTP
//! reason phrase, which is the only place older PVE versions put it (`docs/proxmox.md`,
//! "Errors").

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::auth::{self, Credentials, Ticket, TicketResponse};
use crate::endpoints::{self, Endpoint, Method};
use crate::error::{ProxmoxError, RequestContext};
use crate::params::to_pairs;
use crate::tls::{self, Fingerprint, PIN_MISMATCH};

/// How to reach and trust one PVE cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:8006` (a trailing `/api2/json` is optional).
    pub base_url: String,
    /// Token (preferred) or password.
    pub credentials: Credentials,
    /// Check the certificate against public roots (ignored when a fingerprint is pinned).
    pub verify_ssl: bool,
    /// Pinned SHA-256 certificate fingerprint, `AB:CD:…` as PVE shows it.
    pub tls_fingerprint: Option<String>,
    /// Whole-request timeout (pveproxy itself gives forwarded calls 30 s).
    pub request_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Age after which a ticket is renewed (PVE tickets live 2 h).
    pub ticket_renew_after: Duration,
}

impl ClientConfig {
    /// A config with defaults: certificate checking on, 60 s requests, 10 s connects.
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            credentials,
            verify_ssl: true,
            tls_fingerprint: None,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            ticket_renew_after: auth::DEFAULT_TICKET_RENEW_AFTER,
        }
    }

    /// `https://{host}:{port}`.
    pub fn for_host(host: &str, port: u16, credentials: Credentials) -> Self {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Self::new(format!("https://{host}:{port}"), credentials)
    }

    /// Sets `verify_ssl`.
    pub fn verify_ssl(mut self, verify: bool) -> Self {
        self.verify_ssl = verify;
        self
    }

    /// Pins a certificate fingerprint.
    pub fn tls_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.tls_fingerprint = Some(fingerprint.into());
        self
    }
}

/// A Proxmox VE API client for one cluster. Cheap to clone; clones share connections and ticket.
#[derive(Clone)]
pub struct ProxmoxClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_base: String,
    credentials: Credentials,
    ticket: Mutex<Option<Ticket>>,
    renew_after: Duration,
}

impl std::fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("api_base", &self.inner.api_base)
            .field("credentials", &self.inner.credentials)
            .finish()
    }
}

/// A decoded success envelope.
pub(crate) struct Envelope<T> {
    pub data: T,
    pub total: Option<u64>,
}

impl ProxmoxClient {
    /// Builds a client; no request is made yet (a ticket is fetched on first use).
    pub fn new(config: ClientConfig) -> Result<Self, ProxmoxError> {
        config.credentials.validate()?;
        let fingerprint = config
            .tls_fingerprint
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(Fingerprint::parse)
            .transpose()?;
        let tls = tls::client_config(config.verify_ssl, fingerprint)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("labfleet-proxmox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProxmoxError::Config(format!("HTTP client: {e}")))?;
        let mut base = config.base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ProxmoxError::Config(format!(
                "base URL {base:?} must start with https:// (or http:// for a test simulator)"
            )));
        }
        if !base.ends_with("/api2/json") {
            base.push_str("/api2/json");
        }
        Ok(ProxmoxClient {
            inner: Arc::new(Inner {
                http,
                api_base: base,
                credentials: config.credentials,
                ticket: Mutex::new(None),
                renew_after: config.ticket_renew_after,
            }),
        })
    }

    /// The API base URL (`…/api2/json`).
    pub fn api_base(&self) -> &str {
        &self.inner.api_base
    }

    /// Logs in now (ticket auth) so that bad credentials show up at once; a no-op for tokens.
    pub async fn login(&self) -> Result<(), ProxmoxError> {
        if let Credentials::Password { .. } = self.inner.credentials {
            let mut guard = self.inner.ticket.lock().await;
            *guard = Some(self.fetch_ticket().await?);
        }
        Ok(())
    }

    /// Calls an endpoint and returns its `data`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        args: &[(&str, &str)],
        params: Vec<(String, String)>,
    ) -> Result<T, ProxmoxError> {
        Ok(self.call_envelope(ep, args, params).await?.data)
    }

    /// Calls an endpoint and returns the whole envelope (`data` and `total`).
    pub(crate) async fn call_envelope<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        args: &[(&str, &str)],
        params: Vec<(String, String)>,
    ) -> Result<Envelope<T>, ProxmoxError> {
        let ctx = context(ep, args)?;
        ep.check(&params)
            .map_err(|detail| ProxmoxError::InvalidRequest {
                ctx: Box::new(ctx.clone()),
                detail,
            })?;
        let mut renewed = false;
        loop {
            let headers = self.auth_headers(ep.method != Method::Get).await?;
            let resp = self.send(ep, &ctx, headers, &params).await?;
            let ticket_auth = matches!(self.inner.credentials, Credentials::Password { .. });
            if resp.status() == StatusCode::UNAUTHORIZED && ticket_auth && !renewed {
                // The ticket may have expired or the signing key rotated: log in again, once.
                tracing::info!(path = %ctx.path, "ticket refused, logging in again");
                *self.inner.ticket.lock().await = None;
                renewed = true;
                continue;
            }
            return self.read(resp, &ctx).await;
        }
    }

    async fn send(
        &self,
        ep: &Endpoint,
        ctx: &RequestContext,
        headers: reqwest::header::HeaderMap,
        params: &[(String, String)],
    ) -> Result<reqwest::Response, ProxmoxError> {
        let url = format!("{}{}", self.inner.api_base, ctx.path);
        let method = match ep.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut rb = self.inner.http.request(method, url).headers(headers);
        rb = match ep.method {
            Method::Get | Method::Delete => {
                if params.is_empty() {
                    rb
                } else {
                    rb.query(params)
                }
            }
            Method::Post | Method::Put => rb.form(params),
        };
        tracing::debug!(method = %ep.method, path = %ctx.path, "PVE request");
        rb.send().await.map_err(|e| map_transport(e, ctx))
    }

    async fn read<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        ctx: &RequestContext,
    ) -> Result<Envelope<T>, ProxmoxError> {
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(|e| map_transport(e, ctx))?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            return Err(api_error(
                ctx,
                status,
                reason,
                json,
                &self.inner.credentials,
            ));
        }
        let Some(mut json) = json else {
            return Err(ProxmoxError::Decode {
                ctx: Box::new(ctx.clone()),
                detail: format!("HTTP {status} with a body that is not JSON"),
            });
        };
        let total = json.get("total").and_then(|t| {
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
        });
        let data = json
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or(serde_json::Value::Null);
        let data = T::deserialize(data).map_err(|e| ProxmoxError::Decode {
            ctx: Box::new(ctx.clone()),
            detail: e.to_string(),
        })?;
        Ok(Envelope { data, total })
    }

    async fn auth_headers(&self, write: bool) -> Result<reqwest::header::HeaderMap, ProxmoxError> {
        match &self.inner.credentials {
            Credentials::Token { token_id, secret } => auth::token_headers(token_id, secret),
            Credentials::Password { .. } => {
                let mut guard = self.inner.ticket.lock().await;
                if let Some(t) = guard
                    .as_ref()
                    .filter(|t| t.is_fresh(self.inner.renew_after))
                {
                    return auth::ticket_headers(t, write);
                }
                let fresh = self.fetch_ticket().await?;
                let headers = auth::ticket_headers(&fresh, write);
                *guard = Some(fresh);
                headers
            }
        }
    }

    /// `POST /access/ticket` with the password (the ticket lock is held by the caller).
    async fn fetch_ticket(&self) -> Result<Ticket, ProxmoxError> {
        let Credentials::Password { username, password } = &self.inner.credentials else {
            return Err(ProxmoxError::Config("tokens do not use tickets".into()));
        };
        let ep = &endpoints::TICKET;
        let ctx = context(ep, &[])?;
        tracing::debug!(user = %username, "logging in for a PVE ticket");
        let resp = self
            .send(
                ep,
                &ctx,
                Default::default(),
                &auth::login_form(username, password),
            )
            .await?;
        let env: Envelope<TicketResponse> = self.read(resp, &ctx).await?;
        env.data.into_ticket(&ctx, username)
    }
}

/// Serializes a parameter struct for an endpoint.
pub(crate) fn pairs<P: Serialize>(
    ep: &Endpoint,
    params: &P,
) -> Result<Vec<(String, String)>, ProxmoxError> {
    to_pairs(params).map_err(|detail| ProxmoxError::InvalidRequest {
        ctx: Box::new(RequestContext {
            method: ep.method.to_string(),
            path: ep.path.to_string(),
            ..Default::default()
        }),
        detail,
    })
}

fn context(ep: &Endpoint, args: &[(&str, &str)]) -> Result<RequestContext, ProxmoxError> {
    let arg = |k: &str| {
        args.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let mut ctx = RequestContext {
        method: ep.method.to_string(),
        path: ep.path.to_string(),
        node: arg("node"),
        vmid: arg("vmid").and_then(|v| v.parse().ok()),
        upid: arg("upid"),
    };
    ctx.path = ep
        .fill(args)
        .map_err(|detail| ProxmoxError::InvalidRequest {
            ctx: Box::new(ctx.clone()),
            detail,
        })?;
    Ok(ctx)
}

fn api_error(
    ctx: &RequestContext,
    status: StatusCode,
    reason: Option<String>,
    json: Option<serde_json::Value>,
    credentials: &Credentials,
) -> ProxmoxError {
    let json_message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let message = json_message
        .or(reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()))
        .or_else(|| status.canonical_reason().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let errors = json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(|e| e.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), text.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if status == StatusCode::UNAUTHORIZED {
        return ProxmoxError::AuthFailed {
            ctx: Box::new(ctx.clone()),
            identity: credentials.identity().to_string(),
            status: status.as_u16(),
            message,
        };
    }
    ProxmoxError::Api {
        ctx: Box::new(ctx.clone()),
        status: status.as_u16(),
        message,
        errors,
    }
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Finds a rustls error anywhere in the cause chain; hyper-rustls and tokio-rustls wrap it in
/// (possibly nested) `io::Error`s, whose `source()` skips the wrapped error, so dig into those.
fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    fn dig<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        dig(inner)
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = dig(err) {
            return Some(describe_tls(r));
        }
        cur = err.source();
    }
    None
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::General(m) if m.contains(PIN_MISMATCH) => m.clone(),
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "the server's certificate is not signed by a trusted authority (self-signed?)"
                    .into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for this host name".into()
            }
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
            other => format!("the server's certificate was rejected ({other:?})"),
        },
        other => format!("TLS handshake failed: {other}"),
    }
}

fn map_transport(e: reqwest::Error, ctx: &RequestContext) -> ProxmoxError {
    let detail = chain_text(&e);
    if let Some(tls) = tls_problem(&e) {
        return ProxmoxError::Tls {
            ctx: Box::new(ctx.clone()),
            detail: tls,
        };
    }
    let ctx = Box::new(ctx.clone());
    if e.is_timeout() {
        ProxmoxError::Timeout { ctx, detail }
    } else if e.is_connect() {
        ProxmoxError::Connect { ctx, detail }
    } else if e.is_builder() {
        ProxmoxError::InvalidRequest { ctx, detail }
    } else {
        ProxmoxError::Transport { ctx, detail }
    }
}
