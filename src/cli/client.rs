//! The command-line client of labfleet's own HTTP API (`deploy`, `demo`, `jobs watch`): typed
//! requests and answers, holding only the fields the commands show, and the API's error envelope
//! `{ok: false, error, code, field?}` turned into an error that keeps the field to blame.

use std::time::Duration;

use labfleet_jobs::JobStatus;
use reqwest::{Method, RequestBuilder};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// A labfleet API and the token to call it with.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with its error envelope (a 4xx or 5xx).
    #[error("{message}{}", field.as_deref().map(|f| format!(" (field: {f})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's `error`.
        message: String,
        /// The API's `code`.
        code: String,
        /// The API's `field`, when one request field is to blame.
        field: Option<String>,
    },
    /// No answer: the server is down, the address is wrong, or the connection broke.
    #[error("cannot reach labfleet at {url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The transport error with its causes ("connection refused" is only in a cause).
        reason: String,
    },
    /// An answer that is not the API's JSON (another program on that port?).
    #[error("unexpected answer from {url} (HTTP {status}): {detail}")]
    Unexpected {
        /// What was called.
        url: String,
        /// HTTP status.
        status: u16,
        /// Why it could not be read.
        detail: String,
    },
}

/// The body of `POST /api/classes`; `None` fields are left to the server's defaults.
#[derive(Clone, Debug, Serialize)]
pub struct NewClass {
    /// Class name; VM names start with its slug.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The template's Proxmox VMID.
    pub template_id: i64,
    /// How many VMs.
    pub pool_size: u32,
    /// `config_clone`, `linked_clone` or `full_clone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_method: Option<&'static str>,
    /// Put every VM on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_node: Option<String>,
    /// The cluster's `cluster_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_cluster: Option<String>,
    /// Power the VMs on once cloned.
    pub start: bool,
}

/// `202` of `POST /api/classes`.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Accepted {
    /// The new class.
    pub class_id: i64,
    /// Its deploy job.
    pub job_id: Uuid,
}

/// What the commands read of `GET /api/jobs/{id}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: Uuid,
    /// Its kind (`deploy_class`, …).
    pub kind: String,
    /// Its status.
    pub status: JobStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Its arguments (a class job names its `class_id`).
    #[serde(default)]
    pub args: serde_json::Value,
    /// Counts of its children, or of itself when it has none.
    pub progress: Progress,
    /// The requested page of children; empty when it has none.
    #[serde(default)]
    pub children: Vec<serde_json::Value>,
    /// When it was accepted.
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Job {
    /// How long the job took on the server, accepted to finished; none while it runs.
    pub fn took(&self) -> Option<std::time::Duration> {
        let (from, to) = (self.created_at?, self.finished_at?);
        (to - from).to_std().ok()
    }

    /// The class a `deploy_class` job fills (other class jobs remove VMs: no table to show).
    pub fn deployed_class(&self) -> Option<i64> {
        if self.kind != "deploy_class" {
            return None;
        }
        self.args.get("class_id").and_then(|v| v.as_i64())
    }
}

/// A job's work counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Progress {
    /// All units.
    pub total: u64,
    /// Finished well.
    pub succeeded: u64,
    /// Failed or dead.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Running now.
    pub running: u64,
    /// Waiting.
    pub queued: u64,
}

/// What the commands read of `GET /api/classes/{id}`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClassDetail {
    /// The class.
    pub class: ClassSummary,
    /// VM counts by outcome.
    pub counts: VmCounts,
    /// Every VM, by index.
    pub vms: Vec<ClassVm>,
}

/// A class as listed.
#[derive(Clone, Debug, Deserialize)]
pub struct ClassSummary {
    /// labfleet's class id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// A class's VMs by outcome.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct VmCounts {
    /// All.
    pub total: u64,
    /// Made (and running when the class starts its VMs).
    pub ready: u64,
    /// Failed or cancelled.
    pub failed: u64,
}

/// One VM of a class.
#[derive(Clone, Debug, Deserialize)]
pub struct ClassVm {
    /// Student index (1-based).
    pub index: i64,
    /// VM name.
    pub name: String,
    /// Proxmox VMID.
    pub vmid: i64,
    /// Node.
    pub node: String,
    /// `planned`, `cloning`, `created`, `running`, `failed`, …
    pub state: String,
    /// Proxmox's message when it failed.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct ClassList {
    classes: Vec<ClassSummary>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: String,
    #[serde(default)]
    code: String,
    field: Option<String>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`) calling with `token`.
    pub fn new(base: &str, token: &str) -> Result<ApiClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| unreachable(base, &e))?;
        Ok(ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /api/classes`.
    pub async fn create_class(&self, class: &NewClass) -> Result<Accepted, ClientError> {
        self.send(self.request(Method::POST, "/api/classes").json(class))
            .await
    }

    /// `GET /api/classes`: the classes the token may see.
    pub async fn classes(&self) -> Result<Vec<ClassSummary>, ClientError> {
        let list: ClassList = self.send(self.request(Method::GET, "/api/classes")).await?;
        Ok(list.classes)
    }

    /// `GET /api/classes/{id}`.
    pub async fn class(&self, id: i64) -> Result<ClassDetail, ClientError> {
        self.send(self.request(Method::GET, &format!("/api/classes/{id}")))
            .await
    }

    /// `GET /api/jobs/{id}` with at most one child: enough to tell whether it has children, and
    /// cheap to poll.
    pub async fn job(&self, id: Uuid) -> Result<Job, ClientError> {
        self.send(self.request(Method::GET, &format!("/api/jobs/{id}?children_limit=1")))
            .await
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| unreachable(&self.base, &e))?;
        let url = request.url().to_string();
        let response = client
            .execute(request)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| unreachable(&url, &e))?;
        let unexpected = |detail: String| ClientError::Unexpected {
            url: url.clone(),
            status: status.as_u16(),
            detail,
        };
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| unexpected(e.to_string()));
        }
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(e) => Err(ClientError::Api {
                status: status.as_u16(),
                message: e.error,
                code: e.code,
                field: e.field,
            }),
            Err(_) => Err(unexpected(
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            )),
        }
    }
}

/// A transport error, with every cause spelled out.
fn unreachable(url: &str, error: &reqwest::Error) -> ClientError {
    let mut reason = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        reason.push_str(": ");
        reason.push_str(&c.to_string());
        cause = c.source();
    }
    ClientError::Unreachable {
        url: url.to_string(),
        reason,
    }
}
