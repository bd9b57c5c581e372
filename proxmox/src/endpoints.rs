//! The registry of every PVE endpoint this client calls: method, path template and the
//! parameters it may send, with their schema types. Every request is checked against its
//! descriptor before it leaves ([`Endpoint::check`]), and a test checks every descriptor against
//! the vendored PVE schema, so a misspelt or mistyped parameter fails a test, not a deployment.

use std::fmt;

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET (parameters in the query string).
    Get,
    /// POST (form body).
    Post,
    /// PUT (form body).
    Put,
    /// DELETE (parameters in the query string).
    Delete,
}

impl Method {
    /// The method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schema type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Sent as `0`/`1`.
    Boolean,
    /// Sent as a decimal integer.
    Integer,
    /// Sent as a decimal number.
    Number,
    /// Sent as is.
    String,
}

impl ParamType {
    /// The schema's name for the type.
    pub fn schema_name(self) -> &'static str {
        match self {
            ParamType::Boolean => "boolean",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::String => "string",
        }
    }

    fn accepts(self, value: &str) -> bool {
        match self {
            ParamType::Boolean => value == "0" || value == "1",
            ParamType::Integer => value.parse::<i64>().is_ok(),
            ParamType::Number => value.parse::<f64>().is_ok_and(f64::is_finite),
            ParamType::String => true,
        }
    }
}

/// A body or query parameter. Indexed parameters use the schema's `[n]` form (`net[n]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Exact API name.
    pub name: &'static str,
    /// Schema type.
    pub ty: ParamType,
    /// Whether the schema requires it.
    pub required: bool,
}

/// One API call: method, path template below `/api2/json`, and the parameters it may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path template with `{node}`, `{vmid}`, … placeholders.
    pub path: &'static str,
    /// Parameters other than path placeholders.
    pub params: &'static [Param],
}

impl Endpoint {
    /// Finds the declared parameter for a concrete name (`net0` matches `net[n]`).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| match p.name.strip_suffix("[n]") {
                Some(base) => name
                    .strip_prefix(base)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                None => p.name == name,
            })
    }

    /// Checks that every parameter is declared with a value of its type and that every
    /// required one is present.
    pub fn check(&self, params: &[(String, String)]) -> Result<(), String> {
        for (name, value) in params {
            let Some(p) = self.param(name) else {
                return Err(format!(
                    "parameter '{name}' is not accepted by {} {}",
                    self.method, self.path
                ));
            };
            if !p.ty.accepts(value) {
                return Err(format!(
                    "parameter '{name}' must be of type {}",
                    p.ty.schema_name()
                ));
            }
        }
        for p in self.params.iter().filter(|p| p.required) {
            if !params.iter().any(|(n, _)| n == p.name) {
                return Err(format!("required parameter '{}' is missing", p.name));
            }
        }
        Ok(())
    }

    /// Fills the path template; each value is percent-encoded as a path segment.
    pub fn fill(&self, args: &[(&str, &str)]) -> Result<String, String> {
        let mut out = String::with_capacity(self.path.len() + 32);
        let mut rest = self.path;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .ok_or_else(|| format!("bad path template {}", self.path))?;
            let key = &rest[start + 1..end];
            let value = args
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("missing path argument {key}"))?;
            if value.is_empty() {
                return Err(format!("empty path argument {key}"));
            }
            encode_segment(value, &mut out);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Percent-encodes everything but RFC 3986 `pchar`s, so UPIDs keep their `:`, `@` and `!`.
fn encode_segment(value: &str, out: &mut String) {
    for b in value.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

const fn req(name: &'static str, ty: ParamType) -> Param {
    Param {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: ParamType) -> Param {
    Param {
        name,
        ty,
        required: false,
    }
}

use ParamType::{Boolean as B, Integer as I, Number as N, String as S};

macro_rules! endpoint {
    ($name:ident, $doc:literal, $method:ident, $path:literal, $params:expr) => {
        #[doc = $doc]
        pub const $name: Endpoint = Endpoint {
            method: Method::$method,
            path: $path,
            params: &$params,
        };
    };
}

endpoint!(
    TICKET,
    "Log in for a ticket.",
    Post,
    "/access/ticket",
    [
        req("username", S),
        req("password", S),
        opt("realm", S),
        opt("otp", S)
    ]
);
endpoint!(VERSION, "PVE version.", Get, "/version", []);
endpoint!(NODES, "Cluster node index.", Get, "/nodes", []);
endpoint!(NODE_STATUS, "Node status.", Get, "/nodes/{node}/status", []);
endpoint!(
    CLUSTER_RESOURCES,
    "Cluster-wide resources.",
    Get,
    "/cluster/resources",
    [opt("type", S)]
);
endpoint!(
    CLUSTER_STATUS,
    "Cluster and quorum status.",
    Get,
    "/cluster/status",
    []
);
endpoint!(
    NEXTID,
    "Next free VMID (reserves nothing).",
    Get,
    "/cluster/nextid",
    [opt("vmid", I)]
);
endpoint!(
    QEMU_LIST,
    "VMs of a node.",
    Get,
    "/nodes/{node}/qemu",
    [opt("full", B)]
);

/// Settings shared by VM creation and config updates (see `params::VmSettings`).
macro_rules! vm_settings {
    ($($extra:expr),* $(,)?) => {
        [
            opt("name", S), opt("description", S), opt("tags", S), opt("memory", S),
            opt("balloon", I), opt("cores", I), opt("sockets", I), opt("vcpus", I), opt("cpu", S),
            opt("cpulimit", N), opt("cpuunits", I), opt("numa", B), opt("ostype", S),
            opt("scsihw", S), opt("agent", S), opt("boot", S), opt("bios", S), opt("machine", S),
            opt("vga", S), opt("kvm", B), opt("acpi", B), opt("onboot", B), opt("protection", B),
            opt("ciuser", S), opt("cipassword", S), opt("citype", S), opt("ciupgrade", B),
            opt("sshkeys", S), opt("nameserver", S), opt("searchdomain", S),
            opt("net[n]", S), opt("ipconfig[n]", S), opt("scsi[n]", S), opt("virtio[n]", S),
            opt("sata[n]", S), opt("ide[n]", S), opt("efidisk0", S), opt("tpmstate0", S),
            opt("serial[n]", S), opt("usb[n]", S), opt("hostpci[n]", S),
            opt("smbios1", S), opt("vmgenid", S),
            $($extra),*
        ]
    };
}

endpoint!(
    QEMU_CREATE,
    "Create a VM (UPID).",
    Post,
    "/nodes/{node}/qemu",
    vm_settings!(
        req("vmid", I),
        opt("pool", S),
        opt("storage", S),
        opt("start", B),
        opt("template", B)
    )
);
endpoint!(
    QEMU_DELETE,
    "Destroy a VM (UPID).",
    Delete,
    "/nodes/{node}/qemu/{vmid}",
    [
        opt("purge", B),
        opt("destroy-unreferenced-disks", B),
        opt("skiplock", B)
    ]
);
endpoint!(
    QEMU_CLONE,
    "Clone a VM or template (UPID; its id is the SOURCE vmid).",
    Post,
    "/nodes/{node}/qemu/{vmid}/clone",
    [
        req("newid", I),
        opt("name", S),
        opt("description", S),
        opt("full", B),
        opt("pool", S),
        opt("snapname", S),
        opt("storage", S),
        opt("target", S),
        opt("format", S),
        opt("bwlimit", I)
    ]
);
endpoint!(
    QEMU_CONFIG_GET,
    "Read a VM config.",
    Get,
    "/nodes/{node}/qemu/{vmid}/config",
    [opt("current", B), opt("snapshot", S)]
);
endpoint!(
    QEMU_CONFIG_POST,
    "Update a VM config asynchronously (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/config",
    vm_settings!(
        opt("delete", S),
        opt("revert", S),
        opt("digest", S),
        opt("skiplock", B),
        opt("background_delay", I)
    )
);
endpoint!(
    QEMU_CONFIG_PUT,
    "Update a VM config synchronously.",
    Put,
    "/nodes/{node}/qemu/{vmid}/config",
    vm_settings!(
        opt("delete", S),
        opt("revert", S),
        opt("digest", S),
        opt("skiplock", B)
    )
);
endpoint!(
    QEMU_STATUS,
    "Current VM status.",
    Get,
    "/nodes/{node}/qemu/{vmid}/status/current",
    []
);
endpoint!(
    QEMU_START,
    "Start a VM (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/status/start",
    [opt("timeout", I), opt("skiplock", B)]
);
endpoint!(
    QEMU_STOP,
    "Hard-stop a VM (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/status/stop",
    [
        opt("timeout", I),
        opt("skiplock", B),
        opt("keepActive", B),
        opt("overrule-shutdown", B)
    ]
);
endpoint!(
    QEMU_SHUTDOWN,
    "Shut a VM down via ACPI/agent (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/status/shutdown",
    [
        opt("forceStop", B),
        opt("timeout", I),
        opt("keepActive", B),
        opt("skiplock", B)
    ]
);
endpoint!(
    QEMU_REBOOT,
    "Reboot a VM (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/status/reboot",
    [opt("timeout", I)]
);
endpoint!(
    SNAPSHOT_LIST,
    "List snapshots.",
    Get,
    "/nodes/{node}/qemu/{vmid}/snapshot",
    []
);
endpoint!(
    SNAPSHOT_CREATE,
    "Take a snapshot (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/snapshot",
    [req("snapname", S), opt("description", S), opt("vmstate", B)]
);
endpoint!(
    SNAPSHOT_DELETE,
    "Delete a snapshot (UPID).",
    Delete,
    "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
    [opt("force", B)]
);
endpoint!(
    SNAPSHOT_ROLLBACK,
    "Roll back to a snapshot (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
    [opt("start", B)]
);
endpoint!(
    QEMU_TEMPLATE,
    "Convert a VM to a template (UPID).",
    Post,
    "/nodes/{node}/qemu/{vmid}/template",
    [opt("disk", S)]
);
endpoint!(
    QEMU_RESIZE,
    "Grow a disk (UPID on PVE ≥ 8, null before).",
    Put,
    "/nodes/{node}/qemu/{vmid}/resize",
    [
        req("disk", S),
        req("size", S),
        opt("digest", S),
        opt("skiplock", B)
    ]
);
endpoint!(
    QEMU_RRDDATA,
    "VM RRD statistics.",
    Get,
    "/nodes/{node}/qemu/{vmid}/rrddata",
    [req("timeframe", S), opt("cf", S)]
);
endpoint!(
    TASK_STATUS,
    "Task status.",
    Get,
    "/nodes/{node}/tasks/{upid}/status",
    []
);
endpoint!(
    TASK_LOG,
    "Task log lines.",
    Get,
    "/nodes/{node}/tasks/{upid}/log",
    [opt("start", I), opt("limit", I)]
);
endpoint!(
    TASK_STOP,
    "Stop a task.",
    Delete,
    "/nodes/{node}/tasks/{upid}",
    []
);
endpoint!(
    STORAGE_LIST,
    "Storages of a node.",
    Get,
    "/nodes/{node}/storage",
    [
        opt("content", S),
        opt("enabled", B),
        opt("storage", S),
        opt("target", S)
    ]
);
endpoint!(
    STORAGE_CONTENT,
    "Content of a storage.",
    Get,
    "/nodes/{node}/storage/{storage}/content",
    [opt("content", S), opt("vmid", I)]
);
endpoint!(
    LXC_LIST,
    "Containers of a node.",
    Get,
    "/nodes/{node}/lxc",
    []
);

/// Every endpoint the client can call.
pub const ALL: &[Endpoint] = &[
    TICKET,
    VERSION,
    NODES,
    NODE_STATUS,
    CLUSTER_RESOURCES,
    CLUSTER_STATUS,
    NEXTID,
    QEMU_LIST,
    QEMU_CREATE,
    QEMU_DELETE,
    QEMU_CLONE,
    QEMU_CONFIG_GET,
    QEMU_CONFIG_POST,
    QEMU_CONFIG_PUT,
    QEMU_STATUS,
    QEMU_START,
    QEMU_STOP,
    QEMU_SHUTDOWN,
    QEMU_REBOOT,
    SNAPSHOT_LIST,
    SNAPSHOT_CREATE,
    SNAPSHOT_DELETE,
    SNAPSHOT_ROLLBACK,
    QEMU_TEMPLATE,
    QEMU_RESIZE,
    QEMU_RRDDATA,
    TASK_STATUS,
    TASK_LOG,
    TASK_STOP,
    STORAGE_LIST,
    STORAGE_CONTENT,
    LXC_LIST,
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn indexed_parameters_match_their_schema_form() {
        assert!(QEMU_CONFIG_PUT.param("net0").is_some());
        assert!(QEMU_CONFIG_PUT.param("net12").is_some());
        assert!(QEMU_CONFIG_PUT.param("net").is_none());
        assert!(QEMU_CONFIG_PUT.param("netx").is_none());
        assert!(QEMU_CONFIG_PUT.param("efidisk0").is_some());
    }

    #[test]
    fn check_rejects_unknown_mistyped_and_missing_parameters() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(QEMU_CLONE
            .check(&p(&[("newid", "101"), ("full", "1")]))
            .is_ok());
        assert!(QEMU_CLONE
            .check(&p(&[("newid", "101"), ("full", "true")]))
            .is_err());
        assert!(QEMU_CLONE.check(&p(&[("newid", "x")])).is_err());
        assert!(QEMU_CLONE.check(&p(&[("full", "1")])).is_err());
        assert!(QEMU_CLONE
            .check(&p(&[("newid", "101"), ("tags", "a")]))
            .is_err());
    }

    #[test]
    fn fill_encodes_segments_but_keeps_upid_characters() {
        let upid = "UPID:pve1:0000A1B2:00C0FFEE:66DC5987:qmclone:132:root@pam!ci:";
        let path = TASK_STATUS
            .fill(&[("node", "pve1"), ("upid", upid)])
            .unwrap();
        assert_eq!(path, format!("/nodes/pve1/tasks/{upid}/status"));
        let odd = SNAPSHOT_DELETE
            .fill(&[("node", "n"), ("vmid", "100"), ("snapname", "a/b c")])
            .unwrap();
        assert_eq!(odd, "/nodes/n/qemu/100/snapshot/a%2Fb%20c");
        assert!(NODE_STATUS.fill(&[]).is_err());
        assert!(NODE_STATUS.fill(&[("node", "")]).is_err());
    }
}
