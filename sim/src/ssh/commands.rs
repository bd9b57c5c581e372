//! The commands the simulated nodes run over SSH: `qm` (through the same API code, in the
//! foreground like the real CLI), `qemu-img create|info` and `pvesm path`.

use std::sync::Arc;

use serde_json::Value;

use crate::api::{self, User};
use crate::schema::Raw;
use crate::sim::Sim;
use crate::storage;

/// The output of one command.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: u32,
}

impl Output {
    fn ok(stdout: String) -> Self {
        Output {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }

    fn err(msg: impl Into<String>, code: u32) -> Self {
        let mut stderr: String = msg.into();
        if !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        Output {
            stdout: String::new(),
            stderr,
            code,
        }
    }
}

/// Splits a command line like a POSIX shell would for simple quoting ('…', "…", \x).
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// `--key value` / `--flag` options after the positional arguments.
fn options(args: &[String]) -> (Vec<String>, Vec<(String, Raw)>) {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(k) = args[i].strip_prefix("--") {
            let (k, v) = match k.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match args.get(i + 1) {
                    Some(v) if !v.starts_with("--") => {
                        i += 1;
                        (k.to_string(), v.clone())
                    }
                    _ => (k.to_string(), "1".to_string()),
                },
            };
            let v = match v.as_str() {
                "true" | "yes" | "on" => "1".to_string(),
                "false" | "no" | "off" => "0".to_string(),
                _ => v,
            };
            opts.push((k, Raw::Text(v)));
        } else {
            pos.push(args[i].clone());
        }
        i += 1;
    }
    (pos, opts)
}

fn api_error(e: &api::ApiError) -> String {
    match &e.errors {
        Some(errs) => {
            errs.iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>()
                + &e.message
        }
        None => e.message.clone(),
    }
}

/// Runs one command line on `node`.
pub async fn run_command(sim: &Arc<Sim>, node: &str, cmd: &str) -> Output {
    let words = split_words(cmd);
    let Some(first) = words.first() else {
        return Output::err("empty command", 127);
    };
    match first.as_str() {
        "qm" => qm(sim, node, &words[1..]).await,
        "qemu-img" => qemu_img(sim, &words[1..]).await,
        "pvesm" => pvesm(sim, node, &words[1..]),
        "mkdir" => mkdir(sim, &words[1..]),
        "test" => test(&words[1..]),
        "true" => Output::ok(String::new()),
        other => Output::err(format!("bash: line 1: {other}: command not found"), 127),
    }
}

async fn qm(sim: &Arc<Sim>, node: &str, args: &[String]) -> Output {
    let Some(sub) = args.first() else {
        return Output::err(
            "400 not enough arguments\nqm <COMMAND> [ARGS] [OPTIONS]",
            255,
        );
    };
    let (pos, opts) = options(&args[1..]);
    let root = User {
        id: "root@pam".into(),
    };
    let vm = |i: usize| pos.get(i).cloned().unwrap_or_default();
    let (method, path, mut params, is_task) = match sub.as_str() {
        "clone" => {
            let mut o = opts.clone();
            o.push(("newid".into(), Raw::Text(vm(1))));
            (
                "POST",
                format!("/nodes/{node}/qemu/{}/clone", vm(0)),
                o,
                true,
            )
        }
        "start" | "stop" | "shutdown" | "reboot" | "reset" | "suspend" | "resume" => (
            "POST",
            format!("/nodes/{node}/qemu/{}/status/{sub}", vm(0)),
            opts.clone(),
            true,
        ),
        "set" => (
            "PUT",
            format!("/nodes/{node}/qemu/{}/config", vm(0)),
            opts.clone(),
            false,
        ),
        "destroy" => (
            "DELETE",
            format!("/nodes/{node}/qemu/{}", vm(0)),
            opts.clone(),
            true,
        ),
        "template" => (
            "POST",
            format!("/nodes/{node}/qemu/{}/template", vm(0)),
            opts.clone(),
            true,
        ),
        "snapshot" => {
            let mut o = opts.clone();
            o.push(("snapname".into(), Raw::Text(vm(1))));
            (
                "POST",
                format!("/nodes/{node}/qemu/{}/snapshot", vm(0)),
                o,
                true,
            )
        }
        "rollback" => (
            "POST",
            format!("/nodes/{node}/qemu/{}/snapshot/{}/rollback", vm(0), vm(1)),
            opts.clone(),
            true,
        ),
        "delsnapshot" => (
            "DELETE",
            format!("/nodes/{node}/qemu/{}/snapshot/{}", vm(0), vm(1)),
            opts.clone(),
            true,
        ),
        "config" => (
            "GET",
            format!("/nodes/{node}/qemu/{}/config", vm(0)),
            opts.clone(),
            false,
        ),
        "status" => (
            "GET",
            format!("/nodes/{node}/qemu/{}/status/current", vm(0)),
            vec![],
            false,
        ),
        "list" => ("GET", format!("/nodes/{node}/qemu"), vec![], false),
        other => return Output::err(format!("unknown command 'qm {other}'"), 255),
    };
    if sub == "list" {
        params.clear();
    }
    let result = api::call(sim, &root, method, &path, params).await;
    let value = match result {
        Ok(v) => v,
        Err(e) => return Output::err(api_error(&e), 255),
    };
    if is_task {
        let Some(task) = value.as_str().and_then(|u| sim.task(u)) else {
            return Output::ok(String::new());
        };
        let exit = task.wait().await;
        let (lines, _) = task.log_lines(0, usize::MAX);
        let mut out = String::new();
        for (_, l) in lines {
            if !l.starts_with("TASK ") {
                out.push_str(&l);
                out.push('\n');
            }
        }
        return if exit == "OK" {
            Output::ok(out)
        } else {
            Output {
                stdout: out,
                stderr: format!("{exit}\n"),
                code: 255,
            }
        };
    }
    match sub.as_str() {
        "config" => {
            let mut out = String::new();
            if let Value::Object(m) = &value {
                for (k, v) in m {
                    if k == "digest" {
                        continue;
                    }
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    out.push_str(&format!("{k}: {s}\n"));
                }
            }
            Output::ok(out)
        }
        "status" => Output::ok(format!(
            "status: {}\n",
            value["status"].as_str().unwrap_or("unknown")
        )),
        "list" => {
            let mut out = format!(
                "{:>10} {:<20} {:<10} {:<10} {:<12} {:<10}\n",
                "VMID", "NAME", "STATUS", "MEM(MB)", "BOOTDISK(GB)", "PID"
            );
            for v in value.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:>10} {:<20} {:<10} {:<10} {:<12.2} {:<10}\n",
                    v["vmid"],
                    v["name"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or(""),
                    v["maxmem"].as_u64().unwrap_or(0) >> 20,
                    v["maxdisk"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64,
                    v["pid"].as_u64().unwrap_or(0)
                ));
            }
            Output::ok(out)
        }
        _ => Output::ok(String::new()),
    }
}

async fn qemu_img(sim: &Arc<Sim>, args: &[String]) -> Output {
    match args.first().map(String::as_str) {
        Some("info") => {
            let Some(path) = args.iter().skip(1).rfind(|a| !a.starts_with('-')) else {
                return Output::err("qemu-img: Expecting image file name", 1);
            };
            match crate::disks::info(std::path::Path::new(path)).await {
                Ok(s) => Output::ok(s),
                Err(e) => Output::err(e, 1),
            }
        }
        Some("create") => {
            if sim.use_qemu_img {
                let out = tokio::process::Command::new("qemu-img")
                    .args(args)
                    .output()
                    .await;
                return match out {
                    Ok(o) => Output {
                        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                        code: o.status.code().unwrap_or(1) as u32,
                    },
                    Err(e) => Output::err(format!("qemu-img: {e}"), 1),
                };
            }
            // accounting only: -f FMT [-F FMT] [-b BACKING] PATH [SIZE]
            let mut fmt = "raw".to_string();
            let mut backing = None;
            let mut rest = Vec::new();
            let mut i = 1;
            while i < args.len() {
                match args[i].as_str() {
                    "-f" => {
                        fmt = args.get(i + 1).cloned().unwrap_or_default();
                        i += 1;
                    }
                    "-b" => {
                        backing = args.get(i + 1).cloned();
                        i += 1;
                    }
                    "-F" | "-o" => i += 1,
                    a if a.starts_with('-') => {}
                    a => rest.push(a.to_string()),
                }
                i += 1;
            }
            let Some(path) = rest.first() else {
                return Output::err("qemu-img: Expecting image file name", 1);
            };
            let size = rest.get(1).and_then(|s| crate::conf::parse_size(s));
            let size = match (size, &backing) {
                (Some(s), _) => s,
                (None, Some(b)) => {
                    let base = std::path::Path::new(path)
                        .parent()
                        .unwrap_or(std::path::Path::new("/"))
                        .join(b);
                    crate::disks::read_meta(&base).map(|m| m.size).unwrap_or(0)
                }
                (None, None) => {
                    return Output::err("qemu-img: Image creation needs a size parameter", 1)
                }
            };
            match crate::disks::create(
                std::path::Path::new(path),
                &fmt,
                size,
                backing.as_deref(),
                false,
            )
            .await
            {
                Ok(()) => Output::ok(String::new()),
                Err(e) => Output::err(e, 1),
            }
        }
        Some(other) => Output::err(format!("qemu-img: Command not found: {other}"), 1),
        None => Output::err("qemu-img: Not enough arguments", 1),
    }
}

/// `mkdir [-p] DIR…`, confined to the simulator's data directory (where storages live).
/// `test -e PATH`: exit 0 when the path exists, 1 when not, 2 for anything else (as coreutils).
fn test(args: &[String]) -> Output {
    match args {
        [flag, path] if flag == "-e" => {
            if std::path::Path::new(path).exists() {
                Output::ok(String::new())
            } else {
                Output {
                    stdout: String::new(),
                    stderr: String::new(),
                    code: 1,
                }
            }
        }
        _ => Output::err("test: only `test -e PATH` is simulated", 2),
    }
}

fn mkdir(sim: &Sim, args: &[String]) -> Output {
    let parents = args.iter().any(|a| a == "-p");
    for dir in args.iter().filter(|a| !a.starts_with('-')) {
        let path = std::path::Path::new(dir);
        if !path.starts_with(&sim.data_dir) {
            return Output::err(
                format!("mkdir: cannot create directory '{dir}': Permission denied"),
                1,
            );
        }
        let made = if parents {
            std::fs::create_dir_all(path)
        } else {
            std::fs::create_dir(path)
        };
        if let Err(e) = made {
            return Output::err(format!("mkdir: cannot create directory '{dir}': {e}"), 1);
        }
    }
    Output::ok(String::new())
}

fn pvesm(sim: &Sim, node: &str, args: &[String]) -> Output {
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("path"), Some(volid)) => {
            let Some((sid, volname)) = volid.split_once(':') else {
                return Output::err(format!("unable to parse volume ID '{volid}'"), 255);
            };
            if storage::def(sid).is_none() {
                return Output::err(format!("storage '{sid}' does not exist"), 255);
            }
            let p = storage::volume_path(&sim.data_dir, node, sid, volname);
            Output::ok(format!("{}\n", p.display()))
        }
        (Some(other), _) => Output::err(format!("unknown command 'pvesm {other}'"), 255),
        (None, _) => Output::err("400 not enough arguments", 255),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"qm clone 104 200 --name 'a b' --description "x \"y\"" c\ d"#),
            vec![
                "qm",
                "clone",
                "104",
                "200",
                "--name",
                "a b",
                "--description",
                "x \"y\"",
                "c d"
            ]
        );
    }
}
