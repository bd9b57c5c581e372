//! Encryption of cluster secrets at rest: AES-256-GCM with a random nonce per value, and the
//! cluster and field as associated data, so a ciphertext copied to another row or column does not
//! decrypt. Stored as `v1:<base64(nonce ‖ ciphertext)>`.

use std::{fmt, path::Path};

use aes_gcm::{
    aead::{Aead, KeyInit, OsRng, Payload},
    AeadCore, Aes256Gcm, Key, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use secrecy::{ExposeSecret, SecretString};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// The configured key is not 32 bytes of hex or base64.
    #[error("the secret key must be 32 bytes written as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)")]
    Malformed,
    /// The configured key is well formed but guessable.
    #[error("the secret key is too weak: its 32 bytes are {0}; use a random key (e.g. `openssl rand -hex 32`)")]
    Weak(&'static str),
    /// The key file cannot be read or written.
    #[error("secret key file {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        error: String,
    },
    /// Production mode without a key.
    #[error("LABFLEET_SECRET_KEY (or LABFLEET_SECRET_KEY_FILE) must be set when DATABASE_URL is set: cluster secrets are encrypted with it")]
    Missing,
}

/// A secret could not be decrypted.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret cannot be decrypted (wrong LABFLEET_SECRET_KEY, or the value was tampered with)")]
pub struct DecryptError;

/// The cipher for cluster secrets. Its Debug output never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A cipher from 32 key bytes written as hex or base64.
    pub fn from_encoded(key: &str) -> Result<SecretBox, SecretKeyError> {
        let key = key.trim();
        let bytes = hex::decode(key)
            .ok()
            .or_else(|| STANDARD.decode(key).ok())
            .filter(|b| b.len() == 32)
            .ok_or(SecretKeyError::Malformed)?;
        // A random key repeats no byte value more than a handful of times; a key of one
        // repeated byte (all zeros, say) or with under 8 distinct values is a placeholder.
        let distinct = bytes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct == 1 {
            return Err(SecretKeyError::Weak("all the same value"));
        }
        if distinct < 8 {
            return Err(SecretKeyError::Weak("fewer than 8 distinct values"));
        }
        Ok(SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Reads the key file, creating it with a fresh random key (mode 0600) when `create` and it
    /// does not exist yet.
    pub fn from_file(path: &Path, create: bool) -> Result<SecretBox, SecretKeyError> {
        let file_err = |e: std::io::Error| SecretKeyError::File {
            path: path.display().to_string(),
            error: e.to_string(),
        };
        let text = if create {
            read_or_create_private(path, IfEmpty::Keep, || {
                hex::encode(rand::random::<[u8; 32]>())
            })
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(file_err)?;
        Self::from_encoded(&text)
    }

    /// The key in effect: `key` if set, else `key_file`, else (embedded mode only, when
    /// `embedded_dir` is given) `<embedded_dir>/secret.key`, created on first use.
    pub fn resolve(
        key: Option<&SecretString>,
        key_file: Option<&Path>,
        embedded_dir: Option<&Path>,
    ) -> Result<SecretBox, SecretKeyError> {
        if let Some(k) = key {
            return Self::from_encoded(k.expose_secret());
        }
        if let Some(path) = key_file {
            return Self::from_file(path, false);
        }
        match embedded_dir {
            Some(dir) => Self::from_file(&dir.join("secret.key"), true),
            None => Err(SecretKeyError::Missing),
        }
    }

    /// Encrypts `value` for `field` of cluster `cluster_id`.
    pub fn seal(&self, cluster_id: &str, field: &str, value: &SecretString) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(cluster_id, field);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.expose_secret().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts a value sealed for `field` of cluster `cluster_id`.
    pub fn open(
        &self,
        cluster_id: &str,
        field: &str,
        stored: &str,
    ) -> Result<SecretString, DecryptError> {
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or(DecryptError)?;
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let aad = aad(cluster_id, field);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| DecryptError)
    }
}

fn aad(cluster_id: &str, field: &str) -> String {
    format!("labfleet:cluster:{cluster_id}:{field}")
}

/// What [`read_or_create_private`] does with a file that exists but is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfEmpty {
    /// Return the empty text (a key file: an empty one is an error to report, never a reason to
    /// make a new key that would orphan everything sealed with the old one).
    Keep,
    /// Replace it with a new value (a token that can be handed out again).
    Replace,
}

/// A secret kept in a file of its own (a key, a token): read it, or on first use write the one
/// `make` gives, readable by its owner only (mode 0600), creating the directory. An existing
/// file is never written over, except an empty one with [`IfEmpty::Replace`]. The content comes
/// back trimmed.
pub fn read_or_create_private(
    path: &Path,
    if_empty: IfEmpty,
    make: impl FnOnce() -> String,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() || if_empty == IfEmpty::Keep => {
            return Ok(text.trim().to_string())
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let value = make();
    write_private(path, &value)?;
    Ok(value)
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_made_once_and_an_empty_one_replaced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token");
        let made = read_or_create_private(&path, IfEmpty::Keep, || "first".into()).unwrap();
        assert_eq!(made, "first");
        let again = read_or_create_private(&path, IfEmpty::Keep, || "second".into()).unwrap();
        assert_eq!(again, "first", "an existing file is read, not replaced");
        std::fs::write(&path, "\n").unwrap();
        let kept = read_or_create_private(&path, IfEmpty::Keep, || "second".into()).unwrap();
        assert_eq!(kept, "", "an empty key file is reported, not replaced");
        let replaced = read_or_create_private(&path, IfEmpty::Replace, || "third".into()).unwrap();
        assert_eq!(replaced, "third");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn key() -> SecretBox {
        SecretBox::from_encoded("5f0c9a3e71b24d8e6a1f3c0b9d72e4a85b6c1d0e9f8a7b6c5d4e3f2a1b0c9d8e")
            .unwrap()
    }

    #[test]
    fn sealed_secret_opens_only_for_its_cluster_and_field() {
        let b = key();
        let sealed = b.seal("c1", "password", &SecretString::from("hunter2"));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            b.open("c1", "password", &sealed).unwrap().expose_secret(),
            "hunter2"
        );
        assert!(b.open("c2", "password", &sealed).is_err());
        assert!(b.open("c1", "token_secret", &sealed).is_err());
        let other = SecretBox::from_encoded(
            "0123456789abcdeffedcba98765432100f1e2d3c4b5a69788796a5b4c3d2e1f0",
        )
        .unwrap();
        assert!(other.open("c1", "password", &sealed).is_err());
    }

    #[test]
    fn the_same_secret_seals_differently_each_time() {
        let b = key();
        let s = SecretString::from("x");
        assert_ne!(b.seal("c", "f", &s), b.seal("c", "f", &s));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(SecretBox::from_encoded("short").is_err());
        assert!(SecretBox::from_encoded(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn weak_keys_are_refused_saying_why() {
        for key in ["00".repeat(32), "ab".repeat(32), "0102".repeat(16)] {
            let err = SecretBox::from_encoded(&key).unwrap_err();
            assert!(matches!(err, SecretKeyError::Weak(_)), "{key}: {err}");
            assert!(err.to_string().contains("too weak"), "{err}");
        }
        // Digits only is still a fine hex key.
        let digits = "3141592653589793238462643383279502884197169399375105820974944592";
        assert!(SecretBox::from_encoded(digits).is_ok());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("lf-key-{}", rand::random::<u32>()));
        let path = dir.join("secret.key");
        let a = SecretBox::from_file(&path, true).unwrap();
        let b = SecretBox::from_file(&path, true).unwrap();
        let sealed = a.seal("c", "f", &SecretString::from("v"));
        assert_eq!(b.open("c", "f", &sealed).unwrap().expose_secret(), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
