//! SSH executor for node-side commands (`qm`, `qemu-img`, `pvesm`): one pooled russh connection
//! per node, reconnected when broken; password or private-key auth; optional host-key pinning by
//! SHA-256 fingerprint; a timeout per command; exit status, stdout and stderr returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine as _;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

/// How to log in to the nodes.
#[derive(Clone)]
pub enum SshAuth {
    /// Password authentication.
    Password(SecretString),
    /// An OpenSSH/PEM private key, optionally encrypted.
    PrivateKey {
        /// The key text.
        pem: SecretString,
        /// Its passphrase.
        passphrase: Option<SecretString>,
    },
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshAuth::Password(_) => f.write_str("Password([REDACTED])"),
            SshAuth::PrivateKey { .. } => f.write_str("PrivateKey([REDACTED])"),
        }
    }
}

/// Settings shared by all nodes of a cluster.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Login user (`root`: `qm` needs it).
    pub user: String,
    /// Credentials.
    pub auth: SshAuth,
    /// TCP connect + handshake + auth timeout.
    pub connect_timeout: Duration,
}

/// One node to run commands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Node name; the pool keeps one connection per name.
    pub node: String,
    /// Host name or address.
    pub host: String,
    /// Port (22).
    pub port: u16,
    /// Pinned host key: `SHA256:<base64>` as `ssh-keygen -l` prints it, or 32 bytes in hex.
    pub host_key_fingerprint: Option<String>,
}

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; `None` if the server sent none (killed by a signal).
    pub exit_status: Option<u32>,
    /// Signal name if the command was killed.
    pub exit_signal: Option<String>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// SSH failures. Never contains a password or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// TCP, handshake or protocol failure.
    #[error("ssh to node {node}: cannot connect: {detail}")]
    Connect {
        /// Node.
        node: String,
        /// Cause.
        detail: String,
    },
    /// The host key did not match the pin.
    #[error("ssh to node {node}: host key {got} does not match the pinned fingerprint {expected}")]
    HostKeyMismatch {
        /// Node.
        node: String,
        /// Pinned fingerprint as configured.
        expected: String,
        /// Fingerprint the server presented.
        got: String,
    },
    /// The server refused our credentials.
    #[error("ssh to node {node}: authentication as {user} failed")]
    Auth {
        /// Node.
        node: String,
        /// User.
        user: String,
    },
    /// The command did not finish in time (it may still run on the node).
    #[error("ssh to node {node}: command timed out after {after:?}")]
    Timeout {
        /// Node.
        node: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection broke while a command ran.
    #[error("ssh to node {node}: channel error: {detail}")]
    Channel {
        /// Node.
        node: String,
        /// Cause.
        detail: String,
    },
    /// The configuration is unusable (bad key, bad fingerprint).
    #[error("ssh configuration: {0}")]
    Config(String),
}

impl SshError {
    /// Whether retrying may help: connection and channel failures and timeouts.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Channel { .. } | SshError::Timeout { .. }
        )
    }
}

/// Parses a pinned host-key fingerprint into its 32 SHA-256 bytes.
pub fn parse_host_key_fingerprint(text: &str) -> Result<Vec<u8>, SshError> {
    let t = text.trim();
    let body = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let from_b64 = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body.trim_end_matches('='))
        .ok()
        .filter(|b| b.len() == 32);
    let from_hex = || {
        let h: String = body.chars().filter(|c| *c != ':').collect();
        hex::decode(h).ok().filter(|b| b.len() == 32)
    };
    from_b64.or_else(from_hex).ok_or_else(|| {
        SshError::Config(format!(
            "host key fingerprint {text:?} is neither SHA256:<base64> nor 32 hex bytes"
        ))
    })
}

struct Verifier {
    pin: Option<Vec<u8>>,
    /// The fingerprint the server showed, kept for the error message.
    seen: Arc<StdMutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fp = server_public_key.public_key().fingerprint(HashAlg::Sha256);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp.to_string());
        }
        Ok(match &self.pin {
            None => true,
            Some(pin) => fp.as_bytes() == pin.as_slice(),
        })
    }
}

type Conn = Arc<Handle<Verifier>>;

/// A pool of SSH connections, one per node.
pub struct SshPool {
    config: SshConfig,
    key: Option<Arc<russh::keys::PrivateKey>>,
    nodes: StdMutex<HashMap<String, Arc<Mutex<Option<Conn>>>>>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("config", &self.config)
            .finish()
    }
}

impl SshPool {
    /// Builds a pool; a private key is decoded now so a bad key fails early.
    pub fn new(config: SshConfig) -> Result<Self, SshError> {
        let key = match &config.auth {
            SshAuth::Password(_) => None,
            SshAuth::PrivateKey { pem, passphrase } => {
                let k = russh::keys::decode_secret_key(
                    pem.expose_secret(),
                    passphrase.as_ref().map(|p| p.expose_secret()),
                )
                .map_err(|e| SshError::Config(format!("private key: {e}")))?;
                Some(Arc::new(k))
            }
        };
        Ok(SshPool {
            config,
            key,
            nodes: StdMutex::new(HashMap::new()),
        })
    }

    fn slot(&self, node: &str) -> Arc<Mutex<Option<Conn>>> {
        let mut nodes = match self.nodes.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        nodes.entry(node.to_string()).or_default().clone()
    }

    /// Runs `command` on the node and waits at most `timeout` for it to finish.
    /// A broken pooled connection is replaced once before giving up.
    pub async fn exec(
        &self,
        target: &SshTarget,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, SshError> {
        let slot = self.slot(&target.node);
        let mut attempt = 0;
        let channel = loop {
            let conn = {
                let mut guard = slot.lock().await;
                match guard.as_ref().filter(|c| !c.is_closed()) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(self.connect(target).await?);
                        *guard = Some(c.clone());
                        c
                    }
                }
            };
            match conn.channel_open_session().await {
                Ok(ch) => break ch,
                Err(e) if attempt == 0 => {
                    tracing::info!(node = %target.node, error = %e, "ssh connection broken, reconnecting");
                    let mut guard = slot.lock().await;
                    if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        *guard = None;
                    }
                    attempt += 1;
                }
                Err(e) => {
                    return Err(SshError::Channel {
                        node: target.node.clone(),
                        detail: e.to_string(),
                    })
                }
            }
        };
        let node = target.node.clone();
        let run = async move {
            let mut channel = channel;
            channel
                .exec(true, command.as_bytes())
                .await
                .map_err(|e| SshError::Channel {
                    node: node.clone(),
                    detail: e.to_string(),
                })?;
            let mut out = CommandOutput::default();
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            out.stdout = String::from_utf8_lossy(&stdout).into_owned();
            out.stderr = String::from_utf8_lossy(&stderr).into_owned();
            if out.exit_status.is_none() && out.exit_signal.is_none() {
                return Err(SshError::Channel {
                    node,
                    detail: "the channel closed without an exit status".into(),
                });
            }
            Ok(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                node: target.node.clone(),
                after: timeout,
            }),
        }
    }

    /// Drops every pooled connection.
    pub async fn close_all(&self) {
        let slots: Vec<_> = match self.nodes.lock() {
            Ok(mut g) => g.drain().map(|(_, v)| v).collect(),
            Err(poisoned) => poisoned.into_inner().drain().map(|(_, v)| v).collect(),
        };
        for slot in slots {
            if let Some(conn) = slot.lock().await.take() {
                let _ = conn
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
            }
        }
    }

    async fn connect(&self, target: &SshTarget) -> Result<Handle<Verifier>, SshError> {
        let pin = target
            .host_key_fingerprint
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(parse_host_key_fingerprint)
            .transpose()?;
        let seen = Arc::new(StdMutex::new(None));
        let handler = Verifier {
            pin: pin.clone(),
            seen: seen.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let node = target.node.clone();
        let addr = (target.host.clone(), target.port);
        let connect = async {
            let mut handle = client::connect(config, addr, handler).await.map_err(|e| {
                let got = seen.lock().ok().and_then(|s| s.clone());
                match (&target.host_key_fingerprint, got, pin.is_some()) {
                    (Some(expected), Some(got), true) => SshError::HostKeyMismatch {
                        node: node.clone(),
                        expected: expected.clone(),
                        got,
                    },
                    _ => SshError::Connect {
                        node: node.clone(),
                        detail: e.to_string(),
                    },
                }
            })?;
            let auth = match (&self.config.auth, &self.key) {
                (SshAuth::Password(pw), _) => {
                    handle
                        .authenticate_password(&self.config.user, pw.expose_secret())
                        .await
                }
                (SshAuth::PrivateKey { .. }, Some(key)) => {
                    let hash = handle
                        .best_supported_rsa_hash()
                        .await
                        .ok()
                        .flatten()
                        .flatten();
                    handle
                        .authenticate_publickey(
                            &self.config.user,
                            PrivateKeyWithHashAlg::new(key.clone(), hash),
                        )
                        .await
                }
                (SshAuth::PrivateKey { .. }, None) => {
                    return Err(SshError::Config("private key not loaded".into()))
                }
            }
            .map_err(|e| SshError::Connect {
                node: node.clone(),
                detail: e.to_string(),
            })?;
            if !auth.success() {
                return Err(SshError::Auth {
                    node: node.clone(),
                    user: self.config.user.clone(),
                });
            }
            Ok(handle)
        };
        tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| SshError::Connect {
                node: target.node.clone(),
                detail: format!("timed out after {:?}", self.config.connect_timeout),
            })?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_key_pins_parse_in_openssh_and_hex_form() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        assert_eq!(
            parse_host_key_fingerprint(&format!("SHA256:{b64}")).unwrap(),
            bytes
        );
        assert_eq!(parse_host_key_fingerprint(&b64).unwrap(), bytes);
        let hex_colons: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            parse_host_key_fingerprint(&hex_colons.join(":")).unwrap(),
            bytes
        );
        assert!(parse_host_key_fingerprint("SHA256:short").is_err());
    }

    #[test]
    fn ssh_errors_classify_and_hide_secrets() {
        let t = SshError::Timeout {
            node: "pve1".into(),
            after: Duration::from_secs(1),
        };
        assert!(t.is_transient());
        assert!(!SshError::Auth {
            node: "pve1".into(),
            user: "root".into()
        }
        .is_transient());
        let auth = SshAuth::Password(SecretString::from("hunter2"));
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn a_bad_private_key_fails_when_the_pool_is_built() {
        let err = SshPool::new(SshConfig {
            user: "root".into(),
            auth: SshAuth::PrivateKey {
                pem: SecretString::from("not a key"),
                passphrase: None,
            },
            connect_timeout: Duration::from_secs(1),
        })
        .unwrap_err();
        assert!(matches!(err, SshError::Config(_)));
    }
}
