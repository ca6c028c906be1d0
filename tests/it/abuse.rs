//! Hostile and broken input (SPEC §3): nothing broken, odd or hostile ever becomes an
//! unenroll. Each test drives the real binary against the loopback sandbox.

use crate::support::{Project, error_lines, with_sandbox};
use paystar_sync::sandbox::RunningSandbox;
use std::process::Command;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress\n";

fn rows(accounts: &[&str]) -> String {
    let mut out = HEADER.to_owned();
    for a in accounts {
        out.push_str(&format!("{a},Ada,Lovelace,ada{a}@example.com\n"));
    }
    out
}

/// A project that unenrols removed customers, with the guard out of the way.
async fn unenrolling() -> (Project, RunningSandbox) {
    let (p, sandbox) = with_sandbox("").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap().replace(
        "  dir: manifests\n",
        "  dir: manifests\n  on_removal: unenroll\n",
    );
    p.config(&config);
    (p, sandbox)
}

use crate::support::unenrolled_accounts as unenrolls;

async fn apply(p: &Project) -> crate::support::Run {
    p.run_async(&["apply", "--timeout", "20s"]).await
}

/// Replaces `manifests/a.csv` with something that is not a regular file.
fn replace_with(p: &Project, kind: &str) {
    let path = p.root().join("manifests/a.csv");
    std::fs::remove_file(&path).unwrap();
    match kind {
        "fifo" => assert!(
            Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap()
                .success()
        ),
        "directory" => std::fs::create_dir(&path).unwrap(),
        "socket" => {
            std::mem::forget(std::os::unix::net::UnixListener::bind(&path).unwrap());
        }
        "dangling symlink" => {
            std::os::unix::fs::symlink(p.root().join("nowhere.csv"), &path).unwrap();
        }
        "symlink loop" => {
            let other = p.root().join("manifests/_loop.csv");
            std::os::unix::fs::symlink(&other, &path).unwrap();
            std::os::unix::fs::symlink(&path, &other).unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_directory_socket_or_broken_link_at_a_manifest_path_is_a_file_error_not_a_removal() {
    for (kind, reason) in [
        ("fifo", "is a FIFO (named pipe), not a regular file"),
        ("directory", "is a directory, not a regular file"),
        ("socket", "is a socket, not a regular file"),
        ("dangling symlink", "is a dangling symbolic link"),
        ("symlink loop", "is a symbolic link loop"),
    ] {
        let (p, sandbox) = unenrolling().await;
        p.file("a.csv", rows(&["A1", "A2", "A3"]));
        p.file("b.csv", rows(&["B1"]));
        assert_eq!(apply(&p).await.code, 0, "{kind}");
        replace_with(&p, kind);
        let validate = p.run(&["validate"]);
        assert_eq!(validate.code, 65, "{kind}: {validate:?}");
        assert!(
            validate.stdout.contains(&format!("a.csv: {reason}")),
            "{kind}: {}",
            validate.stdout
        );
        assert!(
            validate.stdout.contains("2 file(s)") && validate.stdout.contains("1 failed"),
            "{kind}: {}",
            validate.stdout
        );
        let run = apply(&p).await;
        assert_eq!(run.code, 65, "{kind}: {run:?}");
        assert_eq!(unenrolls(&sandbox), Vec::<String>::new(), "{kind}");
        assert_eq!(p.plan_json()["changes"], serde_json::json!([]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_that_no_longer_exists_is_the_only_deleted_file() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2"]));
    assert_eq!(apply(&p).await.code, 0);
    replace_with(&p, "fifo");
    assert_eq!(apply(&p).await.code, 65);
    assert!(unenrolls(&sandbox).is_empty());
    p.remove("a.csv");
    assert_eq!(apply(&p).await.code, 0);
    let mut gone = unenrolls(&sandbox);
    gone.sort();
    assert_eq!(gone, ["A1", "A2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclosed_csv_quote_is_a_file_error_naming_its_line_and_removes_nobody() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2", "A3", "A4"]));
    assert_eq!(apply(&p).await.code, 0);
    p.file(
        "a.csv",
        format!("{HEADER}A1,Ada,Lovelace,a1@example.com\n\"A2,Ada,Lovelace,a2@example.com\nA3,Ada,Lovelace,a3@example.com\nA4,Ada,Lovelace,a4@example.com\n"),
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["a.csv:3 [file]"], "{plan}");
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("a quoted field opens here and is never closed"),
        "{plan}"
    );
    assert_eq!(apply(&p).await.code, 65);
    assert!(unenrolls(&sandbox).is_empty());
}

/// `a.csv` is one file error at its header, saying `reason`; `apply` refuses
/// (65) and sends no unenroll.
async fn refused_at_the_header(p: &Project, sandbox: &RunningSandbox, reason: &str) {
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["a.csv:1 [file]"], "{plan}");
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(reason),
        "{plan}"
    );
    assert_eq!(apply(p).await.code, 65);
    assert!(unenrolls(sandbox).is_empty());
}

/// The header and the first three rows of a file's text.
fn first_lines(text: &str) -> [&str; 4] {
    let mut lines = text.lines();
    std::array::from_fn(|_| lines.next().expect("a header and three rows"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_run_into_the_header_is_a_file_error_not_unknown_columns_that_hide_its_customer() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2", "A3"]));
    assert_eq!(apply(&p).await.code, 0);
    // Two line breaks lost: the header swallows A1, and A2 swallows A3, so the
    // widths still agree and only A2 would be left.
    let text = std::fs::read_to_string(p.root().join("manifests/a.csv")).unwrap();
    let [header, a1, a2, a3] = first_lines(&text);
    p.file("a.csv", format!("{header}*{a1}\n{a2}0{a3}\n"));
    refused_at_the_header(&p, &sandbox, "is a line break missing after the header?").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quote_opened_in_the_header_and_closed_rows_later_is_a_file_error_not_a_column_that_hides_customers()
 {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2", "A3"]));
    assert_eq!(apply(&p).await.code, 0);
    // The last header cell opens a quote that the end of A2's row closes: A1
    // and A2 become one header cell, and only A3 would be left.
    let text = std::fs::read_to_string(p.root().join("manifests/a.csv")).unwrap();
    let [header, a1, a2, a3] = first_lines(&text);
    let (head, last) = header.rsplit_once(',').unwrap();
    p.file("a.csv", format!("{head},\"{last}\n{a1}\n{a2}\"\n{a3}\n"));
    refused_at_the_header(&p, &sandbox, "runs over a line break").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_after_a_closing_quote_is_an_error_not_a_different_account() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["G04x007", "G04x008"]));
    assert_eq!(apply(&p).await.code, 0);
    p.file(
        "a.csv",
        format!("{HEADER}\"G04x007\"x,Ada,Lovelace,adaG04x007@example.com\nG04x008,Ada,Lovelace,adaG04x008@example.com\n"),
    );
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 65, "{validate:?}");
    assert!(
        validate.stdout.contains(
            "a.csv:2: has unbalanced CSV quoting at line 2: text after the closing quote"
        ),
        "{}",
        validate.stdout
    );
    assert_eq!(apply(&p).await.code, 65);
    assert!(unenrolls(&sandbox).is_empty());
    let sent = crate::support::accepted_accounts(&sandbox, "");
    assert!(!sent.iter().any(|a| a == "G04x007x"), "{sent:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn any_row_error_blocks_every_removal_from_its_file_for_that_pass() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2", "A3"]));
    assert_eq!(apply(&p).await.code, 0);
    // A2 leaves, and A3's row turns bad (its key is still readable).
    p.file(
        "a.csv",
        format!("{HEADER}A1,Ada,Lovelace,a1@example.com\nA3,Ada,Lovelace,not-an-email\n"),
    );
    assert_eq!(apply(&p).await.code, 65);
    assert!(unenrolls(&sandbox).is_empty());
    // Once the file is clean, the removal goes through.
    p.file("a.csv", rows(&["A1", "A3"]));
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(unenrolls(&sandbox), ["A2"]);
}

#[test]
fn deeply_nested_yaml_is_a_file_error_found_without_parsing_it() {
    let p = Project::new();
    p.file("deep.yaml", "{a: ".repeat(300_000));
    p.file("deeper.yaml", "[".repeat(300_000));
    p.file(
        "blocks.yaml",
        format!("customers:\n{}x\n", "- ".repeat(100)),
    );
    p.file("good.csv", rows(&["1"]));
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 65, "{validate:?}");
    for file in ["deep.yaml:1", "deeper.yaml:1", "blocks.yaml:2"] {
        assert!(
            validate
                .stdout
                .contains(&format!("{file}: nests deeper than 64 levels")),
            "{file}: {}",
            validate.stdout
        );
    }
    assert!(validate.stdout.contains("1 customer row(s) read"));
}

#[test]
fn an_alias_bomb_is_a_file_error() {
    let p = Project::new();
    let mut text = String::from(
        "x-a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        text.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("customers: *a8\n");
    p.file("bomb.yaml", text);
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 65, "{validate:?}");
    assert!(
        validate
            .stdout
            .contains("bomb.yaml: is not valid YAML: its aliases (*name) expand to more than the reader allows"),
        "{}",
        validate.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_over_max_file_size_is_a_file_error_and_keeps_its_customers() {
    let (p, sandbox) = unenrolling().await;
    p.file("a.csv", rows(&["A1", "A2"]));
    assert_eq!(apply(&p).await.code, 0);
    let config = std::fs::read_to_string(p.config_path()).unwrap().replace(
        "  dir: manifests\n",
        "  dir: manifests\n  max_file_size: 1KiB\n",
    );
    p.config(&config);
    let many: Vec<String> = (0..100).map(|i| format!("A{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    p.file("a.csv", rows(&many));
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 65, "{validate:?}");
    assert!(
        validate
            .stdout
            .contains("a.csv: is larger than manifests.max_file_size (1024 bytes)"),
        "{}",
        validate.stdout
    );
    assert_eq!(apply(&p).await.code, 65);
    assert!(unenrolls(&sandbox).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_plan_file_whose_body_was_edited_and_sends_nothing() {
    let (p, sandbox) = with_sandbox("").await;
    p.file("a.csv", rows(&["1", "2", "3"]));
    let plan = p.root().join("reviewed.json");
    let made = p
        .run_async(&["plan", "--out", plan.to_str().unwrap()])
        .await;
    assert_eq!(made.code, 0, "{made:?}");
    // The reviewer's plan shows one change; the fingerprint is kept as it was.
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    edited["changes"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&plan, serde_json::to_string(&edited).unwrap()).unwrap();
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("was edited after `plan --out` wrote it"),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.sandbox.paystar.requests(), 0);
    // Reformatting alone (as an editor might) changes nothing.
    p.run_async(&["plan", "--out", plan.to_str().unwrap()])
        .await;
    let pretty: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    std::fs::write(&plan, serde_json::to_string_pretty(&pretty).unwrap()).unwrap();
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 3);
}

#[test]
fn an_unclosed_yaml_quote_that_swallows_the_next_customer_is_a_file_error() {
    let p = Project::new();
    p.file(
        "a.yaml",
        "customers:\n  - accountNumber: \"A1}\n    firstName: Kay\n    lastName: Dee\n    emailAddress: k@example.com\n  - accountNumber: A2\"\n    firstName: Tom\n    lastName: Ess\n    emailAddress: t@example.com\n",
    );
    let validate = p.run(&["validate"]);
    assert_eq!(validate.code, 65, "{validate:?}");
    assert!(
        validate.stdout.contains(
            "a.yaml: has 2 list entries (lines starting with \"- \") but 1 customers were read"
        ),
        "{}",
        validate.stdout
    );
}
