//! The SSH executor against an in-process russh server on 127.0.0.1:0: output and exit status,
//! one pooled connection per node, reconnect after a drop, host-key pinning, auth failures and
//! command timeouts.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labfleet_proxmox::ssh::{SshAuth, SshConfig, SshError, SshPool, SshTarget};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// Throwaway test keys, generated for this file only.
const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBF2UAsPwykus4rNvBaCj2AHQ3rcjcABzRIza3Mv9oDQAAAAJgGH+TdBh/k
3QAAAAtzc2gtZWQyNTUxOQAAACBF2UAsPwykus4rNvBaCj2AHQ3rcjcABzRIza3Mv9oDQA
AAAECQh91o7264vmMbBnlFOMRQ6VXl745WH//6z0hUiEzpfEXZQCw/DKS6zis28FoKPYAd
DetyNwAHNEjNrcy/2gNAAAAAEmxhYmZsZWV0LXRlc3QtaG9zdAECAw==
-----END OPENSSH PRIVATE KEY-----
";
const HOST_FINGERPRINT: &str = "SHA256:ti4R+kTspTQ3Wq52B4tkY4N4pY0tSJ3GC11PnOEzHkc";
const CLIENT_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCYcay9f8AW89XapIQJ+CLKX7S5wgaKzJIE/UR0dB1rDAAAAJiawdr7msHa
+wAAAAtzc2gtZWQyNTUxOQAAACCYcay9f8AW89XapIQJ+CLKX7S5wgaKzJIE/UR0dB1rDA
AAAEDPfRaFG/hqF7Gd+9IMqx0ww4jS1vD3zdCvFBOa6ba8rJhxrL1/wBbz1dqkhAn4Ispf
tLnCBorMkgT9RHR0HWsMAAAAFGxhYmZsZWV0LXRlc3QtY2xpZW50AQ==
-----END OPENSSH PRIVATE KEY-----
";
const CLIENT_PUBLIC: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJhxrL1/wBbz1dqkhAn4IspftLnCBorMkgT9RHR0HWsM";

struct Node {
    password: String,
}

impl russh::server::Handler for Node {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if user == "root" && password == self.password {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let known = key
            .public_key
            .to_openssh()
            .unwrap_or_default()
            .contains(CLIENT_PUBLIC);
        Ok(if user == "root" && known {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let cmd = String::from_utf8_lossy(data).to_string();
        let (out, err, code) = match cmd.as_str() {
            "qm list" => ("VMID NAME\n100 lab-01\n", "", 0),
            "qm start 999" => (
                "",
                "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n",
                2,
            ),
            "sleep" => return Ok(()), // never answers: the client must time out
            other => ("", other, 127),
        };
        if !out.is_empty() {
            session.data(channel, out.as_bytes().to_vec())?;
        }
        if !err.is_empty() {
            session.extended_data(channel, 1, err.as_bytes().to_vec())?;
        }
        session.exit_status_request(channel, code)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}

struct SshServer {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    sessions: Arc<Mutex<Vec<russh::server::Handle>>>,
    accept: JoinHandle<()>,
}

impl SshServer {
    async fn start() -> SshServer {
        let config = Arc::new(russh::server::Config {
            keys: vec![russh::keys::decode_secret_key(HOST_KEY, None).unwrap()],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let sessions: Arc<Mutex<Vec<russh::server::Handle>>> = Arc::default();
        let (c2, s2) = (connections.clone(), sessions.clone());
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                let handler = Node {
                    password: "pw".into(),
                };
                if let Ok(running) = russh::server::run_stream(config.clone(), sock, handler).await
                {
                    s2.lock().unwrap().push(running.handle());
                    tokio::spawn(running);
                }
            }
        });
        SshServer {
            addr,
            connections,
            sessions,
            accept,
        }
    }

    /// Closes every open connection from the server side, as a restarting sshd would.
    async fn drop_connections(&self) {
        let handles: Vec<_> = self.sessions.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "bye".into(), "en".into())
                .await;
        }
    }

    fn target(&self, pin: Option<&str>) -> SshTarget {
        SshTarget {
            node: "pve1".into(),
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            host_key_fingerprint: pin.map(str::to_string),
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn pool(auth: SshAuth) -> SshPool {
    SshPool::new(SshConfig {
        user: "root".into(),
        auth,
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn password(pw: &str) -> SshAuth {
    SshAuth::Password(SecretString::from(pw.to_string()))
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn commands_return_stdout_stderr_and_exit_status_over_one_connection() {
    let srv = SshServer::start().await;
    let p = pool(password("pw"));
    let target = srv.target(Some(HOST_FINGERPRINT));
    let ok = p.exec(&target, "qm list", T).await.unwrap();
    assert!(ok.success());
    assert_eq!(ok.stdout, "VMID NAME\n100 lab-01\n");
    assert_eq!(ok.stderr, "");
    let failed = p.exec(&target, "qm start 999", T).await.unwrap();
    assert_eq!(failed.exit_status, Some(2));
    assert!(failed.stderr.contains("does not exist"));
    assert_eq!(
        srv.connections.load(Ordering::SeqCst),
        1,
        "the connection is pooled"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_replaced() {
    let srv = SshServer::start().await;
    let p = pool(password("pw"));
    let target = srv.target(None);
    assert!(p.exec(&target, "qm list", T).await.unwrap().success());
    srv.drop_connections().await;
    assert!(p.exec(&target, "qm list", T).await.unwrap().success());
    assert_eq!(srv.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn key_authentication_works() {
    let srv = SshServer::start().await;
    let p = pool(SshAuth::PrivateKey {
        pem: SecretString::from(CLIENT_KEY),
        passphrase: None,
    });
    assert!(p
        .exec(&srv.target(None), "qm list", T)
        .await
        .unwrap()
        .success());
}

#[tokio::test]
async fn a_wrong_host_key_pin_is_refused_and_shows_the_real_fingerprint() {
    let srv = SshServer::start().await;
    let p = pool(password("pw"));
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let err = p
        .exec(&srv.target(Some(wrong)), "qm list", T)
        .await
        .unwrap_err();
    match &err {
        SshError::HostKeyMismatch { got, .. } => assert_eq!(got, HOST_FINGERPRINT),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_auth_error_without_the_password() {
    let srv = SshServer::start().await;
    let p = pool(password("not-the-pw-71a"));
    let err = p.exec(&srv.target(None), "qm list", T).await.unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(!format!("{err} {err:?} {p:?}").contains("not-the-pw-71a"));
}

#[tokio::test]
async fn a_command_that_hangs_times_out() {
    let srv = SshServer::start().await;
    let p = pool(password("pw"));
    let err = p
        .exec(&srv.target(None), "sleep", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    // The pooled connection still serves the next command.
    assert!(p
        .exec(&srv.target(None), "qm list", T)
        .await
        .unwrap()
        .success());
}
