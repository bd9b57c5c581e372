use std::sync::Arc;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::ChannelMsg;

use crate::common::*;

struct AcceptAny;

impl russh::client::Handler for AcceptAny {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn exec(session: &russh::client::Handle<AcceptAny>, cmd: &str) -> (String, String, u32) {
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, cmd).await.unwrap();
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        code.unwrap(),
    )
}

fn client_key() -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[7u8; 32]))
}

#[tokio::test]
async fn ssh_runs_qm_pvesm_and_qemu_img_on_the_shared_state() {
    let key = client_key();
    let public = key.public_key().to_openssh().unwrap();
    let s = spawn_sim_with(|c| {
        c.ssh = true;
        c.ssh_authorized_keys = vec![public];
    })
    .await;
    let nodes = &s.h.nodes;
    let ports: Vec<u16> = nodes.iter().map(|n| n.ssh_addr.unwrap().port()).collect();
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "same port on every node"
    );
    assert_eq!(nodes[1].ssh_addr.unwrap().ip().to_string(), "127.0.0.12");

    let cfg = Arc::new(russh::client::Config::default());
    let mut pw = russh::client::connect(cfg.clone(), nodes[0].ssh_addr.unwrap(), AcceptAny)
        .await
        .unwrap();
    assert!(!pw
        .authenticate_password("root", "wrong")
        .await
        .unwrap()
        .success());
    assert!(pw
        .authenticate_password("root", &s.h.root_password)
        .await
        .unwrap()
        .success());

    let (out, err, code) = exec(&pw, "qm clone 104 600 --name ssh-made --full 0").await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("create linked clone of drive scsi0"), "{out}");
    let c = s.config("pve1", 600).await;
    assert_eq!(c.data()["name"], "ssh-made");
    let (out, _, code) = exec(&pw, "qm list").await;
    assert_eq!(code, 0);
    assert!(out.contains("ssh-made"), "{out}");
    let (_, err, code) = exec(&pw, "qm clone 105 601 --storage local").await;
    assert_eq!(code, 255);
    assert!(
        err.contains("parameter 'storage' not allowed for linked clones"),
        "{err}"
    );
    let (out, _, code) = exec(&pw, "pvesm path nfs-shared:104/base-104-disk-0.qcow2").await;
    assert_eq!(code, 0);
    let base = out.trim().to_string();
    assert!(
        base.ends_with("storage/shared/nfs-shared/images/104/base-104-disk-0.qcow2"),
        "{out}"
    );
    let overlay = s.dir.0.join("data/overlay-test.qcow2");
    let (_, err, code) = exec(
        &pw,
        &format!(
            "qemu-img create -f qcow2 -F qcow2 -b {base} {}",
            overlay.display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (out, _, code) = exec(&pw, &format!("qemu-img info {}", overlay.display())).await;
    assert_eq!(code, 0);
    assert!(out.contains("backing file: "), "{out}");
    let (_, err, code) = exec(&pw, "rm -rf /").await;
    assert_eq!(code, 127);
    assert!(err.contains("command not found"));

    // key auth on another node; qm only sees VMs of its own node
    let mut k = russh::client::connect(cfg, nodes[1].ssh_addr.unwrap(), AcceptAny)
        .await
        .unwrap();
    let auth = k
        .authenticate_publickey(
            "root",
            PrivateKeyWithHashAlg::new(Arc::new(client_key()), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    let (_, err, code) = exec(&k, "qm start 600").await;
    assert_eq!(code, 255);
    assert!(
        err.contains("Configuration file 'nodes/pve2/qemu-server/600.conf' does not exist"),
        "{err}"
    );
    let (_, err, code) = exec(&pw, "qm start 600").await;
    assert_eq!(code, 0, "{err}");
    let (out, _, _) = exec(&pw, "qm status 600").await;
    assert_eq!(out, "status: running\n");
    s.h.shutdown().await;
}
