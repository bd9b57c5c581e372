//! Disk images: real qcow2/raw files through `qemu-img` when available, otherwise small
//! placeholder files holding the same metadata (size, format, backing file) as JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// Whether `qemu-img` can be run.
pub fn qemu_img_available() -> bool {
    std::process::Command::new("qemu-img")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Metadata of a disk file, real or placeholder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub size: u64,
    pub format: String,
    pub backing: Option<String>,
    #[serde(default)]
    pub snapshots: Vec<String>,
}

async fn qemu_img(args: &[&str]) -> Result<String, String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("qemu-img: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn write_placeholder(path: &Path, meta: &Meta) -> Result<(), String> {
    let text = serde_json::to_string(meta).map_err(|e| e.to_string())?;
    std::fs::write(path, text)
        .map_err(|e| format!("unable to create image '{}': {e}", path.display()))
}

fn ensure_parent(path: &Path) -> Result<(), String> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Creates an image; `backing` = path relative to the image's directory (linked clone).
pub async fn create(
    path: &Path,
    format: &str,
    size: u64,
    backing: Option<&str>,
    real: bool,
) -> Result<(), String> {
    ensure_parent(path)?;
    let p = path.to_string_lossy().into_owned();
    if real && (format == "qcow2" || format == "raw") {
        let size_s = size.to_string();
        let mut args = vec!["create", "-q", "-f", format];
        if let Some(b) = backing {
            args.extend(["-F", "qcow2", "-b", b, &p]);
        } else {
            args.extend([p.as_str(), size_s.as_str()]);
        }
        qemu_img(&args).await?;
        return Ok(());
    }
    write_placeholder(
        path,
        &Meta {
            size,
            format: format.to_string(),
            backing: backing.map(str::to_string),
            snapshots: vec![],
        },
    )
}

/// Copies an image into a new, independent one (full clone). Progress is the caller's business.
pub async fn copy(
    src: &Path,
    dst: &Path,
    format: &str,
    size: u64,
    real: bool,
) -> Result<(), String> {
    ensure_parent(dst)?;
    let src_real = read_meta(src).is_some_and(|m| is_real(src, &m));
    if real && src_real && (format == "qcow2" || format == "raw") {
        let s = src.to_string_lossy().into_owned();
        let d = dst.to_string_lossy().into_owned();
        qemu_img(&["convert", "-q", "-O", format, &s, &d]).await?;
        return Ok(());
    }
    create(dst, format, size, None, real).await
}

/// Internal snapshot operations on qcow2 images: "-c" create, "-a" apply, "-d" delete.
pub async fn snapshot(path: &Path, op: &str, name: &str) -> Result<(), String> {
    let Some(mut meta) = read_meta(path) else {
        return Ok(());
    };
    if meta.format != "qcow2" {
        return Ok(());
    }
    if is_real(path, &meta) {
        let p = path.to_string_lossy().into_owned();
        qemu_img(&["snapshot", op, name, &p]).await?;
        return Ok(());
    }
    match op {
        "-c" => meta.snapshots.push(name.to_string()),
        "-d" => meta.snapshots.retain(|s| s != name),
        _ => {}
    }
    write_placeholder(path, &meta)
}

/// Grows an image to `size` bytes.
pub async fn resize(path: &Path, size: u64) -> Result<(), String> {
    let Some(mut meta) = read_meta(path) else {
        return Ok(());
    };
    if is_real(path, &meta) {
        let p = path.to_string_lossy().into_owned();
        qemu_img(&[
            "resize",
            "-q",
            "-f",
            &meta.format.clone(),
            &p,
            &size.to_string(),
        ])
        .await?;
        return Ok(());
    }
    meta.size = size;
    write_placeholder(path, &meta)
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir); // only succeeds when empty
    }
}

pub fn rename(from: &Path, to: &Path) -> Result<(), String> {
    ensure_parent(to)?;
    std::fs::rename(from, to).map_err(|e| format!("rename '{}' failed: {e}", from.display()))
}

fn is_real(path: &Path, _meta: &Meta) -> bool {
    use std::io::Read;
    // placeholders are JSON; anything else on disk is a real image
    let mut b = [0u8; 1];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut b))
        .is_ok_and(|n| n == 1 && b[0] != b'{')
}

/// Reads metadata from a real qcow2 header, a raw file, or a placeholder.
pub fn read_meta(path: &Path) -> Option<Meta> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 4096];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    if head.first() == Some(&b'{') {
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).ok()?;
        head.extend(rest);
        return serde_json::from_slice(&head).ok();
    }
    if head.len() >= 32 && head[..4] == *b"QFI\xfb" {
        let be64 = |o: usize| u64::from_be_bytes(head[o..o + 8].try_into().unwrap_or([0; 8]));
        let be32 = |o: usize| u32::from_be_bytes(head[o..o + 4].try_into().unwrap_or([0; 4]));
        let off = be64(8) as usize;
        let len = be32(16) as usize;
        let backing = (off > 0 && off + len <= head.len())
            .then(|| String::from_utf8_lossy(&head[off..off + len]).into_owned());
        return Some(Meta {
            size: be64(24),
            format: "qcow2".into(),
            backing,
            snapshots: vec![],
        });
    }
    let len = f.metadata().ok()?.len();
    Some(Meta {
        size: len,
        format: "raw".into(),
        backing: None,
        snapshots: vec![],
    })
}

/// `qemu-img info` output for the SSH command (real when possible, else from metadata).
pub async fn info(path: &Path) -> Result<String, String> {
    let meta = read_meta(path).ok_or_else(|| {
        format!(
            "qemu-img: Could not open '{}': Could not open '{}': No such file or directory",
            path.display(),
            path.display()
        )
    })?;
    if is_real(path, &meta) {
        return qemu_img(&["info", &path.to_string_lossy()]).await;
    }
    let mut s = format!(
        "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: 4 KiB\n",
        path.display(),
        meta.format,
        crate::conf::format_size(meta.size),
        meta.size
    );
    if let Some(b) = &meta.backing {
        s.push_str(&format!("backing file: {b}\nbacking file format: qcow2\n"));
    }
    Ok(s)
}
