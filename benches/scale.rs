//! Scale benchmark for scanning and planning (see BENCHMARKS.md).
//!
//!     cargo bench --bench scale -- [--sizes 100000,1000000] [--data DIR] [--only NAME] [--backend sqlite|postgres]
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
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{Layout, commit_and_acknowledge, write_corpus};

struct Measure {
    wall: Duration,
    peak_rss_kib: i64,
    code: i32,
}

#[allow(unsafe_code)] // wait4 is the only way to read one child's peak RSS.
fn wait_with_rusage(child: &std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Runs `paystar-sync plan` through this benchmark re-executed in `--measure`
/// mode. A forked child's peak RSS starts from its parent's RSS at fork time, so
/// the fork must come from a process as small as that helper, not from this one.
fn plan(config: &Path) -> Measure {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--measure")
        .arg(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(["plan", "-q", "--config"])
        .arg(config)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>().unwrap());
    let (wall_ns, peak_rss_kib, code) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    Measure {
        wall: Duration::from_nanos(wall_ns as u64),
        peak_rss_kib,
        code: code as i32,
    }
}

/// `--measure CMD ARGS…`: runs CMD with its output discarded and prints
/// "wall_ns peak_rss_kib exit_code".
#[allow(clippy::zombie_processes)] // the child is reaped by wait4 in wait_with_rusage
fn measure(command: &[String]) {
    let start = std::time::Instant::now();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (code, rss) = wait_with_rusage(&child);
    println!("{} {rss} {code}", start.elapsed().as_nanos());
}

fn row(size: usize, layout: &str, step: &str, m: &Measure) -> String {
    assert!(matches!(m.code, 0 | 2), "plan exited {}", m.code);
    format!(
        "| {size} | {} | {step} | {:.2} s | {} MB |",
        layout,
        m.wall.as_secs_f64(),
        m.peak_rss_kib / 1024
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--measure") {
        return measure(&args[at + 1..]);
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes takes numbers"))
        .collect();
    let data = PathBuf::from(arg("--data").unwrap_or_else(|| "bench-data".into()));
    let only = arg("--only");
    let backend = common::Backend::from_args(&args);
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
