//! The `labfleet` binary as a library: its subcommands, the wiring that builds a process from
//! settings (`components`, `system`), the simulated lab of `demo` and the benchmarks. Tests and
//! benchmarks build the system through the same functions as `serve` and `demo`.

pub mod bench;
pub mod cli;
pub mod components;
pub mod lab;
pub mod shutdown;
pub mod system;
pub mod telemetry;
