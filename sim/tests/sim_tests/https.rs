use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::common::*;

/// Trusts exactly the certificate with this SHA-256 fingerprint (what a PVE client pins).
#[derive(Debug)]
struct Pinned(String, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp: Vec<String> = Sha256::digest(end_entity.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        if fp.join(":") == self.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

async fn get_version(addr: &str, fp: &str, token: &str) -> Result<u16, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(fp.to_string(), provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/api2/json/version")
        .header("host", addr)
        .header("authorization", token)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"release\""));
    Ok(status)
}

#[tokio::test]
async fn https_serves_a_self_signed_certificate_with_a_stable_fingerprint() {
    let s = spawn_sim_with(|c| c.plain_http = false).await;
    assert!(s.h.url.starts_with("https://127.0.0.1:"), "{}", s.h.url);
    let fp = s.h.cert_sha256_fingerprint.clone().unwrap();
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert_eq!(
        get_version(&s.addr, &fp, &s.h.token_header()).await,
        Ok(200)
    );
    let wrong = fp.replace(&fp[..2], if &fp[..2] == "00" { "11" } else { "00" });
    assert!(get_version(&s.addr, &wrong, &s.h.token_header())
        .await
        .is_err());
    let data = s.dir.0.join("data");
    s.h.shutdown().await;
    let mut cfg = labfleet_sim::SimConfig::for_tests(&data);
    cfg.plain_http = false;
    let h = labfleet_sim::start(cfg).await.unwrap();
    assert_eq!(h.cert_sha256_fingerprint.as_deref(), Some(fp.as_str()));
    h.shutdown().await;
    drop(s.dir);
}
