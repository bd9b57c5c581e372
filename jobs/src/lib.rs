//! The job contract shared by `api`, `worker` and `scheduler`: what a job is (`JobSpec`, `Family`,
//! `JobStatus`), where it is stored (`JobStore`), how it travels (`Queue`, `Publisher`), how it is
//! retried (`retry`). Settings live in `labfleet-config`, the database connection and SQL
//! helpers in `labfleet-db`.

pub mod publisher;
pub mod queue;
pub mod retry;
pub mod spec;
pub mod status;
pub mod store;

pub use publisher::Publisher;
pub use queue::{Delivery, Queue, QueueError};
pub use spec::{
    ClassArgs, ClassVmArgs, DestroyClassArgs, Family, InvalidJob, JobKind, JobSpec, NoopArgs,
    OrphanArgs, PowerAction, SyncClusterArgs, VmPowerArgs,
};
pub use status::JobStatus;
pub use store::{JobStore, StoreError};
