//! The REST API under /api2/json: routing by the vendored schema, parameter validation, auth,
//! fault injection, the `{"data": …}` envelope and PVE's error shapes: 400 with an `errors` map
//! for bad parameters, otherwise the message as HTTP reason phrase and as `message` in the body
//! (`docs/proxmox.md`, "Errors").

pub mod agent;
pub mod auth;
pub mod clone;
pub mod clone_plan;
pub mod cluster;
pub mod control;
pub mod lifecycle;
pub mod power;
pub mod qemu;
pub mod snapshot;
pub mod tasks;
pub mod volumes;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::faults::RequestFault;
use crate::schema::{self, ParamErrors, Params, Raw};
use crate::sim::{Sim, Vm};

/// An API failure: 400 with `errors`, 500 with a message, 401, 595, ...
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<ParamErrors>,
}

impl ApiError {
    /// A plain `die "msg\n"`: HTTP 500 with the message as reason phrase and in the body.
    pub fn fail(msg: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: msg.into(),
            errors: None,
        }
    }

    /// A parameter error (`raise_param_exc`): HTTP 400 with `errors`.
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        let mut e = ParamErrors::new();
        e.insert(name.to_string(), msg.into());
        Self::params(e)
    }

    pub fn params(errors: ParamErrors) -> Self {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }

    pub fn status(status: u16, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            message: msg.into(),
            errors: None,
        }
    }
}

impl From<String> for ApiError {
    fn from(s: String) -> Self {
        ApiError::fail(s)
    }
}

pub type ApiResult = Result<Value, ApiError>;

/// A handler that needs `total` beside `data` in the envelope returns `{TOTAL_KEY, DATA_KEY}`.
pub const TOTAL_KEY: &str = "\u{0}total";
pub const DATA_KEY: &str = "\u{0}data";

/// Wraps a handler's value in PVE's envelope.
fn envelope(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.contains_key(TOTAL_KEY) => {
            let total = m.remove(TOTAL_KEY).unwrap_or(Value::Null);
            let data = m.remove(DATA_KEY).unwrap_or(Value::Null);
            json!({ "data": data, "total": total })
        }
        v => json!({ "data": v }),
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct User {
    /// `root@pam` or `root@pam!labfleet`.
    pub id: String,
}

/// A request as the HTTP layer hands it over.
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

/// What the HTTP layer sends back.
pub struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    pub body: Vec<u8>,
    /// Close the connection without answering (fault `drop_connection`).
    pub drop: bool,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Reply {
            status,
            reason: None,
            body: serde_json::to_vec(body).unwrap_or_default(),
            drop: false,
        }
    }

    pub fn error(e: &ApiError) -> Self {
        let mut body = json!({"data": null});
        if let Some(errs) = &e.errors {
            body["errors"] = json!(errs);
        }
        if !e.message.is_empty() {
            body["message"] = json!(e.message);
        }
        let mut r = Reply::json(e.status, &body);
        // PVE sends the message as the reason phrase, which can only be one line of visible text
        let reason: String = e
            .message
            .trim_end()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        r.reason = Some(reason);
        r
    }
}

/// Every (method, path) the simulator implements; each exists in the vendored schema.
pub const HANDLED: &[(&str, &str)] = &[
    ("POST", "/access/ticket"),
    ("GET", "/version"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/status"),
    ("GET", "/cluster/resources"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/status"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reset"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/suspend"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/resume"),
    ("GET", "/nodes/{node}/qemu/{vmid}/snapshot"),
    ("POST", "/nodes/{node}/qemu/{vmid}/snapshot"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}"),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/template"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/rrddata"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("DELETE", "/nodes/{node}/tasks/{upid}"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("GET", "/nodes/{node}/lxc"),
    ("GET", "/pools"),
    ("POST", "/pools"),
    ("PUT", "/pools"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/exec"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/info"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/shutdown"),
];

async fn route_call(
    sim: &Arc<Sim>,
    user: &User,
    method: &str,
    template: &str,
    p: Params,
) -> ApiResult {
    if !HANDLED.contains(&(method, template)) {
        return Err(not_implemented(method, template));
    }
    match (method, template) {
        ("GET", "/version") => Ok(cluster::version()),
        ("GET", "/nodes") => Ok(cluster::nodes(sim)),
        ("GET", "/nodes/{node}/status") => Ok(cluster::node_status(sim, &p)),
        ("GET", "/cluster/resources") => Ok(cluster::resources(sim, &p)),
        ("GET", "/cluster/nextid") => cluster::nextid(sim, &p),
        ("GET", "/cluster/status") => Ok(cluster::status(sim)),
        ("GET", "/nodes/{node}/qemu") => Ok(qemu::list(sim, &p)),
        ("POST", "/nodes/{node}/qemu") => lifecycle::create(sim, user, p).await,
        ("DELETE", "/nodes/{node}/qemu/{vmid}") => lifecycle::destroy(sim, user, p).await,
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => clone::clone(sim, user, p).await,
        ("GET", "/nodes/{node}/qemu/{vmid}/config") => qemu::config_get(sim, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/config") => qemu::config_set(sim, user, p, false).await,
        ("PUT", "/nodes/{node}/qemu/{vmid}/config") => qemu::config_set(sim, user, p, true).await,
        ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => power::current(sim, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => power::start(sim, user, p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => power::stop(sim, user, p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => power::shutdown(sim, user, p),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot") => {
            power::simple(sim, user, p, "qmreboot")
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/status/reset") => {
            power::simple(sim, user, p, "qmreset")
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/status/suspend") => {
            power::simple(sim, user, p, "qmpause")
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/status/resume") => {
            power::simple(sim, user, p, "qmresume")
        }
        ("GET", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshot::list(sim, &p),
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshot::create(sim, user, p),
        ("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}") => {
            snapshot::delete(sim, user, p)
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback") => {
            snapshot::rollback(sim, user, p)
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/template") => qemu::template(sim, user, p).await,
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => qemu::resize(sim, user, p),
        ("GET", "/nodes/{node}/qemu/{vmid}/rrddata") => cluster::rrddata(sim, &p),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => tasks::status(sim, &p),
        ("GET", "/nodes/{node}/tasks/{upid}/log") => tasks::log(sim, &p),
        ("DELETE", "/nodes/{node}/tasks/{upid}") => tasks::stop(sim, &p),
        ("GET", "/nodes/{node}/storage") => Ok(cluster::storage_list(sim, &p)),
        ("GET", "/nodes/{node}/storage/{storage}/content") => cluster::storage_content(sim, &p),
        ("GET", "/nodes/{node}/lxc") => Ok(json!([])),
        ("GET", "/pools") => cluster::pools_get(sim, &p),
        ("POST", "/pools") => cluster::pools_post(sim, &p),
        ("PUT", "/pools") => cluster::pools_put(sim, &p),
        (m, t) if t.contains("/agent/") => agent::call(sim, m, t, &p),
        _ => Err(not_implemented(method, template)),
    }
}

fn not_implemented(method: &str, path: &str) -> ApiError {
    ApiError::status(501, format!("Method '{method} {path}' not implemented"))
}

/// Calls an API method as `user` with already-split parameters (used by HTTP and by SSH `qm`).
pub async fn call(
    sim: &Arc<Sim>,
    user: &User,
    method: &str,
    path: &str,
    given: Vec<(String, Raw)>,
) -> ApiResult {
    let (route, path_params) = schema::schema()
        .find(path)
        .ok_or_else(|| not_implemented(method, path))?;
    let m = route
        .methods
        .get(method)
        .ok_or_else(|| not_implemented(method, path))?;
    let mut all: Vec<(String, Raw)> = path_params
        .into_iter()
        .map(|(k, v)| (k, Raw::Text(v)))
        .collect();
    all.extend(given);
    let params = schema::validate(m, &all).map_err(ApiError::params)?;
    if let Some(node) = params.get("node") {
        if !sim.is_node(node) {
            return Err(ApiError::fail(format!(
                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            )));
        }
        if sim.node_offline(node) {
            return Err(ApiError::status(595, "No route to host"));
        }
    }
    if method != "GET" && !sim.quorate() {
        return Err(ApiError::fail("cluster not ready - no quorum?"));
    }
    route_call(sim, user, method, &route.template, params).await
}

fn parse_body(req: &Req) -> Result<Vec<(String, Raw)>, ApiError> {
    let mut out = Vec::new();
    if let Some(q) = &req.query {
        out.extend(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), Raw::Text(v.into_owned()))),
        );
    }
    if req.method == "POST" || req.method == "PUT" {
        let ct = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/json") {
            if !req.body.is_empty() {
                let v: Value = serde_json::from_slice(&req.body)
                    .map_err(|e| ApiError::status(400, format!("malformed JSON body: {e}")))?;
                if let Value::Object(m) = v {
                    out.extend(m.into_iter().map(|(k, v)| (k, Raw::Json(v))));
                }
            }
        } else {
            out.extend(
                form_urlencoded::parse(&req.body)
                    .map(|(k, v)| (k.into_owned(), Raw::Text(v.into_owned()))),
            );
        }
    }
    Ok(out)
}

/// Handles one HTTP request.
pub async fn handle(sim: &Arc<Sim>, req: Req) -> Reply {
    sim.stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.path.starts_with("/_sim/") {
        return match control::handle(sim, &req).await {
            Ok(v) => Reply::json(200, &json!({ "data": v })),
            Err(e) => Reply::error(&e),
        };
    }
    let Some(path) = req.path.strip_prefix("/api2/json") else {
        return Reply::error(&not_implemented(&req.method, &req.path));
    };
    let path = if path.is_empty() { "/" } else { path };

    let (fault, slow) = sim.faults().for_request();
    if let Some(ms) = slow {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    match fault {
        RequestFault::Drop => {
            return Reply {
                status: 500,
                reason: None,
                body: Vec::new(),
                drop: true,
            }
        }
        RequestFault::Http500 => {
            return Reply::error(&ApiError::fail(
                "Can't connect to 127.0.0.1:85 (Connection refused)",
            ))
        }
        RequestFault::Http503 => {
            return Reply::error(&ApiError::status(503, "Service Unavailable"))
        }
        RequestFault::None => {}
    }

    let given = match parse_body(&req) {
        Ok(g) => g,
        Err(e) => return Reply::error(&e),
    };
    let result = if req.method == "POST" && path == "/access/ticket" {
        auth::create_ticket(sim, &req, given).await
    } else {
        match auth::authenticate(sim, &req).await {
            Ok(user) => call(sim, &user, &req.method, path, given).await,
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(v) => Reply::json(200, &envelope(v)),
        Err(e) => Reply::error(&e),
    }
}

// ---- helpers shared by the handlers ----

pub fn p_str<'a>(p: &'a Params, k: &str) -> &'a str {
    p.get(k).map(String::as_str).unwrap_or("")
}

pub fn p_u32(p: &Params, k: &str) -> u32 {
    p.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn p_bool(p: &Params, k: &str) -> Option<bool> {
    p.get(k).map(|v| v == "1")
}

pub fn conf_missing(node: &str, vmid: u32) -> String {
    format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
}

/// The VM `vmid` if its config is on `node` (else PVE's "does not exist" error).
pub fn vm_on(sim: &Sim, node: &str, vmid: u32) -> Result<Vm, ApiError> {
    sim.state()
        .vms
        .get(&vmid)
        .filter(|v| v.node == node)
        .cloned()
        .ok_or_else(|| ApiError::fail(conf_missing(node, vmid)))
}

/// `check_lock`: a config lock refuses the operation.
pub fn check_lock(vm: &Vm) -> Result<(), String> {
    match vm.conf.lock() {
        Some(l) => Err(format!("VM is locked ({l})")),
        None => Ok(()),
    }
}
