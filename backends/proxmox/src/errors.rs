//! Proxmox's failures as the seam's [`BackendError`]: the one place that reads PVE's error text.

use labfleet_fleet::BackendError;
use labfleet_proxmox::ProxmoxError;

/// Classifies a failed call or task.
///
/// - "already exists" / "file exists": the VMID (or a volume name of it) is taken;
/// - "already running": a start of a running VM (PVE reports it in the start task);
/// - "Configuration file … does not exist": the VM is not there (PVE answers 500 for it); other
///   "does not exist" texts (a storage, a snapshot) are not a missing guest and stay permanent;
/// - everything the client calls transient (connection trouble, locks, timeouts, 5xx): transient.
pub(crate) fn classify(e: ProxmoxError) -> BackendError {
    let message = e.to_string();
    let text = message.to_lowercase();
    if e.is_already_exists() {
        BackendError::AlreadyExists(message)
    } else if text.contains("already running") {
        BackendError::AlreadyInState(message)
    } else if guest_missing(&text) {
        BackendError::NotFound(message)
    } else if e.is_transient() {
        BackendError::Transient(message)
    } else {
        BackendError::Permanent(message)
    }
}

/// Whether lowercased PVE text says the VM itself is missing.
fn guest_missing(text: &str) -> bool {
    text.contains("configuration file") && text.contains("does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_failed(exitstatus: &str) -> ProxmoxError {
        ProxmoxError::TaskFailed {
            upid: "UPID:pve1:1:1:1:qmclone:104:root@pam:".into(),
            node: "pve1".into(),
            task_type: "qmclone".into(),
            id: "104".into(),
            exitstatus: exitstatus.into(),
        }
    }

    #[test]
    fn each_pve_text_gets_its_variant() {
        let cases = [
            (
                "unable to create VM 120: config file already exists",
                "AlreadyExists",
            ),
            ("VM 120 already running", "AlreadyInState"),
            (
                "Configuration file 'nodes/pve1/qemu-server/120.conf' does not exist",
                "NotFound",
            ),
            ("storage 'fast' does not exist", "Permanent"),
            (
                "can't lock file '/var/lock/qemu-server/lock-104.conf' - got timeout",
                "Transient",
            ),
        ];
        for (text, want) in cases {
            let got = classify(task_failed(text));
            let name = match got {
                BackendError::Transient(_) => "Transient",
                BackendError::NotFound(_) => "NotFound",
                BackendError::AlreadyExists(_) => "AlreadyExists",
                BackendError::AlreadyInState(_) => "AlreadyInState",
                BackendError::Conflict(_) => "Conflict",
                BackendError::Permanent(_) => "Permanent",
            };
            assert_eq!(name, want, "{text}");
            assert!(got.message().contains(text), "keeps PVE's message");
        }
    }
}
