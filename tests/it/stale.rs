//! SPEC §3, "errors never stick": a file that had an error at the last scan is
//! read again at every scan until it reads clean, and a stat that cannot tell
//! a rewrite from the file it replaced is not trusted. Each test ends where a
//! scan from scratch of the same folder would.

use crate::support::{BASE_CONFIG, Project};
use std::time::{Duration, SystemTime};

const GOOD: &str =
    "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n";

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
fn a_manifest_replaced_by_a_fifo_and_then_restored_reads_clean_again() {
    let p = Project::new();
    p.file("a.csv", GOOD);
    assert_eq!(committed_then_planned(&p), (0, vec![]));
    let path = p.root().join("manifests/a.csv");
    std::fs::remove_file(&path).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(committed_then_planned(&p).1, ["a.csv [file]"]);
    std::fs::remove_file(&path).unwrap();
    p.file("a.csv", GOOD);
    assert_eq!(committed_then_planned(&p), (0, vec![]));
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
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
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
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
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
