//! Errors of the Proxmox client and whether retrying can help (`is_transient`).
//!
//! Classification rules (checked in this order):
//! 1. Transport: connection failures, timeouts and broken connections are transient; TLS
//!    certificate problems, undecodable bodies, bad configuration and invalid requests are not.
//! 2. HTTP status: 429, 502, 503, 504 and 595/596 (pveproxy cannot reach the node) are transient;
//!    400 (parameter verification), 401/403 (authentication, permission), 404, 405 and 501 are
//!    permanent whatever the text says.
//! 3. Any other status (mostly PVE's 500 with the error text as reason phrase or `message`), and
//!    every failed task's exitstatus, go by their text ([`message_is_transient`]): permanent
//!    markers first ("does not exist", "already exists", "not running", permission, …), then
//!    transient markers (lock and quorum timeouts, `VM is locked (…)`); anything else is permanent.
//!
//! `VM is locked (<lock>)` counts as transient: PVE config locks are held by running tasks
//! (`clone`, `backup`, `snapshot`, …) and clear when they end. A stale lock left by a crashed task
//! never clears; the caller's retry limit bounds that case, and an operator runs `qm unlock`.
//! `VM quit/powerdown failed - got timeout` is permanent although it says "timeout": the guest
//! ignored the ACPI/agent shutdown request and will do so again; the caller should stop it instead.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where a failed request went, for logs and for callers that act on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// HTTP method (`GET`, `POST`, …).
    pub method: String,
    /// API path below `/api2/json`, with parameters filled in.
    pub path: String,
    /// Node named in the path, if any.
    pub node: Option<String>,
    /// VM id named in the path, if any.
    pub vmid: Option<u32>,
    /// Task UPID named in the path, if any.
    pub upid: Option<String>,
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Everything that can go wrong talking to Proxmox VE. Secrets never appear in these values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxmoxError {
    /// PVE answered with an HTTP error status.
    #[error("{ctx}: HTTP {status}: {message}{}", format_param_errors(.errors))]
    Api {
        /// The request.
        ctx: Box<RequestContext>,
        /// HTTP status code.
        status: u16,
        /// PVE's message: the JSON `message`, else the reason phrase, else the canonical reason.
        message: String,
        /// Per-parameter errors of a 400 "Parameter verification failed.".
        errors: BTreeMap<String, String>,
    },
    /// The credentials were refused (HTTP 401, or a login that gave no ticket).
    #[error("{ctx}: authentication as {identity} failed (HTTP {status}: {message}); check the user or token id and its secret")]
    AuthFailed {
        /// The request.
        ctx: Box<RequestContext>,
        /// User (`root@pam`) or token id (`root@pam!labfleet`); never the secret.
        identity: String,
        /// HTTP status code.
        status: u16,
        /// PVE's message.
        message: String,
    },
    /// No connection could be made (refused, unreachable, DNS).
    #[error("{ctx}: cannot connect: {detail}")]
    Connect {
        /// The request.
        ctx: Box<RequestContext>,
        /// The cause chain as text.
        detail: String,
    },
    /// The request timed out.
    #[error("{ctx}: request timed out: {detail}")]
    Timeout {
        /// The request.
        ctx: Box<RequestContext>,
        /// The cause chain as text.
        detail: String,
    },
    /// The server's certificate was not accepted.
    #[error("{ctx}: TLS certificate problem: {detail}; for a node with a self-signed certificate set verify_ssl=false or pin its SHA-256 fingerprint (tls_fingerprint)")]
    Tls {
        /// The request.
        ctx: Box<RequestContext>,
        /// What the verifier said.
        detail: String,
    },
    /// The connection broke while sending or receiving.
    #[error("{ctx}: HTTP transport error: {detail}")]
    Transport {
        /// The request.
        ctx: Box<RequestContext>,
        /// The cause chain as text.
        detail: String,
    },
    /// The response body did not have the expected shape.
    #[error("{ctx}: cannot decode response: {detail}")]
    Decode {
        /// The request.
        ctx: Box<RequestContext>,
        /// The serde error.
        detail: String,
    },
    /// The client refused to send a request that PVE's schema would reject.
    #[error("{ctx}: invalid request: {detail}")]
    InvalidRequest {
        /// The request.
        ctx: Box<RequestContext>,
        /// Which parameter is wrong and why.
        detail: String,
    },
    /// A worker task ended with an error; `exitstatus` is PVE's error text.
    #[error("task {task_type} {id} on node {node} failed: {exitstatus} ({upid})")]
    TaskFailed {
        /// The task.
        upid: String,
        /// Node that ran it.
        node: String,
        /// Task type (`qmclone`, `qmstart`, …).
        task_type: String,
        /// Task id (for `qmclone` the SOURCE vmid).
        id: String,
        /// PVE's exitstatus.
        exitstatus: String,
    },
    /// A task was still running when `wait_task` gave up.
    #[error("task {upid} still running after {waited:?}")]
    TaskTimeout {
        /// The task.
        upid: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A string is not a valid UPID.
    #[error("invalid UPID {value:?}")]
    InvalidUpid {
        /// The string.
        value: String,
    },
    /// The client configuration is unusable (bad URL, bad fingerprint).
    #[error("invalid Proxmox client configuration: {0}")]
    Config(String),
}

fn format_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

impl ProxmoxError {
    /// Whether the same call may succeed later (see the module docs for the rules).
    pub fn is_transient(&self) -> bool {
        match self {
            ProxmoxError::Api {
                status,
                message,
                errors,
                ..
            } => status_is_transient(*status, message, errors),
            ProxmoxError::Connect { .. }
            | ProxmoxError::Timeout { .. }
            | ProxmoxError::Transport { .. }
            | ProxmoxError::TaskTimeout { .. } => true,
            ProxmoxError::TaskFailed { exitstatus, .. } => message_is_transient(exitstatus),
            ProxmoxError::AuthFailed { .. }
            | ProxmoxError::Tls { .. }
            | ProxmoxError::Decode { .. }
            | ProxmoxError::InvalidRequest { .. }
            | ProxmoxError::InvalidUpid { .. }
            | ProxmoxError::Config(_) => false,
        }
    }

    /// The HTTP status of an API error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProxmoxError::Api { status, .. } | ProxmoxError::AuthFailed { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// PVE's own error text (API message or task exitstatus), if there is one.
    pub fn pve_message(&self) -> Option<&str> {
        match self {
            ProxmoxError::Api { message, .. } | ProxmoxError::AuthFailed { message, .. } => {
                Some(message)
            }
            ProxmoxError::TaskFailed { exitstatus, .. } => Some(exitstatus),
            _ => None,
        }
    }

    /// Whether PVE said the object is missing ("does not exist", "no such …").
    pub fn is_not_found(&self) -> bool {
        self.all_text()
            .is_some_and(|t| t.contains("does not exist") || t.contains("no such"))
    }

    /// Whether PVE said the object already exists (e.g. a VMID taken by a racing caller).
    pub fn is_already_exists(&self) -> bool {
        self.all_text()
            .is_some_and(|t| t.contains("already exists") || t.contains("file exists"))
    }

    fn all_text(&self) -> Option<String> {
        match self {
            ProxmoxError::Api {
                message, errors, ..
            } => {
                let mut t = message.to_lowercase();
                for v in errors.values() {
                    t.push(' ');
                    t.push_str(&v.to_lowercase());
                }
                Some(t)
            }
            ProxmoxError::TaskFailed { exitstatus, .. } => Some(exitstatus.to_lowercase()),
            _ => None,
        }
    }
}

/// Text that makes an error permanent even if it also mentions a timeout.
const PERMANENT_MARKERS: &[&str] = &[
    "does not exist",
    "no such",
    "already exists",
    "file exists",
    "not running",
    "already running",
    "permission check failed",
    "permission denied",
    "parameter verification failed",
    "not allowed",
    "you can't",
    "powerdown failed",
    "uses local storage",
    "unexpected status",
    "interrupted by signal",
];

/// Text of contention or unavailability that clears by itself.
const TRANSIENT_MARKERS: &[&str] = &[
    "got timeout",
    "lock request timeout",
    "locked command timed out",
    "can't lock file",
    "vm is locked",
    "no quorum",
    "cluster not ready",
    "timed out",
    "timeout",
    "connection refused",
    "no route to host",
    "temporarily unavailable",
    "try again",
];

/// Classifies PVE error text (a 500's message or a task's exitstatus) by the module's rules.
pub fn message_is_transient(text: &str) -> bool {
    let t = text.to_lowercase();
    if PERMANENT_MARKERS.iter().any(|m| t.contains(m)) {
        return false;
    }
    TRANSIENT_MARKERS.iter().any(|m| t.contains(m))
}

fn status_is_transient(status: u16, message: &str, errors: &BTreeMap<String, String>) -> bool {
    match status {
        429 | 502 | 503 | 504 | 595 | 596 => true,
        400..=499 | 501 => false,
        _ => {
            errors.is_empty() && message_is_transient(message)
                || errors.values().any(|e| message_is_transient(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> ProxmoxError {
        ProxmoxError::Api {
            ctx: Box::default(),
            status,
            message: message.to_string(),
            errors: BTreeMap::new(),
        }
    }

    fn task(exitstatus: &str) -> ProxmoxError {
        ProxmoxError::TaskFailed {
            upid: "UPID:pve1:00000001:00000002:00000003:qmclone:100:root@pam:".into(),
            node: "pve1".into(),
            task_type: "qmclone".into(),
            id: "100".into(),
            exitstatus: exitstatus.into(),
        }
    }

    #[test]
    fn lock_and_quorum_500s_are_transient() {
        for m in [
            "can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout",
            "cfs-lock 'storage-ceph' error: got lock request timeout",
            "'storage-nfs'-locked command timed out - aborting",
            "VM is locked (clone)",
            "no quorum!",
        ] {
            assert!(api(500, m).is_transient(), "{m}");
        }
    }

    #[test]
    fn availability_statuses_are_transient() {
        for s in [429, 502, 503, 504, 595] {
            assert!(api(s, "whatever").is_transient(), "{s}");
        }
    }

    #[test]
    fn parameter_permission_and_missing_errors_are_permanent() {
        let mut errors = BTreeMap::new();
        errors.insert("vmid".to_string(), "VM 218 already exists".to_string());
        let e = ProxmoxError::Api {
            ctx: Box::default(),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert!(!e.is_transient());
        assert!(e.is_already_exists());
        assert!(!api(400, "got timeout").is_transient());
        assert!(!api(401, "authentication failure").is_transient());
        assert!(!api(403, "Permission check failed (/vms/100, VM.Allocate)").is_transient());
        let missing = api(
            500,
            "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist",
        );
        assert!(!missing.is_transient());
        assert!(missing.is_not_found());
        assert!(!api(500, "VM 100 not running").is_transient());
        assert!(!api(500, "unable to create VM 133: config file already exists").is_transient());
        assert!(!api(500, "Internal Server Error").is_transient());
        assert!(!api(501, "Method 'GET /foo' not implemented").is_transient());
    }

    #[test]
    fn task_failures_are_classified_by_exitstatus() {
        assert!(task("clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout").is_transient());
        assert!(
            task("clone failed: cfs-lock 'storage-drbd' error: got lock request timeout")
                .is_transient()
        );
        assert!(task("VM is locked (backup)").is_transient());
        assert!(!task("snapshot 'base' does not exist").is_transient());
        assert!(!task("VM quit/powerdown failed - got timeout").is_transient());
        assert!(!task("unexpected status").is_transient());
        assert!(!task("can't clone VM to node 'pve2' (VM uses local storage)").is_transient());
    }

    #[test]
    fn transport_errors_are_transient_and_config_errors_are_not() {
        let ctx = Box::<RequestContext>::default();
        assert!(ProxmoxError::Connect {
            ctx: ctx.clone(),
            detail: "refused".into()
        }
        .is_transient());
        assert!(ProxmoxError::Timeout {
            ctx: ctx.clone(),
            detail: "30s".into()
        }
        .is_transient());
        assert!(!ProxmoxError::Tls {
            ctx,
            detail: "unknown issuer".into()
        }
        .is_transient());
    }

    #[test]
    fn api_error_display_keeps_message_and_parameter_errors() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "full".to_string(),
            "type check ('boolean') failed - got 'true'".into(),
        );
        let e = ProxmoxError::Api {
            ctx: Box::new(RequestContext {
                method: "POST".into(),
                path: "/nodes/pve1/qemu/100/clone".into(),
                ..Default::default()
            }),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(
            e.to_string(),
            "POST /nodes/pve1/qemu/100/clone: HTTP 400: Parameter verification failed. (full: type check ('boolean') failed - got 'true')"
        );
    }
}
