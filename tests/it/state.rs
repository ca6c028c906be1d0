//! Committed scans: only changed files are read, and no error ever removes.

use crate::support::{BASE_CONFIG, Project, error_lines};

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";

fn csv(rows: &[&str]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

fn unenroll_on_removal() -> Project {
    Project::with_config(&BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  on_removal: unenroll\n",
    ))
}

#[test]
fn an_unchanged_file_is_not_parsed_again() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    let first = p.commit();
    assert_eq!(first.stats.files_parsed, 2);
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.org,"]));
    let second = p.dry_scan();
    assert_eq!(
        (second.stats.files_parsed, second.stats.files_unchanged),
        (1, 1)
    );
}

#[test]
fn a_touched_but_identical_file_is_hashed_not_parsed() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.commit();
    p.remove("a.csv");
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    let scan = p.dry_scan();
    assert_eq!(
        (scan.stats.files_parsed, scan.stats.files_unchanged),
        (0, 1)
    );
}

#[test]
fn a_bad_row_keeps_the_previous_desired_state_of_its_key() {
    let p = unenroll_on_removal();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["a.csv:2 emailAddress [row]"]);
    assert_eq!(plan["summary"]["keys"], 0, "a bad row is never a removal");
    p.commit();
    // Still reported from the stored errors while the file is unchanged.
    assert_eq!(error_lines(&p.plan_json()), ["a.csv:2 emailAddress [row]"]);
}

#[test]
fn a_row_whose_key_cannot_be_read_blocks_removals_from_its_file() {
    let p = unenroll_on_removal();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            ",Alan,Turing,alan@example.com,",
        ]),
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["a.csv:3 accountNumber [row]"]);
    assert_eq!(plan["summary"]["keys"], 0);
    assert_eq!(plan["removed"].as_array().unwrap().len(), 0);
}

#[test]
fn a_broken_file_keeps_every_record_it_held() {
    let p = unenroll_on_removal();
    p.file("a.yaml", "customers:\n  - accountNumber: \"1\"\n    firstName: Ada\n    lastName: Lovelace\n    emailAddress: ada@example.com\n");
    p.commit_and_acknowledge();
    p.file(
        "a.yaml",
        "customers:\n  - accountNumber: \"1\"\n   firstName: [broken\n",
    );
    let plan = p.plan_json();
    assert_eq!(plan["summary"]["keys"], 0);
    assert_eq!(plan["removed"].as_array().unwrap().len(), 0);
    p.commit();
    let counts = p.with_store(|s| s.counts().unwrap());
    assert_eq!((counts.desired, counts.removed), (1, 0));
    // Once fixed with a change, the change goes through as usual.
    p.file("a.yaml", "customers:\n  - accountNumber: \"1\"\n    firstName: Ada\n    lastName: King\n    emailAddress: ada@example.com\n");
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer update lastName"]
    );
}

#[test]
fn an_emptied_file_removes_nothing() {
    let p = unenroll_on_removal();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file("a.csv", "");
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["a.csv [file]"]);
    assert_eq!(plan["summary"]["keys"], 0);
    p.file("a.csv", HEADER);
    assert_eq!(p.plan_json()["summary"]["keys"], 0);
}

#[test]
fn a_deleted_file_counts_its_records_as_removed() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    p.commit_and_acknowledge();
    p.remove("b.csv");
    let scan = p.commit();
    assert_eq!(scan.stats.files_deleted, 1);
    let counts = p.with_store(|s| s.counts().unwrap());
    assert_eq!((counts.desired, counts.removed), (1, 1));
}

#[test]
fn a_key_moved_to_another_file_is_neither_removed_nor_sent_again() {
    let p = unenroll_on_removal();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    assert_eq!(p.plan_lines(), Vec::<String>::new());
    p.commit();
    p.remove("a.csv");
    assert_eq!(p.plan_lines(), ["water-bill-pay/1 UnenrollAutopay removed"]);
}

#[test]
fn a_reordered_file_plans_nothing_and_records_the_new_lines() {
    let p = Project::new();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file(
        "a.csv",
        csv(&[
            "2,Alan,Turing,alan@example.com,",
            "1,Ada,Lovelace,ada@example.com,",
        ]),
    );
    assert_eq!(p.plan_lines(), Vec::<String>::new());
    p.commit();
    p.file(
        "a.csv",
        csv(&[
            "2,Alan,Turing,alan@example.com,",
            "1,Ada,King,ada@example.com,",
        ]),
    );
    let plan = p.plan_json();
    assert_eq!(plan["changes"][0]["source"]["line"], 3);
}

#[test]
fn a_new_row_that_duplicates_a_key_of_an_unchanged_file_is_rejected() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file(
        "b.csv",
        csv(&[
            "1,Ada,Imposter,fake@example.com,no",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        [
            "a.csv:2 accountNumber [duplicate]",
            "b.csv:2 accountNumber [duplicate]"
        ]
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/2 ManageCustomer create firstName,lastName,emailAddress"]
    );
    p.commit();
    // Both files are read again next time, so the conflict stays visible until fixed…
    assert_eq!(error_lines(&p.plan_json()).len(), 2);
    // …and once the duplicate goes, the original file's row stands on its own.
    p.file("b.csv", csv(&["2,Alan,Turing,alan@example.com,"]));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), Vec::<String>::new());
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/2 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn plan_and_validate_never_write_the_state() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(p.run(&["plan"]).code, 0);
    assert_eq!(p.run(&["validate"]).code, 0);
    assert!(!p.state_exists(), "a dry run must not create the state");
    p.commit();
    let before = p.with_store(|s| s.counts().unwrap());
    let modified = || {
        std::fs::metadata(p.db_path())
            .and_then(|m| m.modified())
            .ok()
    };
    let before_modified = modified();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,King,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
        ]),
    );
    assert_eq!(p.run(&["plan"]).code, 0);
    assert_eq!(p.run(&["validate"]).code, 0);
    assert_eq!(p.with_store(|s| s.counts().unwrap()), before);
    assert_eq!(modified(), before_modified);
}

#[test]
fn changes_committed_but_not_yet_acknowledged_stay_in_the_plan() {
    let p = Project::new();
    p.file("a.csv", csv(&["1,Ada,Lovelace,ada@example.com,"]));
    p.commit();
    let plan = p.plan_json();
    assert_eq!(plan["changes"][0]["source"]["kind"], "queued");
    assert_eq!(plan["changes"][0]["queue"]["state"], "pending");
    assert_eq!(p.with_store(|s| s.counts().unwrap()).pending, 1);
}

#[test]
fn a_files_damaged_stored_rows_are_read_from_the_desired_state_instead() {
    let p = unenroll_on_removal();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Lovelace,ada@example.com,",
            "2,Alan,Turing,alan@example.com,",
            "3,Grace,Hopper,grace@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file(
        "a.csv",
        csv(&[
            "1,Ada,Byron,ada@example.com,",
            "3,Grace,Hopper,grace@example.com,",
        ]),
    );
    let intact = p.plan_lines();
    assert_eq!(
        intact,
        [
            "water-bill-pay/1 ManageCustomer update lastName",
            "water-bill-pay/2 UnenrollAutopay removed"
        ]
    );
    // Cut short, cut from the front, not bytes, gone: each is read from `desired`.
    for damage in [
        "UPDATE held_rows SET data = substr(data, 1, 40)",
        "UPDATE held_rows SET data = substr(data, 17)",
        "UPDATE held_rows SET data = 'PSH1 as text'",
        "DELETE FROM held_rows",
    ] {
        p.execute_sql(damage);
        assert_eq!(p.plan_lines(), intact, "after {damage}");
    }
    // The next commit stores the file's rows again.
    p.commit();
    assert_eq!(p.store().check_held_rows().unwrap().stored, 1);
    assert_eq!(p.plan_lines(), intact);
}

#[test]
fn a_big_files_stored_rows_read_back_whole() {
    // 70,000 rows: a stored value of over a megabyte, which PostgreSQL reads
    // a megabyte at a time.
    let p = Project::new();
    let mut text = String::from(HEADER);
    for n in 0..70_000u32 {
        text.push_str(&format!("{n:010},Ada,Lovelace,ada{n}@example.com,\n"));
    }
    p.file("big.csv", &text);
    p.commit();
    let check = p.store().check_held_rows().unwrap();
    assert_eq!((check.stored, check.differ), (1, Vec::<String>::new()));
    // A changed row is found against the stored rows.
    p.file(
        "big.csv",
        text.replace("0000000007,Ada", "0000000007,Augusta"),
    );
    let scan = p.dry_scan();
    assert_eq!(scan.stats.keys_changed, 1);
}
