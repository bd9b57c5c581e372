//! The managed-VM domain: classes and their VMs, the request and its validation, the stored plan
//! (placement and VMID reservations), VM names and the ownership marker, the cross-worker
//! concurrency slots, and the seam to the hypervisor (`backend`: the `Backend` trait, its types
//! and errors; the adapters live in `backends/`).

pub mod backend;
pub mod classes;
pub mod marker;
pub mod method;
pub mod naming;
pub mod placement;
pub mod plan;
pub mod request;
pub mod slots;
pub mod state;
pub mod vmids;
pub mod vms;

pub use backend::{
    Backend, BackendError, BackendFactory, Connected, FactoryError, GuestRef, Inspected,
};
pub use classes::{ClassStore, VmChange, VmView};
pub use marker::Marker;
pub use method::DeployMethod;
pub use plan::{plan_missing, ClusterSnapshot, PlanError};
pub use request::{ClassRequest, NewClass, RequestError};
pub use slots::{Slots, Want};
pub use state::{ClassState, OrphanState, ReservationState, UnknownState, VmState};
pub use vms::{AssignedVm, VmScope};
