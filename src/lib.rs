//! paystar-sync keeps customer accounts in the Paystar billing portal in line
//! with a folder of declarative manifests. See `ARCHITECTURE.md` for the codemap
//! and the invariants every change must keep.

pub mod app;
pub mod build_info;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod customer;
pub mod deliver;
pub mod ha;
pub mod halves;
pub mod hex;
pub mod host;
pub mod manifest;
pub mod mask;
pub mod metrics;
pub mod providers;
pub mod reconcile;
pub mod report;
pub mod sandbox;
pub mod scan;
pub mod server;
pub mod store;
pub mod suggest;
pub mod systemd;
pub mod telemetry;
