//! Failures of the parts around the engine: a worker killed with SIGKILL, the broker and the
//! database cut off (through a loopback proxy the test controls, so parallel tests are not
//! disturbed).

mod cuts;
mod proxy;
mod worker_kill;
