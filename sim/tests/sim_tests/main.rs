//! Behaviour tests of the simulator, one module per concept.
#![allow(clippy::unwrap_used)]

mod common;

mod api_basics;
mod auth;
mod clones;
mod conformance;
mod disks;
mod faults;
mod https;
mod lifecycle;
mod params;
mod ssh;
