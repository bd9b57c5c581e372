//! Authentication: API tokens (preferred, stateless, no CSRF) and tickets from
//! `POST /access/ticket` (cookie `PVEAuthCookie`, header `CSRFPreventionToken` on writes),
//! renewed before PVE's 2 h ticket lifetime runs out and once after a 401.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{ProxmoxError, RequestContext};

/// PVE tickets live 2 h; renewing after 1 h 45 leaves room for clock skew and slow calls.
pub const DEFAULT_TICKET_RENEW_AFTER: Duration = Duration::from_secs(105 * 60);

/// How the client proves who it is. Debug output never shows a secret.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
    Token {
        /// `USER@REALM!TOKENID`.
        token_id: String,
        /// The token's UUID secret.
        secret: SecretString,
    },
    /// Ticket login with a user's password.
    Password {
        /// `USER@REALM`.
        username: String,
        /// The password.
        password: SecretString,
    },
}

impl Credentials {
    /// Token credentials.
    pub fn token(token_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credentials::Token {
            token_id: token_id.into(),
            secret: SecretString::from(secret.into()),
        }
    }

    /// Password credentials (ticket auth).
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Password {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }

    /// The user or token id, safe to show.
    pub fn identity(&self) -> &str {
        match self {
            Credentials::Token { token_id, .. } => token_id,
            Credentials::Password { username, .. } => username,
        }
    }

    /// Checks the token id shape `USER@REALM!TOKENID` or the user shape `USER@REALM`.
    pub fn validate(&self) -> Result<(), ProxmoxError> {
        let (id, token) = match self {
            Credentials::Token { token_id, .. } => (token_id.as_str(), true),
            Credentials::Password { username, .. } => (username.as_str(), false),
        };
        let (user_realm, token_name) = match id.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (id, None),
        };
        let ok_user = user_realm
            .split_once('@')
            .is_some_and(|(u, r)| !u.is_empty() && !r.is_empty() && !r.contains('@'));
        let ok_token = match (token, token_name) {
            (true, Some(t)) => !t.is_empty() && !t.contains(['=', ' ']),
            (false, None) => true,
            _ => false,
        };
        if ok_user && ok_token {
            Ok(())
        } else if token {
            Err(ProxmoxError::Config(format!(
                "token id {id:?} must look like USER@REALM!TOKENID"
            )))
        } else {
            Err(ProxmoxError::Config(format!(
                "user {id:?} must look like USER@REALM"
            )))
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token { token_id, .. } => f
                .debug_struct("Token")
                .field("token_id", token_id)
                .field("secret", &"[REDACTED]")
                .finish(),
            Credentials::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
        }
    }
}

/// A ticket and its CSRF token, with when we got it.
pub(crate) struct Ticket {
    value: SecretString,
    csrf: SecretString,
    obtained: Instant,
}

impl Ticket {
    pub(crate) fn is_fresh(&self, renew_after: Duration) -> bool {
        self.obtained.elapsed() < renew_after
    }
}

/// `POST /access/ticket` response (only the fields we use).
#[derive(Deserialize)]
pub(crate) struct TicketResponse {
    ticket: Option<String>,
    #[serde(rename = "CSRFPreventionToken")]
    csrf: Option<String>,
    #[serde(rename = "NeedTFA", default)]
    need_tfa: Option<serde_json::Value>,
}

impl TicketResponse {
    pub(crate) fn into_ticket(
        self,
        ctx: &RequestContext,
        identity: &str,
    ) -> Result<Ticket, ProxmoxError> {
        let failed = |message: &str| ProxmoxError::AuthFailed {
            ctx: Box::new(ctx.clone()),
            identity: identity.to_string(),
            status: 200,
            message: message.to_string(),
        };
        if self.need_tfa.is_some() {
            return Err(failed("the user needs two-factor authentication, which this client does not do; use an API token"));
        }
        let value = self
            .ticket
            .ok_or_else(|| failed("no ticket in the response"))?;
        let csrf = self
            .csrf
            .ok_or_else(|| failed("no CSRFPreventionToken in the response"))?;
        Ok(Ticket {
            value: SecretString::from(value),
            csrf: SecretString::from(csrf),
            obtained: Instant::now(),
        })
    }
}

/// Characters kept as is in the cookie value; everything else is percent-encoded (PVE
/// URI-unescapes the cookie, and base64 signatures carry `+`, `/` and `=`).
fn cookie_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:@!".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sensitive(value: String) -> Result<HeaderValue, ProxmoxError> {
    let mut v = HeaderValue::from_str(&value).map_err(|_| {
        ProxmoxError::Config("credentials contain characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Headers for a token request.
pub(crate) fn token_headers(
    token_id: &str,
    secret: &SecretString,
) -> Result<HeaderMap, ProxmoxError> {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        sensitive(format!("PVEAPIToken={token_id}={}", secret.expose_secret()))?,
    );
    Ok(h)
}

/// Headers for a ticket request; writes also carry the CSRF token.
pub(crate) fn ticket_headers(ticket: &Ticket, write: bool) -> Result<HeaderMap, ProxmoxError> {
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        sensitive(format!(
            "PVEAuthCookie={}",
            cookie_escape(ticket.value.expose_secret())
        ))?,
    );
    if write {
        h.insert(
            "CSRFPreventionToken",
            sensitive(ticket.csrf.expose_secret().to_string())?,
        );
    }
    Ok(h)
}

/// Login form fields.
pub(crate) fn login_form(username: &str, password: &SecretString) -> Vec<(String, String)> {
    vec![
        ("username".to_string(), username.to_string()),
        ("password".to_string(), password.expose_secret().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let t = Credentials::token("root@pam!labfleet", "5ecr3t-uuid");
        let p = Credentials::password("root@pam", "hunter2");
        assert!(!format!("{t:?}").contains("5ecr3t"));
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(format!("{t:?}").contains("root@pam!labfleet"));
    }

    #[test]
    fn token_header_has_pve_format_and_is_sensitive() {
        let h = token_headers("root@pam!ci", &SecretString::from("abc-123")).unwrap();
        let v = h.get(AUTHORIZATION).unwrap();
        assert_eq!(v.to_str().unwrap(), "PVEAPIToken=root@pam!ci=abc-123");
        assert!(v.is_sensitive());
    }

    #[test]
    fn ticket_headers_escape_the_cookie_and_add_csrf_on_writes() {
        let ticket = TicketResponse {
            ticket: Some("PVE:root@pam:66DC5987::ab+c/d==".into()),
            csrf: Some("66DC5987:sig".into()),
            need_tfa: None,
        }
        .into_ticket(&RequestContext::default(), "root@pam")
        .unwrap();
        let get = ticket_headers(&ticket, false).unwrap();
        assert_eq!(
            get.get(COOKIE).unwrap().to_str().unwrap(),
            "PVEAuthCookie=PVE:root@pam:66DC5987::ab%2Bc%2Fd%3D%3D"
        );
        assert!(get.get("CSRFPreventionToken").is_none());
        let post = ticket_headers(&ticket, true).unwrap();
        assert_eq!(
            post.get("CSRFPreventionToken").unwrap().to_str().unwrap(),
            "66DC5987:sig"
        );
        assert!(ticket.is_fresh(DEFAULT_TICKET_RENEW_AFTER));
        assert!(!ticket.is_fresh(Duration::ZERO));
    }

    #[test]
    fn identities_are_validated() {
        assert!(Credentials::token("root@pam!labfleet", "x")
            .validate()
            .is_ok());
        assert!(Credentials::token("root@pam", "x").validate().is_err());
        assert!(Credentials::token("root!x", "x").validate().is_err());
        assert!(Credentials::password("root@pam", "x").validate().is_ok());
        assert!(Credentials::password("root", "x").validate().is_err());
    }
}
