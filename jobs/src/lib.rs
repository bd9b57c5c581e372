//! The job contract shared by `api`, `worker` and `scheduler`: what a job is (`JobSpec`, `Family`,
//! `JobStatus`), where it is stored (`JobStore`), how it travels (`Queue`, `Publisher`), how it is
//! retried (`retry`), and the typed `Settings` every labfleet process is built from.

pub mod db;
pub mod publisher;
pub mod queue;
pub mod retry;
pub mod settings;
pub mod spec;
pub mod status;
pub mod store;

pub use publisher::Publisher;
pub use queue::{Delivery, Queue, QueueError};
pub use settings::Settings;
pub use spec::{
    ClassArgs, ClassVmArgs, DestroyClassArgs, Family, JobSpec, NoopArgs, PowerAction,
    SyncClusterArgs, VmPowerArgs,
};
pub use status::JobStatus;
pub use store::{JobStore, StoreError};
