//! What an admin sends to create or update a cluster, and its validation. `POST` needs the
//! identity and one way to log in; `PUT` changes only the fields it carries (an omitted or empty
//! secret keeps the stored one, as the older lab tool's settings screen expects).

use labfleet_entities::{cluster, idle};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A field that is missing (400) or has an unacceptable value (422).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// The request field to blame.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
    /// True when the field is absent rather than wrong.
    pub missing: bool,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InputError {
    InputError {
        field,
        message: format!("{field}: {}", message.into()),
        missing: false,
    }
}

fn missing(field: &'static str) -> InputError {
    InputError {
        field,
        message: format!("{field} is required"),
        missing: true,
    }
}

/// Body of `POST /api/cluster-config` and `PUT /api/cluster-config/{db_id}` (field names as in
/// the older lab tool's cluster API, plus token, TLS pinning, SSH and VMID range).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInput {
    /// Unique slug (`cluster1`, `prod-cluster`).
    pub cluster_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Host name or IP address of a node's API.
    pub host: Option<String>,
    /// API port (default 8006).
    pub port: Option<i64>,
    /// Proxmox user, `USER@REALM` (default `root@pam`).
    pub user: Option<String>,
    /// Password of `user` (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// API token id, `USER@REALM!TOKENID`.
    pub token_id: Option<String>,
    /// API token secret (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    pub token_secret: Option<SecretString>,
    /// Verify the API's TLS certificate (default false, as self-signed nodes are the norm).
    pub verify_ssl: Option<bool>,
    /// SHA-256 fingerprint of the API certificate to trust (`AB:CD:…`).
    pub tls_fingerprint: Option<String>,
    /// SSH user for config clones (default `root`).
    pub ssh_user: Option<String>,
    /// SSH port (default 22).
    pub ssh_port: Option<i64>,
    /// SSH password (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    pub ssh_password: Option<SecretString>,
    /// SSH private key, OpenSSH or PEM text (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    pub ssh_private_key: Option<SecretString>,
    /// SHA-256 fingerprint of the nodes' SSH host key to trust.
    pub ssh_host_key_fingerprint: Option<String>,
    /// Enabled (default true).
    pub is_active: Option<bool>,
    /// The default cluster (exactly one is).
    pub is_default: Option<bool>,
    /// Deployment priority 0–100, higher preferred (default 50).
    pub priority: Option<i64>,
    /// Deploy VMs here (default true).
    pub allow_vm_deployment: Option<bool>,
    /// Sync templates from here (default true).
    pub allow_template_sync: Option<bool>,
    /// Sync ISOs from here (default true).
    pub allow_iso_sync: Option<bool>,
    /// Shut idle VMs down here (default false).
    pub auto_shutdown_enabled: Option<bool>,
    /// Storage for VM disks (e.g. `local-lvm`).
    pub default_storage: Option<String>,
    /// Storage for templates (e.g. `local`).
    pub template_storage: Option<String>,
    /// Notes.
    pub description: Option<String>,
    /// First VMID labfleet may use on this cluster (default 10000).
    pub vmid_range_start: Option<i64>,
    /// Last VMID labfleet may use on this cluster (default 19999).
    pub vmid_range_end: Option<i64>,
    /// Idle auto-shutdown: CPU percent under which a VM counts as idle (default: the setting).
    pub idle_cpu_percent: Option<f64>,
    /// Idle auto-shutdown: minutes a VM must stay idle (default: the setting).
    pub idle_minutes: Option<i64>,
}

/// New secret values to store (`None`: keep what is stored).
#[derive(Debug, Default)]
pub struct NewSecrets {
    /// Proxmox password.
    pub password: Option<SecretString>,
    /// API token secret.
    pub token_secret: Option<SecretString>,
    /// SSH password.
    pub ssh_password: Option<SecretString>,
    /// SSH private key.
    pub ssh_private_key: Option<SecretString>,
}

/// Every non-secret field, validated, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterFields {
    pub cluster_id: String,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub user: String,
    pub token_id: Option<String>,
    pub verify_ssl: bool,
    pub tls_fingerprint: Option<String>,
    pub ssh_user: String,
    pub ssh_port: i32,
    pub ssh_host_key_fingerprint: Option<String>,
    pub is_active: bool,
    pub is_default: bool,
    pub priority: i32,
    pub allow_vm_deployment: bool,
    pub allow_template_sync: bool,
    pub allow_iso_sync: bool,
    pub auto_shutdown_enabled: bool,
    pub default_storage: Option<String>,
    pub template_storage: Option<String>,
    pub description: Option<String>,
    pub vmid_range_start: i64,
    pub vmid_range_end: i64,
    pub idle_cpu_percent: Option<f64>,
    pub idle_minutes: Option<i32>,
}

impl ClusterInput {
    /// Validates the input against the stored cluster (`None` when creating) and returns the
    /// resulting fields and the secrets to replace.
    pub fn resolve(
        self,
        current: Option<&cluster::Model>,
    ) -> Result<(ClusterFields, NewSecrets), InputError> {
        let text = |v: Option<String>| v.map(|s| s.trim().to_string());
        let opt_text = |v: Option<String>| text(v).filter(|s| !s.is_empty());
        let secret = |v: Option<SecretString>| v.filter(|s| !s.expose_secret().is_empty());

        let cluster_id = match (text(self.cluster_id), current) {
            (Some(id), Some(cur)) if id != cur.cluster_id => {
                return Err(invalid(
                    "cluster_id",
                    "cannot be changed; create a new cluster instead",
                ))
            }
            (_, Some(cur)) => cur.cluster_id.clone(),
            (Some(id), None) => slug(&id)?,
            (None, None) => return Err(missing("cluster_id")),
        };
        let name = match (text(self.name), current) {
            (Some(n), _) => bounded("name", n, 1, 100)?,
            (None, Some(cur)) => cur.name.clone(),
            (None, None) => return Err(missing("name")),
        };
        let host = match (text(self.host), current) {
            (Some(h), _) => host_name(&h)?,
            (None, Some(cur)) => cur.host.clone(),
            (None, None) => return Err(missing("host")),
        };
        let user = match text(self.user) {
            Some(u) => user_at_realm(&u)?,
            None => current
                .map(|c| c.username.clone())
                .unwrap_or_else(|| "root@pam".into()),
        };
        let token_id = match text(self.token_id) {
            Some(t) if t.is_empty() => None,
            Some(t) => Some(token_id(&t)?),
            None => current.and_then(|c| c.token_id.clone()),
        };
        let secrets = NewSecrets {
            password: secret(self.password),
            token_secret: secret(self.token_secret),
            ssh_password: secret(self.ssh_password),
            ssh_private_key: secret(self.ssh_private_key),
        };
        for (field, value, max) in [
            ("password", &secrets.password, 512),
            ("token_secret", &secrets.token_secret, 512),
            ("ssh_password", &secrets.ssh_password, 512),
            ("ssh_private_key", &secrets.ssh_private_key, 16 * 1024),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.expose_secret().len() > max)
            {
                return Err(invalid(field, format!("must be at most {max} characters")));
            }
        }
        let has_password =
            secrets.password.is_some() || current.is_some_and(|c| c.password_enc.is_some());
        let has_token_secret =
            secrets.token_secret.is_some() || current.is_some_and(|c| c.token_secret_enc.is_some());
        if token_id.is_some() != has_token_secret {
            return Err(if token_id.is_some() {
                missing("token_secret")
            } else {
                missing("token_id")
            });
        }
        if !has_password && token_id.is_none() {
            return Err(InputError {
                field: "password",
                message: "password (or token_id with token_secret) is required to reach Proxmox"
                    .into(),
                missing: true,
            });
        }

        let pick_bool =
            |v: Option<bool>, cur: Option<bool>, default: bool| v.or(cur).unwrap_or(default);
        let port = range(
            "port",
            self.port,
            current.map(|c| c.port as i64),
            8006,
            1,
            65_535,
        )? as i32;
        let ssh_port = range(
            "ssh_port",
            self.ssh_port,
            current.map(|c| c.ssh_port as i64),
            22,
            1,
            65_535,
        )? as i32;
        let priority = range(
            "priority",
            self.priority,
            current.map(|c| c.priority as i64),
            50,
            0,
            100,
        )? as i32;
        let vmid_range_start = range(
            "vmid_range_start",
            self.vmid_range_start,
            current.map(|c| c.vmid_range_start),
            10_000,
            100,
            999_999_999,
        )?;
        let vmid_range_end = range(
            "vmid_range_end",
            self.vmid_range_end,
            current.map(|c| c.vmid_range_end),
            19_999,
            100,
            999_999_999,
        )?;
        if vmid_range_end < vmid_range_start {
            return Err(invalid(
                "vmid_range_end",
                "must not be below vmid_range_start",
            ));
        }
        let idle_cpu_percent = match self.idle_cpu_percent {
            Some(p) => {
                Some(idle::check_cpu_percent(p).map_err(|m| invalid("idle_cpu_percent", m))?)
            }
            None => current.and_then(|c| c.idle_cpu_percent),
        };
        let idle_minutes = match self.idle_minutes {
            Some(m) => Some(idle::check_minutes(m).map_err(|msg| invalid("idle_minutes", msg))?),
            None => current.and_then(|c| c.idle_minutes),
        };
        let keep = |v: Option<String>, cur: Option<&Option<String>>| match v {
            Some(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            None => Ok(cur.cloned().flatten()),
        };
        let tls_fingerprint = match opt_text(self.tls_fingerprint) {
            Some(f) => Some(fingerprint("tls_fingerprint", &f)?),
            None => current.and_then(|c| c.tls_fingerprint.clone()),
        };
        let default_storage = keep(self.default_storage, current.map(|c| &c.default_storage))?
            .map(|s| storage_id("default_storage", s))
            .transpose()?;
        let template_storage = keep(self.template_storage, current.map(|c| &c.template_storage))?
            .map(|s| storage_id("template_storage", s))
            .transpose()?;
        let description = keep(self.description, current.map(|c| &c.description))?;
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 2_000)
        {
            return Err(invalid("description", "must be at most 2000 characters"));
        }
        let ssh_user = match text(self.ssh_user) {
            Some(u) => bounded("ssh_user", u, 1, 64)?,
            None => current
                .map(|c| c.ssh_user.clone())
                .unwrap_or_else(|| "root".into()),
        };
        let ssh_host_key_fingerprint = match opt_text(self.ssh_host_key_fingerprint) {
            Some(f) => Some(bounded("ssh_host_key_fingerprint", f, 1, 128)?),
            None => current.and_then(|c| c.ssh_host_key_fingerprint.clone()),
        };
        let fields = ClusterFields {
            cluster_id,
            name,
            host,
            port,
            user,
            token_id,
            verify_ssl: pick_bool(self.verify_ssl, current.map(|c| c.verify_ssl), false),
            tls_fingerprint,
            ssh_user,
            ssh_port,
            ssh_host_key_fingerprint,
            is_active: pick_bool(self.is_active, current.map(|c| c.is_active), true),
            is_default: pick_bool(self.is_default, current.map(|c| c.is_default), false),
            priority,
            allow_vm_deployment: pick_bool(
                self.allow_vm_deployment,
                current.map(|c| c.allow_vm_deployment),
                true,
            ),
            allow_template_sync: pick_bool(
                self.allow_template_sync,
                current.map(|c| c.allow_template_sync),
                true,
            ),
            allow_iso_sync: pick_bool(self.allow_iso_sync, current.map(|c| c.allow_iso_sync), true),
            auto_shutdown_enabled: pick_bool(
                self.auto_shutdown_enabled,
                current.map(|c| c.auto_shutdown_enabled),
                false,
            ),
            default_storage,
            template_storage,
            description,
            vmid_range_start,
            vmid_range_end,
            idle_cpu_percent,
            idle_minutes,
        };
        Ok((fields, secrets))
    }
}

fn bounded(field: &'static str, v: String, min: usize, max: usize) -> Result<String, InputError> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(invalid(field, format!("must be {min} to {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(v)
}

fn range(
    field: &'static str,
    v: Option<i64>,
    current: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, InputError> {
    let v = v.or(current).unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

/// `cluster1`, `prod-cluster`: lower-case letters, digits, `-` and `_`, starting with a letter or
/// digit, at most 64 characters.
pub fn slug(v: &str) -> Result<String, InputError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(v.to_string())
    } else {
        Err(invalid(
            "cluster_id",
            "must be 1–64 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        ))
    }
}

/// A DNS name or an IP address, without scheme, port or path.
pub fn host_name(v: &str) -> Result<String, InputError> {
    if v.parse::<std::net::IpAddr>().is_ok() {
        return Ok(v.to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.len() <= 253 && v.split('.').all(label_ok) {
        Ok(v.to_string())
    } else {
        Err(invalid(
            "host",
            "must be a host name or IP address, without scheme, port or path",
        ))
    }
}

fn user_at_realm(v: &str) -> Result<String, InputError> {
    match v.split_once('@') {
        Some((user, realm))
            if !user.is_empty()
                && !realm.is_empty()
                && v.len() <= 128
                && !v.contains(['!', ' ', ':']) =>
        {
            Ok(v.to_string())
        }
        _ => Err(invalid("user", "must be USER@REALM, e.g. root@pam")),
    }
}

fn token_id(v: &str) -> Result<String, InputError> {
    let ok = v.split_once('!').is_some_and(|(user, name)| {
        user_at_realm(user).is_ok()
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    if ok {
        Ok(v.to_string())
    } else {
        Err(invalid(
            "token_id",
            "must be USER@REALM!TOKENID, e.g. root@pam!labfleet",
        ))
    }
}

fn fingerprint(field: &'static str, v: &str) -> Result<String, InputError> {
    let hex: String = v.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let upper = hex.to_ascii_uppercase();
        let pairs: Vec<&str> = (0..32).map(|i| &upper[i * 2..i * 2 + 2]).collect();
        Ok(pairs.join(":"))
    } else {
        Err(invalid(
            field,
            "must be a SHA-256 fingerprint: 32 hex bytes, optionally colon-separated",
        ))
    }
}

fn storage_id(field: &'static str, v: String) -> Result<String, InputError> {
    let ok = v.len() <= 100
        && v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v)
    } else {
        Err(invalid(
            field,
            "must be a Proxmox storage id such as local-lvm",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> ClusterInput {
        ClusterInput {
            cluster_id: Some("cluster1".into()),
            name: Some("Main".into()),
            host: Some("10.220.15.249".into()),
            password: Some(SecretString::from("pw")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_seed() {
        let (f, s) = minimal().resolve(None).unwrap();
        assert_eq!(
            (f.port, f.user.as_str(), f.priority),
            (8006, "root@pam", 50)
        );
        assert!(f.is_active && f.allow_vm_deployment && f.allow_template_sync && f.allow_iso_sync);
        assert!(!f.auto_shutdown_enabled && !f.verify_ssl && !f.is_default);
        assert_eq!((f.vmid_range_start, f.vmid_range_end), (10_000, 19_999));
        assert!(s.password.is_some());
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases: Vec<(ClusterInput, &str)> = vec![
            (
                ClusterInput {
                    cluster_id: Some("Bad Id".into()),
                    ..minimal()
                },
                "cluster_id",
            ),
            (
                ClusterInput {
                    host: Some("https://x:8006/".into()),
                    ..minimal()
                },
                "host",
            ),
            (
                ClusterInput {
                    port: Some(70_000),
                    ..minimal()
                },
                "port",
            ),
            (
                ClusterInput {
                    priority: Some(101),
                    ..minimal()
                },
                "priority",
            ),
            (
                ClusterInput {
                    user: Some("root".into()),
                    ..minimal()
                },
                "user",
            ),
            (
                ClusterInput {
                    token_id: Some("root@pam".into()),
                    token_secret: Some(SecretString::from("s")),
                    ..minimal()
                },
                "token_id",
            ),
            (
                ClusterInput {
                    token_id: Some("root@pam!lf".into()),
                    ..minimal()
                },
                "token_secret",
            ),
            (
                ClusterInput {
                    tls_fingerprint: Some("abc".into()),
                    ..minimal()
                },
                "tls_fingerprint",
            ),
            (
                ClusterInput {
                    default_storage: Some("local lvm".into()),
                    ..minimal()
                },
                "default_storage",
            ),
            (
                ClusterInput {
                    vmid_range_start: Some(500),
                    vmid_range_end: Some(400),
                    ..minimal()
                },
                "vmid_range_end",
            ),
            (
                ClusterInput {
                    password: None,
                    ..minimal()
                },
                "password",
            ),
            (
                ClusterInput {
                    name: None,
                    ..minimal()
                },
                "name",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(input.resolve(None).unwrap_err().field, field);
        }
    }

    #[test]
    fn a_token_alone_is_enough_and_fingerprints_are_normalised() {
        let input = ClusterInput {
            password: None,
            token_id: Some("root@pam!labfleet".into()),
            token_secret: Some(SecretString::from("s")),
            tls_fingerprint: Some("ab".repeat(32)),
            ..minimal()
        };
        let (f, _) = input.resolve(None).unwrap();
        assert!(f.tls_fingerprint.unwrap().starts_with("AB:AB:"));
    }
}
