//! TLS trust for PVE nodes: public roots (`verify_ssl` on), no certificate check (`verify_ssl`
//! off), or a pinned SHA-256 certificate fingerprint (`tls_fingerprint`), which is how Proxmox
//! admins trust a self-signed node. A pin is enforced whatever `verify_ssl` says. Handshake
//! signatures are always verified, so a pinned certificate cannot be replayed without its key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ProxmoxError;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parses `AB:CD:…` as PVE shows it, with or without colons (or spaces), in any case.
    pub fn parse(text: &str) -> Result<Self, ProxmoxError> {
        let hex_only: String = text
            .trim()
            .trim_start_matches("sha256:")
            .trim_start_matches("SHA256:")
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&hex_only).map_err(|_| {
            ProxmoxError::Config(format!(
                "tls_fingerprint {text:?} is not hexadecimal (expected 32 bytes like AB:CD:…)"
            ))
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            ProxmoxError::Config(format!(
                "tls_fingerprint has {} bytes, a SHA-256 fingerprint has 32",
                b.len()
            ))
        })?;
        Ok(Fingerprint(arr))
    }

    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Fingerprint {
    /// `AB:CD:…`, as PVE shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Builds the rustls client config for a cluster's trust settings, with the ring provider
/// (no process-wide default provider is needed).
pub fn client_config(
    verify_ssl: bool,
    fingerprint: Option<Fingerprint>,
) -> Result<rustls::ClientConfig, ProxmoxError> {
    let provider = ring_provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxmoxError::Config(format!("TLS setup: {e}")))?;
    let config = match (fingerprint, verify_ssl) {
        (Some(expected), _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                pin: Some(expected),
                algorithms,
            }))
            .with_no_client_auth(),
        (None, false) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                pin: None,
                algorithms,
            }))
            .with_no_client_auth(),
        (None, true) => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// Marker in the rustls error of a pin mismatch, so the client can explain it.
pub(crate) const PIN_MISMATCH: &str = "certificate fingerprint mismatch";

/// Accepts the certificate whose SHA-256 matches the pin, or any certificate without a pin.
#[derive(Debug)]
struct Verifier {
    pin: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(expected) => {
                let got = Fingerprint::of_der(end_entity.as_ref());
                if got == expected {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "{PIN_MISMATCH}: the server presented {got}, the pinned tls_fingerprint is {expected}"
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The ring crypto provider, handed to each config (no process-wide default needed).
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PVE_STYLE: &str =
        "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn fingerprints_parse_with_or_without_colons_in_any_case() {
        let a = Fingerprint::parse(PVE_STYLE).unwrap();
        let b = Fingerprint::parse(&PVE_STYLE.replace(':', "").to_lowercase()).unwrap();
        let c = Fingerprint::parse(&format!("  {}  ", PVE_STYLE.to_lowercase())).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), PVE_STYLE);
    }

    #[test]
    fn bad_fingerprints_are_rejected() {
        assert!(Fingerprint::parse("AB:CD").is_err());
        assert!(Fingerprint::parse(&PVE_STYLE.replace('A', "G")).is_err());
        assert!(Fingerprint::parse("").is_err());
    }

    #[test]
    fn the_verifier_accepts_only_the_pinned_certificate() {
        let der = CertificateDer::from(vec![1u8, 2, 3, 4]);
        let other = CertificateDer::from(vec![9u8, 9, 9]);
        let pin = Fingerprint::of_der(der.as_ref());
        let v = Verifier {
            pin: Some(pin),
            algorithms: ring_provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("pve1.example").unwrap();
        assert!(v
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        let err = v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(err.to_string().contains(PIN_MISMATCH));
        assert!(err.to_string().contains(&pin.to_string()));
    }

    #[test]
    fn configs_build_for_every_trust_mode() {
        assert!(client_config(true, None).is_ok());
        assert!(client_config(false, None).is_ok());
        assert!(client_config(true, Some(Fingerprint::parse(PVE_STYLE).unwrap())).is_ok());
    }
}
