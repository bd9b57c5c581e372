//! A class's jobs: `deploy_class` plans its missing VMs and fans out one `deploy_vm` each;
//! `destroy_class` fans out one `destroy_vm` per VM to remove.

pub(crate) mod deploy;
pub(crate) mod destroy;
