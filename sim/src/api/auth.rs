//! Ticket login, CSRF tokens and API tokens, as PVE does them: tickets
//! `PVE:USER@REALM:HEXTIME::SIG`, CSRF enforced on writes made with a ticket, 2 h lifetime, API
//! tokens without CSRF, 401 after a (scaled) 3 s delay (`docs/proxmox.md`, "Authentication").

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiResult, Req, User};
use crate::schema::{self, Raw};
use crate::sim::{Sim, TOKEN_ID};

const ROOT: &str = "root@pam";

fn sign(sim: &Sim, what: &str) -> String {
    let mut h = Sha256::new();
    h.update(sim.secrets.ticket_key.as_bytes());
    h.update(b"\0");
    h.update(what.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(h.finalize())
}

pub fn make_ticket(sim: &Sim, user: &str, now: i64) -> String {
    let plain = format!("PVE:{user}:{now:08X}");
    format!("{plain}::{}", sign(sim, &plain))
}

fn make_csrf(sim: &Sim, user: &str, now: i64) -> String {
    format!("{now:08X}:{}", sign(sim, &format!("csrf:{now:08X}:{user}")))
}

/// Checks a ticket; returns its user.
fn verify_ticket(sim: &Sim, ticket: &str) -> Option<String> {
    let (plain, sig) = ticket.split_once("::")?;
    let mut parts = plain.split(':');
    let (Some("PVE"), Some(user), Some(time), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if sign(sim, plain) != sig {
        return None;
    }
    let t = i64::from_str_radix(time, 16).ok()?;
    let age = chrono::Utc::now().timestamp() - t;
    (age >= -300 && age < sim.ticket_lifetime.as_secs() as i64).then(|| user.to_string())
}

fn verify_csrf(sim: &Sim, token: &str, user: &str) -> bool {
    let Some((time, _)) = token.split_once(':') else {
        return false;
    };
    let Ok(t) = i64::from_str_radix(time, 16) else {
        return false;
    };
    let age = chrono::Utc::now().timestamp() - t;
    age >= -300 && age < sim.ticket_lifetime.as_secs() as i64 && make_csrf(sim, user, t) == token
}

/// PVE delays every unauthorized answer by 3 s; the simulator scales that.
async fn unauthorized(sim: &Sim, msg: &str) -> ApiError {
    let d = sim.scaled(3.0);
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
    ApiError::status(401, msg)
}

/// `POST /access/ticket`.
pub async fn create_ticket(sim: &Arc<Sim>, _req: &Req, given: Vec<(String, Raw)>) -> ApiResult {
    let (route, _) = schema::schema()
        .find("/access/ticket")
        .ok_or_else(|| ApiError::fail("schema lost /access/ticket"))?;
    let m = route
        .methods
        .get("POST")
        .ok_or_else(|| ApiError::fail("schema lost POST /access/ticket"))?;
    let p = schema::validate(m, &given).map_err(ApiError::params)?;
    let mut username = p.get("username").cloned().unwrap_or_default();
    if let Some(realm) = p.get("realm") {
        if !username.contains('@') {
            username = format!("{username}@{realm}");
        }
    }
    let password = p.get("password").cloned().unwrap_or_default();
    let ok = username == ROOT
        && (password == sim.secrets.root_password
            || verify_ticket(sim, &password).as_deref() == Some(ROOT));
    if !ok {
        return Err(unauthorized(sim, "authentication failure").await);
    }
    let now = chrono::Utc::now().timestamp();
    Ok(json!({
        "username": ROOT,
        "ticket": make_ticket(sim, ROOT, now),
        "CSRFPreventionToken": make_csrf(sim, ROOT, now),
        "clustername": "labfleet-sim",
        "cap": {},
    }))
}

fn header<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates a request by API token or ticket (+ CSRF on writes).
pub async fn authenticate(sim: &Arc<Sim>, req: &Req) -> Result<User, ApiError> {
    let authz = header(req, "authorization").unwrap_or("");
    // `(?:^|\s)PVEAPIToken(?:=| )([^;]*)`, split on the last '='
    if let Some(pos) = authz.find("PVEAPIToken") {
        let at_start = pos == 0 || authz[..pos].ends_with(char::is_whitespace);
        let rest = &authz[pos + "PVEAPIToken".len()..];
        if at_start && (rest.starts_with('=') || rest.starts_with(' ')) {
            let value = rest[1..].split(';').next().unwrap_or("").trim();
            if let Some((id, secret)) = value.rsplit_once('=') {
                if id == TOKEN_ID && secret == sim.secrets.token_secret {
                    return Ok(User {
                        id: TOKEN_ID.into(),
                    });
                }
            }
            return Err(unauthorized(sim, "invalid token value!").await);
        }
    }
    let from_cookie = header(req, "cookie").and_then(|c| {
        c.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == "PVEAuthCookie")
            .map(|(_, v)| v.to_string())
    });
    let from_header = authz.strip_prefix("PVEAuthCookie=").map(str::to_string);
    let Some(raw) = from_cookie.or(from_header) else {
        return Err(unauthorized(sim, "No ticket").await);
    };
    let ticket = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned();
    let Some(user) = verify_ticket(sim, &ticket) else {
        return Err(unauthorized(sim, "invalid ticket").await);
    };
    if req.method != "GET" {
        let csrf = header(req, "csrfpreventiontoken").unwrap_or("");
        if !verify_csrf(sim, csrf, &user) {
            return Err(unauthorized(sim, "Permission denied - invalid csrf token").await);
        }
    }
    Ok(User { id: user })
}
