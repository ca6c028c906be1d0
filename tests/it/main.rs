//! The one integration-test binary: a module per feature, a shared harness.

mod cli;
mod config;
mod diff;
mod manifests;
mod state;
mod support;
