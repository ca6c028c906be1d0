//! `plan` against the peer diff tool, side by side (see BENCHMARKS.md).
//!
//!     cargo bench --bench peer -- [--sizes 100000,1000000] [--runs 5] [--kit ../shared/bench] [--data DIR] [--backend sqlite|postgres]
//!
//! Builds the peer (`csv-diff-cli` from the kit: the `csv-diff` crate 0.1.2) into
//! `target/peer`, generates each size's pair with the kit's `gen_customers.py`
//! (cached by size), imports `old.csv` (commit and acknowledge, in-process), puts
//! `new.csv` in its place (temporary name, then rename), flushes the written state
//! to disk (`sync`) and times `paystar-sync plan`
//! and `csv-diff-cli old.csv new.csv` alternately, back to back: medians of the wall
//! times and the largest peak RSS of each. The plan's counts are checked against what
//! the pair implies.

// Wall-clock measurement outside any runtime: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Backend, Measure, commit_and_acknowledge, measure, measured};
use paystar_sync::config::Config;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Builds the peer once; its path.
fn build_peer(kit: &Path) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peer");
    let cargo = paystar_sync::config::process_env("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(kit.join("csv-diff-cli/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo for the peer");
    assert!(status.success(), "building the peer failed");
    target.join("release/csv-diff-cli")
}

/// The size's old/new pair, generated unless already there.
fn pair(kit: &Path, data: &Path, size: usize) -> PathBuf {
    let dir = data.join(format!("peer-{size}"));
    let expected = dir.join("expected.json");
    let done = fs::read_to_string(&expected)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["n"] == size);
    if !done {
        let status = Command::new("python3")
            .arg(kit.join("gen_customers.py"))
            .arg(size.to_string())
            .arg(&dir)
            .status()
            .expect("run python3 for the generator");
        assert!(status.success(), "the generator failed");
    }
    dir
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// What `plan --format json` says it would send.
fn planned(config: &Path) -> (u64, u64) {
    let output = Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["plan", "-q", "--format", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("plan --format json: {e}"));
    let summary = &plan["summary"];
    let count = |field: &str| {
        summary[field]
            .as_u64()
            .expect("a count in the plan's summary")
    };
    (
        count("manage_create") + count("manage_update"),
        count("unenroll"),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--measure") {
        return measure(&args[at + 1..]);
    }
    let arg = |name: &str| common::flag(&args, name);
    let sizes = common::sizes(&args);
    let runs: usize = arg("--runs").map_or(5, |v| v.parse().unwrap());
    let kit = arg("--kit").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench"),
        PathBuf::from,
    );
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "bench-data".into()));
    let backend = Backend::from_args(&args);
    let peer = build_peer(&kit);
    println!(
        "| customers | step | paystar-sync ({}) | csv-diff crate 0.1.2 | ratio |\n|---|---|---|---|---|",
        backend.name()
    );
    for size in sizes {
        let dir = pair(&kit, &data, size);
        let root = dir.join("project");
        let _ = fs::remove_dir_all(&root);
        let manifests = root.join("manifests");
        fs::create_dir_all(&manifests).unwrap();
        fs::copy(dir.join("old.csv"), manifests.join("customers.csv")).unwrap();
        let state = backend.fresh_state(&root, &format!("peer_{size}"));
        let config_path = root.join("config.yaml");
        fs::write(
            &config_path,
            state + "manifests:\n  dir: manifests\n  on_removal: ignore\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\nsafety: { max_unenrolls: 100000000, max_unenroll_percent: 100 }\n",
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        commit_and_acknowledge(&config);
        let tmp = manifests.join(".customers.csv.tmp");
        fs::copy(dir.join("new.csv"), &tmp).unwrap();
        fs::rename(&tmp, manifests.join("customers.csv")).unwrap();
        let (manage, unenroll) = planned(&config_path);
        // The import just wrote the state: let the kernel write it back before
        // anything is timed, so that neither side's runs share the disk with it.
        let _ = std::process::Command::new("sync").status();
        let expected: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        eprintln!(
            "{size}: the plan has {manage} ManageCustomer and {unenroll} UnenrollAutopay; the pair has {} modified, {} added, {} deleted",
            expected["modified"], expected["added"], expected["deleted"]
        );
        let plan_command: Vec<String> = vec![
            env!("CARGO_BIN_EXE_paystar-sync").into(),
            "plan".into(),
            "-q".into(),
            "--detailed-exitcode".into(),
            "--config".into(),
            config_path.display().to_string(),
        ];
        let peer_command: Vec<String> = vec![
            peer.display().to_string(),
            dir.join("old.csv").display().to_string(),
            dir.join("new.csv").display().to_string(),
            "--key".into(),
            "accountNumber".into(),
        ];
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            ours.push(measured(&plan_command));
            theirs.push(measured(&peer_command));
        }
        let wall = |m: &[Measure]| median(m.iter().map(|m| m.wall).collect());
        let rss = |m: &[Measure]| m.iter().map(|m| m.peak_rss_kib).max().unwrap() / 1024;
        assert!(ours.iter().all(|m| m.code == 2), "plan found no changes");
        assert!(theirs.iter().all(|m| m.code == 0), "the peer failed");
        let (a, b) = (wall(&ours), wall(&theirs));
        println!(
            "| {size} | plan after the reordered export ({manage} ManageCustomer, {unenroll} UnenrollAutopay), median of {runs} | {:.3} s, {} MB | {:.3} s, {} MB | {:.2} |",
            a.as_secs_f64(),
            rss(&ours),
            b.as_secs_f64(),
            rss(&theirs),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
