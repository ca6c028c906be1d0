//! The one integration-test binary: a module per feature, a shared harness.

mod abuse;
mod backends;
mod browser;
mod cli;
mod config;
mod console;
mod crash;
mod daemon;
mod deliver;
mod dialects;
mod diff;
mod exports;
mod ha;
mod manifests;
mod markdown;
mod mistakes;
mod operator;
mod outcomes;
mod partition;
mod properties;
mod providers;
mod safety;
mod stale;
mod state;
mod support;
#[cfg(feature = "otel")]
mod telemetry;
mod upgrades;
mod yamlsuite;
