//! PVE's VM config file syntax (`/etc/pve/nodes/<node>/qemu-server/<vmid>.conf`): `key: value`
//! lines, the description as leading `#` comments, snapshots as `[name]` sections.

use std::collections::BTreeMap;

/// Key/value properties of one section (current config or one snapshot).
pub type Props = BTreeMap<String, String>;

/// A parsed VM config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmConf {
    /// The current config; `description` is stored under its key.
    pub props: Props,
    /// Snapshot sections by name.
    pub snapshots: BTreeMap<String, Props>,
}

fn write_section(out: &mut String, props: &Props) {
    if let Some(d) = props.get("description") {
        for line in d.split('\n') {
            out.push('#');
            out.push_str(line);
            out.push('\n');
        }
    }
    for (k, v) in props {
        if k == "description" {
            continue;
        }
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push('\n');
    }
}

impl VmConf {
    /// Serializes in PVE's order: description comments, sorted keys, then `[snapshot]` sections.
    pub fn write(&self) -> String {
        let mut out = String::new();
        write_section(&mut out, &self.props);
        for (name, props) in &self.snapshots {
            out.push('\n');
            out.push('[');
            out.push_str(name);
            out.push_str("]\n");
            write_section(&mut out, props);
        }
        out
    }

    /// Parses a config file; unknown lines are ignored like PVE's parser warns and skips.
    pub fn parse(text: &str) -> Self {
        let mut conf = VmConf::default();
        let mut current: Option<String> = None;
        let mut desc: Vec<String> = Vec::new();
        let flush_desc = |conf: &mut VmConf, current: &Option<String>, desc: &mut Vec<String>| {
            if desc.is_empty() {
                return;
            }
            let d = desc.join("\n");
            desc.clear();
            let target = match current {
                Some(s) => conf.snapshots.entry(s.clone()).or_default(),
                None => &mut conf.props,
            };
            target.insert("description".into(), d);
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('#') {
                desc.push(rest.to_string());
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                flush_desc(&mut conf, &current, &mut desc);
                let name = line[1..line.len() - 1].to_string();
                conf.snapshots.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                let target = match &current {
                    Some(s) => conf.snapshots.entry(s.clone()).or_default(),
                    None => &mut conf.props,
                };
                target.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        flush_desc(&mut conf, &current, &mut desc);
        conf
    }

    /// Whether this is a template (`template: 1`).
    pub fn is_template(&self) -> bool {
        self.props.get("template").map(String::as_str) == Some("1")
    }

    /// The config lock (`lock: clone`), if any.
    pub fn lock(&self) -> Option<&str> {
        self.props.get("lock").map(String::as_str)
    }
}

/// Whether a config key names a drive (`scsi0`, `ide2`, `efidisk0`, ...).
pub fn is_drive_key(key: &str) -> bool {
    let num = |p: &str, max: u32| {
        key.strip_prefix(p).is_some_and(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
                && n.parse::<u32>().is_ok_and(|v| v <= max)
        })
    };
    key == "efidisk0"
        || key == "tpmstate0"
        || num("ide", 3)
        || num("sata", 5)
        || num("scsi", 30)
        || num("virtio", 15)
}

/// A drive value split into its volume and options: `local-lvm:vm-100-disk-0,size=4G`.
#[derive(Debug, Clone, PartialEq)]
pub struct Drive {
    /// `storage:volname`, `none`, `cdrom`, or an allocation request `storage:SIZE_GIB`.
    pub file: String,
    /// The other `key=value` options, in order.
    pub opts: Vec<(String, String)>,
}

impl Drive {
    pub fn parse(value: &str) -> Self {
        let mut file = String::new();
        let mut opts = Vec::new();
        for (i, part) in value.split(',').enumerate() {
            match part.split_once('=') {
                Some(("file", v)) => file = v.to_string(),
                Some((k, v)) if !(i == 0 && k.contains(':')) => {
                    opts.push((k.to_string(), v.to_string()))
                }
                _ if i == 0 => file = part.to_string(),
                _ => opts.push((part.to_string(), String::new())),
            }
        }
        Drive { file, opts }
    }

    pub fn opt(&self, key: &str) -> Option<&str> {
        self.opts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_opt(&mut self, key: &str, value: &str) {
        match self.opts.iter_mut().find(|(k, _)| k == key) {
            Some(o) => o.1 = value.to_string(),
            None => self.opts.push((key.to_string(), value.to_string())),
        }
    }

    pub fn is_cdrom(&self) -> bool {
        self.opt("media") == Some("cdrom") || self.file == "cdrom" || self.file == "none"
    }

    pub fn is_cloudinit(&self) -> bool {
        self.file.contains("cloudinit")
    }

    /// `(storage id, volname)` of a volume reference.
    pub fn volume(&self) -> Option<(&str, &str)> {
        self.file.split_once(':')
    }

    pub fn render(&self) -> String {
        let mut s = self.file.clone();
        for (k, v) in &self.opts {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(k);
            if !v.is_empty() {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
}

/// Parses a PVE size (`4G`, `512M`, `64`, `1.5T`; bare numbers are bytes in `size=`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    if n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as u64)
}

/// Formats a size like PVE writes `size=` (largest exact unit).
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_with_snapshots_round_trips() {
        let text = "#first line\n#second\nboot: order=scsi0\ncores: 2\nparent: s1\nscsi0: local-lvm:vm-100-disk-0,size=4G\n\n[s1]\n#snap desc\ncores: 1\nsnaptime: 1700000000\n";
        let c = VmConf::parse(text);
        assert_eq!(c.props["description"], "first line\nsecond");
        assert_eq!(c.props["cores"], "2");
        assert_eq!(c.snapshots["s1"]["cores"], "1");
        assert_eq!(c.snapshots["s1"]["description"], "snap desc");
        assert_eq!(c.write(), text);
        assert_eq!(VmConf::parse(&c.write()), c);
    }

    #[test]
    fn drives_parse_with_and_without_file_key() {
        let d = Drive::parse("nfs-shared:104/base-104-disk-0.qcow2,size=2G,discard=on");
        assert_eq!(
            d.volume(),
            Some(("nfs-shared", "104/base-104-disk-0.qcow2"))
        );
        assert_eq!(d.opt("size"), Some("2G"));
        assert_eq!(
            d.render(),
            "nfs-shared:104/base-104-disk-0.qcow2,size=2G,discard=on"
        );
        let d = Drive::parse("file=local:iso/x.iso,media=cdrom");
        assert!(d.is_cdrom());
        assert_eq!(d.volume(), Some(("local", "iso/x.iso")));
        assert!(is_drive_key("scsi0") && is_drive_key("ide2") && is_drive_key("efidisk0"));
        assert!(!is_drive_key("net0") && !is_drive_key("scsi31") && !is_drive_key("ide01"));
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(4 << 30), "4G");
        assert_eq!(parse_size("x"), None);
    }
}
