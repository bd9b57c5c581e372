//! The ownership marker every labfleet VM carries from birth in its `description` (PVE's clone
//! call takes no `tags` but copies a `description` into the new config; `docs/proxmox.md`, "The
//! ownership marker"). After a crash between a Proxmox call and the database write, the marker
//! tells our VM (adopt it, or wait for its clone to finish) from a foreign one (quarantine the
//! VMID, take another).

/// What the marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// `classes.id`.
    pub class_id: i64,
    /// `class_vms.id`.
    pub class_vm_id: i64,
}

const KEY: &str = "labfleet-managed:";

impl Marker {
    /// The description to give the VM: the class description, if any, then the marker line.
    pub fn description(&self, class_description: Option<&str>) -> String {
        let line = format!("{KEY} {}", self.fields());
        match class_description.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => format!("{d}\n\n{line}"),
            None => line,
        }
    }

    /// What the marker line says after its key: `class=<id> vm=<id>`.
    pub fn fields(&self) -> String {
        format!("class={} vm={}", self.class_id, self.class_vm_id)
    }

    /// Reads [`Marker::fields`] back.
    pub fn parse_fields(fields: &str) -> Option<Marker> {
        let mut class_id = None;
        let mut class_vm_id = None;
        for part in fields.split_whitespace() {
            match part.split_once('=') {
                Some(("class", v)) => class_id = v.parse().ok(),
                Some(("vm", v)) => class_vm_id = v.parse().ok(),
                _ => {}
            }
        }
        Some(Marker {
            class_id: class_id?,
            class_vm_id: class_vm_id?,
        })
    }

    /// Finds the marker in a VM description.
    pub fn parse(description: &str) -> Option<Marker> {
        let line = description
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(KEY))?;
        Marker::parse_fields(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_a_class_description() {
        let m = Marker {
            class_id: 7,
            class_vm_id: 1234,
        };
        assert_eq!(Marker::parse(&m.description(None)), Some(m));
        let d = m.description(Some("Intro biology\nweek 1"));
        assert!(d.starts_with("Intro biology"));
        assert_eq!(Marker::parse(&d), Some(m));
    }

    #[test]
    fn foreign_descriptions_have_no_marker() {
        assert_eq!(Marker::parse("web server, do not touch"), None);
        assert_eq!(Marker::parse("labfleet-managed: class=x vm=1"), None);
        assert_eq!(Marker::parse(""), None);
    }
}
