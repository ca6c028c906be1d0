//! SPEC §3, "errors never stick": a file that had an error at the last scan is
//! read again at every scan until it reads clean, and a stat that cannot tell
//! a rewrite from the file it replaced is not trusted. Each test ends where a
//! scan from scratch of the same folder would.

use crate::support::{BASE_CONFIG, Project};
use std::time::Duration;

const GOOD: &str =
    "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n";

/// Sets `path`'s mtime an hour back: old enough that the index's shortcut applies.
fn written_an_hour_ago(path: &std::path::Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(paystar_sync::clock::now() - Duration::from_secs(3600))
        .unwrap();
}

/// `plan` after committing (and acknowledging) the current folder: its exit
/// code and error lines.
fn committed_then_planned(p: &Project) -> (i32, Vec<String>) {
    p.commit_and_acknowledge();
    let run = p.run(&["plan", "--detailed-exitcode", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    (run.code, crate::support::error_lines(&plan))
}

#[test]
fn a_manifest_replaced_by_a_directory_and_then_restored_reads_clean_again() {
    let p = Project::new();
    p.file("a.csv", GOOD);
    assert_eq!(committed_then_planned(&p), (0, vec![]));
    let path = p.root().join("manifests/a.csv");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(committed_then_planned(&p).1, ["a.csv [file]"]);
    std::fs::remove_dir(&path).unwrap();
    p.file("a.csv", GOOD);
    assert_eq!(
        committed_then_planned(&p),
        (0, vec![]),
        "the directory's error is gone"
    );
}

#[test]
fn a_manifest_uploaded_unreadable_and_then_made_readable_is_read_and_its_customers_sent() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.file("a.csv", GOOD);
    let path = p.root().join("manifests/a.csv");
    // Uploaded an hour ago, as an SFTP upload with umask 077 by another user
    // leaves it.
    written_an_hour_ago(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if crate::support::running_as_root() {
        // The service's own user, for whom the mode counts, owns the rest.
        let chown = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(p.root())
            .status()
            .unwrap();
        assert!(chown.success());
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    }
    let run = crate::support::run_as_another_user(&p, &["apply"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(65), "{said}");
    assert!(
        said.contains("a.csv") && said.contains("ermission"),
        "{said}"
    );
    // chmod changes no size, mtime or inode: the file must be read again anyway.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = crate::support::run_as_another_user(&p, &["apply"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let acknowledged = p.with_store(|s| s.counts().unwrap().acknowledged);
    assert_eq!(acknowledged, 1, "{stderr}");
}

#[test]
fn a_manifest_over_the_size_limit_and_then_restored_to_its_last_good_content_reads_clean() {
    let config = BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  max_file_size: 1KiB\n",
    );
    let p = Project::with_config(&config);
    p.file("a.csv", GOOD);
    assert_eq!(committed_then_planned(&p), (0, vec![]));
    p.file(
        "a.csv",
        format!("{GOOD}{}", "2,Alan,Turing,alan@example.com\n".repeat(64)),
    );
    assert_eq!(committed_then_planned(&p).1, ["a.csv [file]"]);
    // The same bytes as the last good scan: the same hash as stored.
    p.file("a.csv", GOOD);
    assert_eq!(
        committed_then_planned(&p),
        (0, vec![]),
        "the size error is gone"
    );
}

#[test]
fn a_manifest_replaced_by_a_fifo_or_a_symlink_loop_and_then_restored_reads_clean_again() {
    for special in ["fifo", "symlink loop"] {
        let p = Project::new();
        p.file("a.csv", GOOD);
        assert_eq!(committed_then_planned(&p), (0, vec![]));
        let path = p.root().join("manifests/a.csv");
        std::fs::remove_file(&path).unwrap();
        if special == "fifo" {
            let status = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            // a.csv → b.csv → a.csv
            let other = p.root().join("manifests/b.csv");
            std::os::unix::fs::symlink(&other, &path).unwrap();
            std::os::unix::fs::symlink(&path, &other).unwrap();
        }
        let errors = committed_then_planned(&p).1;
        assert!(
            errors.contains(&"a.csv [file]".to_owned()),
            "{special}: {errors:?}"
        );
        for name in ["a.csv", "b.csv"] {
            let _ = std::fs::remove_file(p.root().join("manifests").join(name));
        }
        p.file("a.csv", GOOD);
        assert_eq!(committed_then_planned(&p), (0, vec![]), "{special}");
    }
}

#[test]
fn a_row_error_fixed_after_its_file_moved_folders_is_not_a_duplicate_of_the_old_path() {
    let p = Project::new();
    let broken = "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n2,Alan,Turing,not-an-email\n";
    p.file("old/a.csv", broken);
    assert_eq!(
        committed_then_planned(&p).1,
        ["old/a.csv:3 emailAddress [row]"]
    );
    std::fs::create_dir_all(p.root().join("manifests/new")).unwrap();
    std::fs::rename(
        p.root().join("manifests/old/a.csv"),
        p.root().join("manifests/new/a.csv"),
    )
    .unwrap();
    p.commit();
    p.file(
        "new/a.csv",
        broken.replace("not-an-email", "alan@example.com"),
    );
    let (_, errors) = committed_then_planned(&p);
    assert_eq!(errors, Vec::<String>::new());
}

#[test]
fn a_rewrite_that_keeps_the_size_and_sets_the_mtime_back_is_read() {
    let p = Project::new();
    let path = p.root().join("manifests/a.csv");
    let an_hour_ago = paystar_sync::clock::now() - Duration::from_secs(3600);
    p.file("a.csv", GOOD);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    p.commit_and_acknowledge();
    // Same size, same mtime (`touch -d` back), other content.
    p.file("a.csv", GOOD.replace("Ada", "Eve"));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer update firstName"]
    );
    let scan = p.dry_scan();
    assert_eq!(
        scan.stats.files_parsed, 1,
        "the change time gave the rewrite away"
    );
}

#[test]
fn state_check_passes_a_sound_state_and_names_an_index_entry_that_lies() {
    let p = Project::new();
    let path = p.root().join("manifests/a.csv");
    p.file("a.csv", GOOD);
    // Old enough that the index's shortcut applies.
    written_an_hour_ago(&path);
    p.commit_and_acknowledge();
    let run = p.run(&["state", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("every stored shortcut agrees"),
        "{run:?}"
    );
    // The recorded hash no longer matches the content a scan would skip.
    p.execute_sql("UPDATE files SET sha256 = NULL WHERE path = 'a.csv'");
    let run = p.run(&["state", "check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "a.csv: its size, mtime, inode and change time are as recorded but its content is not"
        ),
        "{run:?}"
    );
}

/// What a state says about the folder: every error, and each live customer's
/// file, line and fingerprint (its fields), in files without errors. (A file
/// with errors keeps what it held before by design: a bad row or file never
/// removes anyone, so there the state remembers what a fresh one cannot.)
fn said(p: &Project) -> (Vec<String>, Vec<String>) {
    p.with_store(|s| {
        let stored = s.present_file_errors().unwrap();
        let mut errors: Vec<String> = stored
            .iter()
            .map(|e| {
                format!(
                    "{}:{:?} {:?} {:?} {}",
                    e.file, e.line, e.field, e.kind, e.reason
                )
            })
            .collect();
        errors.sort();
        let erring: std::collections::HashSet<&str> =
            stored.iter().map(|e| e.file.as_str()).collect();
        let mut rows = Vec::new();
        for (path, entry) in s.file_index().unwrap() {
            if !entry.present || erring.contains(path.as_str()) {
                continue;
            }
            s.for_each_file_row(entry.id, |row| {
                if !row.removed {
                    rows.push(format!(
                        "{} {path}:{:?} {}",
                        row.key, row.line, row.fingerprint
                    ));
                }
            })
            .unwrap();
        }
        rows.sort();
        (errors, rows)
    })
}

#[test]
fn an_incremental_scan_after_any_file_operations_equals_a_scan_from_scratch() {
    use arbtest::arbitrary::Unstructured;
    let budget = paystar_sync::config::process_env("ARBTEST_BUDGET_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    // Contents each path may hold: its own accounts (no key in two files),
    // valid, with a row error, empty, or too big; some of equal size.
    let contents = |slot: usize| -> Vec<String> {
        let h = "accountNumber,firstName,lastName,emailAddress\n";
        let k = |n: usize| slot * 10 + n;
        vec![
            format!(
                "{h}{},Ada,Lovelace,ada@example.com\n{},Alan,Turing,alan@example.com\n",
                k(1),
                k(2)
            ),
            format!(
                "{h}{},Eve,Lovelace,ada@example.com\n{},Alan,Turing,alan@example.com\n",
                k(1),
                k(2)
            ),
            format!(
                "{h}{},Ada,Lovelace,ada@example.com\n{},Alan,Turing,not-an-email\n",
                k(1),
                k(2)
            ),
            format!("{h}{},Grace,Hopper,grace@example.com\n", k(3)),
            h.to_owned(),
            format!(
                "{h}{}",
                format!("{},Big,File,big@example.com\n", k(4)).repeat(60)
            ),
        ]
    };
    let paths = ["a.csv", "sub/b.csv", "c.csv"];
    let mut steps = 0;
    arbtest::arbtest(|u: &mut Unstructured<'_>| {
        let config = BASE_CONFIG.replace(
            "  dir: manifests\n",
            "  dir: manifests\n  max_file_size: 1KiB\n",
        );
        let p = Project::with_config(&config);
        // The folder is a symlink to a tree, swapped for a copy now and then
        // (as git-sync publishes each revision).
        let dir = p.root().join("manifests");
        let _ = std::fs::remove_dir_all(&dir);
        let mut trees = 0;
        let tree = |n: usize| p.root().join(format!("tree-{n}"));
        std::fs::create_dir_all(tree(0).join("sub")).unwrap();
        std::fs::create_dir_all(tree(0).join("other")).unwrap();
        std::os::unix::fs::symlink(tree(0), &dir).unwrap();
        let an_hour_ago = paystar_sync::clock::now() - Duration::from_secs(3600);
        let mut last: Vec<Option<String>> = vec![None; paths.len()];
        for _ in 0..u.int_in_range(1..=8)? {
            let slot = u.choose_index(paths.len())?;
            let path = dir.join(paths[slot]);
            // Weighted towards the two contents of equal size, so that rewrites
            // a stat cannot tell apart come often.
            // Or, half the time, the content it last held: restored as it was.
            let text = match &last[slot] {
                Some(earlier) if u.ratio(1, 2)? => earlier.clone(),
                _ => contents(slot)[*u.choose(&[0, 0, 1, 1, 2, 3, 4, 5])?].clone(),
            };
            last[slot] = Some(text.clone());
            let clear = |path: &std::path::Path| {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.is_dir() {
                        std::fs::remove_dir_all(path).unwrap();
                    } else {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            };
            match *u.choose(&[0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10])? {
                0 => {
                    clear(&path);
                    std::fs::write(&path, &text).unwrap();
                }
                1 => {
                    // An atomic save: a temporary name, then a rename over it.
                    let tmp = dir.join(".tmp-save");
                    std::fs::write(&tmp, &text).unwrap();
                    clear(&path);
                    std::fs::rename(&tmp, &path).unwrap();
                }
                2 => {
                    // In place (the same inode), the mtime set back to what it
                    // was, as `touch -d` does (an hour ago for a new file).
                    let before = match std::fs::symlink_metadata(&path) {
                        Ok(m) if m.is_file() => m.modified().unwrap(),
                        _ => {
                            clear(&path);
                            an_hour_ago
                        }
                    };
                    std::fs::write(&path, &text).unwrap();
                    std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_modified(before)
                        .unwrap();
                }
                3 => {
                    clear(&path);
                    std::fs::create_dir(&path).unwrap();
                }
                4 => {
                    clear(&path);
                    std::process::Command::new("mkfifo")
                        .arg(&path)
                        .status()
                        .unwrap();
                }
                5 => {
                    clear(&path);
                    std::os::unix::fs::symlink(dir.join("nowhere.csv"), &path).unwrap();
                }
                6 => clear(&path),
                8 => {
                    // chmod 000, or back to 644 (a change of ctime alone).
                    use std::os::unix::fs::PermissionsExt;
                    if let Ok(meta) = std::fs::symlink_metadata(&path)
                        && meta.is_file()
                    {
                        let mode = if meta.permissions().mode() & 0o777 == 0 {
                            0o644
                        } else {
                            0
                        };
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                            .unwrap();
                    }
                }
                9 => {
                    // Truncated in place: `: > file`.
                    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                        std::fs::File::options()
                            .write(true)
                            .truncate(true)
                            .open(&path)
                            .unwrap();
                    }
                }
                10 => {
                    // The root swapped for a copy of its tree (new inodes, the
                    // same mtimes), the symlink replaced atomically.
                    trees += 1;
                    let copied = std::process::Command::new("cp")
                        .arg("-a")
                        .arg(tree(trees - 1))
                        .arg(tree(trees))
                        .status()
                        .unwrap();
                    assert!(copied.success());
                    let link = p.root().join("manifests.new");
                    std::os::unix::fs::symlink(tree(trees), &link).unwrap();
                    std::fs::rename(&link, &dir).unwrap();
                    std::fs::remove_dir_all(tree(trees - 1)).unwrap();
                }
                _ => {
                    // A move between folders, and back.
                    let moved = dir.join("other").join(path.file_name().unwrap());
                    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                        clear(&moved);
                        std::fs::rename(&path, &moved).unwrap();
                    } else if std::fs::symlink_metadata(&moved).is_ok_and(|m| m.is_file()) {
                        clear(&path);
                        std::fs::rename(&moved, &path).unwrap();
                    }
                }
            }
            p.commit();
            steps += 1;
            // A fresh state over the same folder, scanned once from scratch.
            let fresh_config =
                config.replace("  dir: manifests\n", &format!("  dir: {}\n", dir.display()));
            let fresh = Project::with_config(&fresh_config);
            fresh.commit();
            let (errors, rows) = said(&p);
            let (fresh_errors, fresh_rows) = said(&fresh);
            assert_eq!(errors, fresh_errors, "errors after step {steps}");
            assert_eq!(rows, fresh_rows, "customers after step {steps}");
            // And what the next scan (a plan) of each would say.
            let planned = |p: &Project| -> Vec<String> {
                let mut errors: Vec<String> = p
                    .dry_scan()
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                errors.sort();
                errors
            };
            assert_eq!(
                planned(&p),
                planned(&fresh),
                "plan errors after step {steps}"
            );
        }
        Ok(())
    })
    .budget_ms(budget)
    .run();
    assert!(steps > 0, "{steps} steps");
}
