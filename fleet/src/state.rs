//! The states of labfleet's own records, typed. Each is stored as its `as_str` name (the strings
//! the tables have always held); `parse` reads one back, and a name this build does not know is
//! an error where it is read, never a silent default.

use serde::Serialize;

/// Declares a state enum with its stored names, `ALL`, `as_str`, `parse` and `Display`.
macro_rules! stored_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Reads a stored name back.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_state! {
    /// Where a managed VM is in its life (`class_vms.state`).
    VmState {
        /// Placed and given a VMID; nothing asked of Proxmox yet.
        Planned => "planned",
        /// Its clone task runs (`upid` says which).
        Cloning => "cloning",
        /// Exists on the cluster, powered off.
        Created => "created",
        /// Its start task runs.
        Starting => "starting",
        /// Exists and runs.
        Running => "running",
        /// Gave up with an error (`error` says why).
        Failed => "failed",
        /// Being destroyed.
        Deleting => "deleting",
        /// Made, but its cluster no longer lists it (found by reconciliation).
        Missing => "missing",
    }
}

impl VmState {
    /// The states of a VM that exists and may be powered: made, and not being destroyed.
    pub const POWERABLE: [VmState; 2] = [VmState::Created, VmState::Running];

    /// True while its deployment has not reached the end (a VM whose job gave up in one of
    /// these is shown as failed).
    pub fn deploying(self) -> bool {
        matches!(
            self,
            VmState::Planned | VmState::Cloning | VmState::Created | VmState::Starting
        )
    }

    /// True when it exists and may be powered.
    pub fn powerable(self) -> bool {
        Self::POWERABLE.contains(&self)
    }

    /// The state of a made VM, by whether it runs.
    pub fn made(running: bool) -> VmState {
        if running {
            VmState::Running
        } else {
            VmState::Created
        }
    }
}

stored_state! {
    /// A class's state (`classes.state`).
    ClassState {
        /// In use.
        Active => "active",
        /// Its VMs are being destroyed.
        Deleting => "deleting",
        /// Gone (kept for the record).
        Deleted => "deleted",
    }
}

stored_state! {
    /// What reconciliation found on a VMID of labfleet's range that no VM row owns
    /// (`orphans.state`).
    OrphanState {
        /// Carries our marker; no managed VM owns it.
        Orphan => "orphan",
        /// No marker: someone else's VM in our VMID range. Never touched.
        Foreign => "foreign",
        /// A `destroy_orphan` job works on it.
        Destroying => "destroying",
    }
}

stored_state! {
    /// A VMID reservation's state (`vmid_reservations.state`).
    ReservationState {
        /// A managed VM has it.
        Held => "held",
        /// A VM that is not ours sits there: never handed out.
        Quarantined => "quarantined",
        /// Freed; reusable once its cool-down has passed.
        Cooling => "cooling",
    }
}

/// A stored state this build does not know.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown {what} state `{found}` in the database")]
pub struct UnknownState {
    /// Which state (`VM`, `class`, …).
    pub what: &'static str,
    /// The stored text.
    pub found: String,
}

impl VmState {
    /// Reads a stored VM state, or says it is unknown.
    pub fn from_stored(s: &str) -> Result<VmState, UnknownState> {
        Self::parse(s).ok_or_else(|| UnknownState {
            what: "VM",
            found: s.to_string(),
        })
    }
}

impl ClassState {
    /// Reads a stored class state, or says it is unknown.
    pub fn from_stored(s: &str) -> Result<ClassState, UnknownState> {
        Self::parse(s).ok_or_else(|| UnknownState {
            what: "class",
            found: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_stored_name() {
        for s in VmState::ALL {
            assert_eq!(VmState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in ClassState::ALL {
            assert_eq!(ClassState::parse(s.as_str()), Some(*s));
        }
        for s in OrphanState::ALL {
            assert_eq!(OrphanState::parse(s.as_str()), Some(*s));
        }
        for s in ReservationState::ALL {
            assert_eq!(ReservationState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            VmState::from_stored("levitating").unwrap_err().to_string(),
            "unknown VM state `levitating` in the database"
        );
    }
}
