//! The self-signed HTTPS certificate: generated on first start, kept in `<data_dir>/sim/` so its
//! fingerprint survives restarts (like a node's pve-ssl.pem).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// `AB:CD:…` SHA-256 fingerprint of a DER certificate, as PVE shows it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Loads or creates the certificate; returns a TLS acceptor and the fingerprint.
pub fn acceptor(data_dir: &Path, nodes: &[String]) -> anyhow::Result<(TlsAcceptor, String)> {
    let dir = data_dir.join("sim");
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("pve-ssl.der"), dir.join("pve-ssl.key.der"));
    let (cert, key) = match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        (Ok(c), Ok(k)) => (c, k),
        _ => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(nodes.iter().cloned());
            let ck = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
            let (c, k) = (ck.cert.der().to_vec(), ck.key_pair.serialize_der());
            std::fs::write(&cert_path, &c)?;
            std::fs::write(&key_path, &k)?;
            std::fs::write(dir.join("pve-ssl.pem"), ck.cert.pem())?;
            (c, k)
        }
    };
    let fp = fingerprint(&cert);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .context("loading certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(cfg)), fp))
}
