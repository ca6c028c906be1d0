//! Scale benchmark for scanning and planning (see BENCHMARKS.md).
//!
//!     cargo bench --bench scale -- [--sizes 100000,1000000] [--data DIR] [--only NAME] [--backend sqlite|postgres]
//!     cargo bench --bench scale -- --first-apply [--sizes 100000,1000000] [--data DIR]
//!
//! Generates deterministic corpora (one big CSV; 100 CSV files; 100 YAML files),
//! then measures the real `paystar-sync plan` binary as a child process: wall time
//! and peak RSS (from wait4), for a plan from an empty state, a plan with nothing
//! changed after the state was committed and acknowledged, and a plan after 1 % of
//! one file's rows changed. Commit + acknowledge run in-process and are timed too.

// Wall-clock measurement outside any runtime: std's Instant is the right clock here.
#![allow(clippy::disallowed_methods)]

use paystar_sync::config::Config;
use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::{Layout, Measure, commit_and_acknowledge, measure, measured, write_corpus};

fn row(size: usize, layout: &str, step: &str, m: &Measure) -> String {
    assert!(matches!(m.code, 0 | 2), "plan exited {}", m.code);
    format!(
        "| {size} | {} | {step} | {:.2} s | {} MB |",
        layout,
        m.wall.as_secs_f64(),
        m.peak_rss_kib / 1024
    )
}

/// `paystar-sync plan` on `config`, measured.
fn plan(config: &Path) -> Measure {
    let mut command = vec![
        env!("CARGO_BIN_EXE_paystar-sync").into(),
        "plan".into(),
        "-q".into(),
        "--config".into(),
    ];
    command.push(config.display().to_string());
    measured(&command)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--measure") {
        return measure(&args[at + 1..]);
    }
    let arg = |name: &str| common::flag(&args, name);
    let sizes = common::sizes(&args);
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "bench-data".into()));
    let only = arg("--only");
    let backend = common::Backend::from_args(&args);
    if args.iter().any(|a| a == "--first-apply") {
        return first_apply(&data, &sizes);
    }
    println!("| customers | layout | step | wall | peak RSS |\n|---|---|---|---|---|");
    for size in sizes {
        for layout in [Layout::OneCsv, Layout::ManyCsv, Layout::ManyYaml] {
            if only.as_deref().is_some_and(|o| !layout.name().contains(o)) {
                continue;
            }
            let root = data.join(format!("{size}-{}", layout.name().replace(' ', "-")));
            let _ = fs::remove_dir_all(&root);
            let manifests = root.join("manifests");
            write_corpus(&manifests, layout, size, &|_| false, None);
            let config_path = root.join("config.yaml");
            let state = backend.fresh_state(&root, &format!("{size}_{}", layout.name()));
            fs::write(
                &config_path,
                state + "manifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\nsafety: { max_unenrolls: 100000000, max_unenroll_percent: 100 }\n",
            )
            .unwrap();
            let layout_name = format!("{} ({})", layout.name(), backend.name());
            let config = Config::load(&config_path).unwrap();
            println!(
                "{}",
                row(size, &layout_name, "plan, empty state", &plan(&config_path))
            );
            let (commit, ack) = commit_and_acknowledge(&config);
            println!(
                "| {size} | {layout_name} | scan + commit, empty state (in-process) | {:.2} s | – |",
                commit.as_secs_f64()
            );
            println!(
                "| {size} | {layout_name} | acknowledge every event (in-process) | {:.2} s | – |",
                ack.as_secs_f64()
            );
            println!(
                "{}",
                row(
                    size,
                    &layout_name,
                    "plan, nothing changed",
                    &plan(&config_path)
                )
            );
            let per = if layout == Layout::OneCsv {
                size
            } else {
                size / 100
            };
            // 1 % of one file's rows get a new email.
            write_corpus(
                &manifests,
                layout,
                size,
                &|i| i < per && i % 100 == 7,
                Some(0),
            );
            println!(
                "{}",
                row(
                    size,
                    &layout_name,
                    "plan, 1 % of one file changed",
                    &plan(&config_path)
                )
            );
        }
    }
}

/// `paystar-sync apply` of one CSV file of `size` customers from an empty SQLite
/// state into the in-process simulator: wall time, peak RSS, and the state's size
/// on disk per customer afterwards.
fn first_apply(data: &Path, sizes: &[usize]) {
    println!(
        "| customers | wall | peak RSS | state on disk | per customer |\n|---|---|---|---|---|"
    );
    for &size in sizes {
        let root = data.join(format!("{size}-first-apply"));
        let _ = fs::remove_dir_all(&root);
        let manifests = root.join("manifests");
        write_corpus(&manifests, Layout::OneCsv, size, &|_| false, None);
        let config_path = root.join("config.yaml");
        fs::write(
            &config_path,
            "state:\n  path: state/db.sqlite\nmanifests:\n  dir: manifests\npaystar:\n  endpoint: sandbox\n  default_business_unit: water-bill-pay\nsafety: { max_unenrolls: 100000000, max_unenroll_percent: 100 }\n",
        )
        .unwrap();
        let m = measured(&[
            env!("CARGO_BIN_EXE_paystar-sync").into(),
            "apply".into(),
            "-q".into(),
            "--config".into(),
            config_path.display().to_string(),
        ]);
        assert_eq!(m.code, 0, "apply exited {}", m.code);
        let state: u64 = fs::read_dir(root.join("state"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let config = Config::load(&config_path).unwrap();
        let store = paystar_sync::store::Store::open_read_only(&config.state).unwrap();
        let counts = store.counts().unwrap();
        assert_eq!(
            counts.acknowledged, size as u64,
            "every customer acknowledged"
        );
        assert_eq!(counts.pending + counts.retrying + counts.parked, 0);
        println!(
            "| {size} | {:.1} s | {} MB | {} MB | {} B |",
            m.wall.as_secs_f64(),
            m.peak_rss_kib / 1024,
            state / 1_000_000,
            state / size as u64
        );
    }
}
