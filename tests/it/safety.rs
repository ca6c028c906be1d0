//! SPEC §6 and issue "change safety and audit": the mass-unenroll hold, approval,
//! per-customer history, and personal data kept out of logs and output.

use crate::support::{Project, TEST_API_KEY, with_sandbox};
use paystar_sync::sandbox::RunningSandbox;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";

fn csv(range: std::ops::Range<usize>, autopay: &str) -> String {
    let mut out = HEADER.to_owned();
    for i in range {
        out.push_str(&format!("{i},Ada,Lovelace,ada{i}@example.com,{autopay}\n"));
    }
    out
}

/// A project with the default safety limits (50 unenrolls, 5 %) and `on_removal: unenroll`.
async fn guarded() -> (Project, RunningSandbox) {
    let (p, sandbox) = with_sandbox("").await;
    guard_removals(&p);
    (p, sandbox)
}

/// The default safety limits and `on_removal: unenroll` in `p`'s config.
fn guard_removals(p: &Project) {
    let config = std::fs::read_to_string(p.config_path())
        .unwrap()
        .replace(
            "safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }\n",
            "",
        )
        .replace(
            "  dir: manifests\n",
            "  dir: manifests\n  on_removal: unenroll\n",
        );
    p.config(&config);
}

fn unenrolls(sandbox: &RunningSandbox) -> usize {
    crate::support::unenrolled_accounts(sandbox).len()
}

async fn apply(p: &Project) -> crate::support::Run {
    p.run_async(&["apply", "--timeout", "20s"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_manifest_holds_its_mass_unenroll_while_everything_else_proceeds() {
    let (p, sandbox) = guarded().await;
    p.file("a.csv", csv(0..90, ""));
    p.file("b.csv", csv(90..100, ""));
    assert_eq!(apply(&p).await.code, 0);
    // b.csv disappears (10 % of customers) while a.csv gets an ordinary edit.
    p.remove("b.csv");
    p.file(
        "a.csv",
        csv(0..90, "").replace("ada0@example.com", "countess@example.com"),
    );
    let plan = p.run_async(&["plan"]).await;
    assert!(
        plan.stdout.contains(
            "HELD: 10 unenrolls of 100 known customers exceed safety.max_unenroll_percent (5 %)"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(
            "UnenrollAutopay (removed from manifests)  (removed from b.csv)  HELD for approval"
        ),
        "{}",
        plan.stdout
    );
    let run = apply(&p).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("10 unenroll(s) are held for approval"),
        "{}",
        run.stdout
    );
    assert_eq!(unenrolls(&sandbox), 0, "held unenrolls are not sent");
    let last = sandbox.sandbox.paystar.accepted().last().cloned().unwrap();
    assert_eq!(
        last.payload_json()["emailAddress"],
        "countess@example.com",
        "everything else proceeds"
    );

    let status = p.run_async(&["status"]).await;
    assert!(
        status
            .stdout
            .contains("held: 10 unenroll(s) wait for approval"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("10  removed from b.csv"),
        "{}",
        status.stdout
    );

    let approve = p.run_async(&["approve"]).await;
    assert!(
        approve
            .stdout
            .contains("approving 10 unenroll(s): removed from b.csv"),
        "{approve:?}"
    );
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(unenrolls(&sandbox), 10);
    // The approval names who gave it: the OS user at the command line.
    let history = p.run_async(&["history", "95", "--format", "json"]).await;
    let lines: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let approved = lines["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "approved")
        .cloned()
        .unwrap_or_else(|| panic!("no approved line: {lines}"));
    let actor = approved["actor"].as_str().unwrap();
    assert!(actor.len() > 4 && actor.starts_with("cli:"), "{lines}");
    if crate::support::running_as_root() {
        assert_eq!(actor, "cli:root");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_that_suddenly_loses_most_of_its_rows_is_held() {
    let (p, sandbox) = guarded().await;
    p.file("export.csv", csv(0..200, ""));
    assert_eq!(apply(&p).await.code, 0);
    p.file("export.csv", csv(0..20, ""));
    let run = apply(&p).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("180 unenrolls in one pass exceed safety.max_unenrolls (50)"),
        "{}",
        run.stdout
    );
    assert_eq!(unenrolls(&sandbox), 0);
    let plan: serde_json::Value =
        serde_json::from_str(&p.run_async(&["plan", "--format", "json"]).await.stdout).unwrap();
    assert_eq!(
        plan["summary"]["unenroll_held"], 0,
        "held unenrolls are not planned again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_unenroll_whose_cause_disappears_is_dropped() {
    let (p, sandbox) = guarded().await;
    p.file("a.csv", csv(0..90, ""));
    p.file("b.csv", csv(90..100, ""));
    assert_eq!(apply(&p).await.code, 0);
    p.remove("b.csv");
    assert_eq!(apply(&p).await.code, 1);
    // The export comes back: the reason for the unenrolls is gone.
    p.file("b.csv", csv(90..100, ""));
    assert_eq!(apply(&p).await.code, 0);
    assert!(
        p.run_async(&["approve"])
            .await
            .stdout
            .contains("nothing is held")
    );
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(unenrolls(&sandbox), 0);
    let history = p.run_async(&["history", "95"]).await;
    assert!(history.stdout.contains("held"), "{}", history.stdout);
    assert!(history.stdout.contains("released"), "{}", history.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_few_unenrolls_within_the_limits_are_sent_without_approval() {
    let (p, sandbox) = guarded().await;
    p.file("a.csv", csv(0..100, ""));
    assert_eq!(apply(&p).await.code, 0);
    let mut text = csv(0..100, "");
    for i in [3, 4] {
        text = text.replace(
            &format!("ada{i}@example.com,\n"),
            &format!("ada{i}@example.com,no\n"),
        );
    }
    p.file("a.csv", text);
    assert_eq!(apply(&p).await.code, 0);
    assert_eq!(unenrolls(&sandbox), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_tells_one_customers_story_with_provenance_and_paystars_answers() {
    let (p, sandbox) = with_sandbox("").await;
    sandbox
        .sandbox
        .paystar
        .push_fault(paystar_sync::sandbox::paystar::Fault {
            status: 503,
            ..Default::default()
        });
    p.file("a.csv", csv(0..1, "no"));
    assert_eq!(apply(&p).await.code, 0);
    p.file(
        "a.csv",
        csv(0..1, "no").replace("ada0@example.com", "ada.king@example.com"),
    );
    assert_eq!(apply(&p).await.code, 0);
    let text = p.run_async(&["history", "0"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines[0], "water-bill-pay/0");
    let kinds: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("      "))
        .map(|l| l.split_whitespace().nth(6).unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["retry", "delivered", "delivered", "delivered"],
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("ManageCustomer, attempt 1: HTTP 503"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("UnenrollAutopay (autopay: false)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("from a.csv:2 (sha256 "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("emailAddress: a***@example.com (was a***@example.com)"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("Lovelace") && !text.stdout.contains("ada0@example.com"));
    let json: serde_json::Value = serde_json::from_str(
        &p.run_async(&["history", "0", "--format", "json"])
            .await
            .stdout,
    )
    .unwrap();
    let history = json["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(
        history[3]["payload"]["originalEmailAddress"],
        "a***@example.com"
    );
    assert_eq!(history[3]["provenance"]["file"], "a.csv");
    // Each line names the version of the file it was sent from.
    let sha = |i: usize| {
        history[i]["provenance"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(sha(0), sha(1));
    assert_ne!(sha(1), sha(3));
    assert_eq!(sha(3).len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_names_the_git_commit_and_author_of_a_manifest_in_a_work_tree() {
    let (p, _sandbox) = with_sandbox("").await;
    p.file("a.csv", csv(0..1, ""));
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(p.root().join("manifests"))
            .args([
                "-c",
                "user.name=Jane Doe",
                "-c",
                "user.email=jane@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        String::from_utf8_lossy(&status.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "a.csv"]);
    git(&["commit", "-q", "-m", "add customer 0"]);
    let commit = git(&["rev-parse", "HEAD"]);
    assert_eq!(apply(&p).await.code, 0);
    let history = p.run_async(&["history", "0"]).await;
    assert!(
        history.stdout.contains(&format!(
            "commit {} by Jane Doe <j***@example.com>",
            &commit[..12]
        )),
        "{}",
        history.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_of_a_full_run_never_show_the_api_key_an_unmasked_email_or_a_name() {
    let (p, sandbox) = guarded().await;
    sandbox
        .sandbox
        .paystar
        .push_fault(paystar_sync::sandbox::paystar::Fault {
            status: 400,
            ..Default::default()
        });
    p.file("a.csv", "accountNumber,firstName,lastName,emailAddress,autopay\n1,Augusta,Byron,augusta.byron@example.com,\n2,Charles,Babbage,charles.babbage@example.com,no\n3,Bad,Row,not-an-email,\n");
    let mut outputs = String::new();
    for args in [
        &["apply", "--log-level", "debug", "--timeout", "10s"][..],
        &["status", "--log-level", "debug"],
        &["plan", "--log-level", "debug"],
        &["validate", "--log-level", "debug"],
        &["retry", "--all", "--log-level", "debug"],
        &["apply", "--log-level", "debug", "--timeout", "10s"],
        &["history", "1", "--log-level", "debug"],
        &["history", "2", "--log-level", "debug", "--format", "json"],
    ] {
        let run = p.run_async(args).await;
        outputs.push_str(&run.stdout);
        outputs.push_str(&run.stderr);
    }
    assert!(
        outputs.contains("a***@example.com") || outputs.contains("c***@example.com"),
        "masked emails do show"
    );
    for secret in [
        TEST_API_KEY,
        "augusta.byron@example.com",
        "charles.babbage@example.com",
        "Augusta",
        "Babbage",
        "not-an-email",
    ] {
        assert!(
            !outputs.contains(secret),
            "{secret:?} leaked into output or logs:\n{outputs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_with_a_reviewed_plan_sends_exactly_that_plan() {
    let (p, sandbox) = with_sandbox("").await;
    p.file("a.csv", csv(0..3, ""));
    let plan = p.root().join("reviewed.json");
    let made = p
        .run_async(&["plan", "--out", plan.to_str().unwrap()])
        .await;
    assert_eq!(made.code, 0, "{made:?}");
    let reviewed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(reviewed["fingerprint"]["acknowledged"], 0);
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_plan_whose_manifests_changed_and_sends_nothing() {
    let (p, sandbox) = with_sandbox("").await;
    p.file("a.csv", csv(0..3, ""));
    let plan = p.root().join("reviewed.json");
    assert_eq!(
        p.run_async(&["plan", "--out", plan.to_str().unwrap()])
            .await
            .code,
        0
    );
    p.file("a.csv", csv(0..3, "no"));
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("refusing to apply the plan: the manifests changed since the plan was made"),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.sandbox.paystar.requests(), 0);
    assert_eq!(
        p.with_store(|s| s.counts().unwrap()).desired,
        0,
        "nothing was committed either"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_plan_once_paystars_acknowledged_state_moved_on() {
    let (p, sandbox) = with_sandbox("").await;
    p.file("a.csv", csv(0..3, ""));
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    p.file(
        "a.csv",
        csv(0..3, "").replace("ada1@example.com", "lovelace@example.com"),
    );
    let plan = p.root().join("reviewed.json");
    assert_eq!(
        p.run_async(&["plan", "--out", plan.to_str().unwrap()])
            .await
            .code,
        0
    );
    // Someone else applies in between.
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("acknowledged state changed"),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.sandbox.paystar.accepted().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_a_file_that_is_not_a_plan() {
    let (p, _sandbox) = with_sandbox("").await;
    let plan = p.root().join("notes.json");
    std::fs::write(&plan, "{\"hello\": 1}").unwrap();
    let run = p
        .run_async(&["apply", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("has no fingerprint: write it with `paystar-sync plan --out`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_state_database_from_the_first_release_still_loads_and_upgrades() {
    // SQLite's own upgrade path, whatever the suite's backend.
    let p = Project::on(
        crate::support::TestState::Sqlite,
        crate::support::BASE_CONFIG,
    );
    std::fs::create_dir_all(p.root().join("state")).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/state-v1.sqlite");
    std::fs::copy(fixture, p.db_path()).unwrap();
    // Read-only commands refuse to touch an old schema and say what to do,
    // never to apply (they may run in CI on a copy)…
    let status = p.run(&["status"]);
    assert_eq!(status.code, 1);
    assert!(
        status
            .stderr
            .contains("is schema v1, written by an older paystar-sync")
            && status
                .stderr
                .contains("once the daemon that writes it runs this release")
            && !status.stderr.contains("apply"),
        "{}",
        status.stderr
    );
    // …and opening it for writing upgrades it, keeping what Paystar acknowledged.
    let counts = p.with_store(|s| s.counts().unwrap());
    assert_eq!((counts.acknowledged, counts.held), (2, 0));
    assert_eq!(p.run(&["status"]).code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_manifest_with_errors_gets_its_latest_report_which_goes_once_it_is_fixed() {
    let (p, _sandbox) = with_sandbox("").await;
    p.file("sub/a.csv", "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,nope\n2,Alan,Turing,alan@example.com\n");
    assert_eq!(p.run_async(&["apply"]).await.code, 65);
    let report = p.root().join("state/reports/sub%2Fa.csv.errors.csv");
    let text = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        text,
        "file,line,accountNumber,field,reason\nsub/a.csv,2,1,emailAddress,is not a valid email address (expected name@example.com)\n"
    );
    let status = p.run_async(&["status"]).await;
    assert!(
        status.stdout.contains("error reports (1):")
            && status.stdout.contains("sub%2Fa.csv.errors.csv"),
        "{}",
        status.stdout
    );
    p.file("sub/a.csv", "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n2,Alan,Turing,alan@example.com\n");
    assert_eq!(p.run_async(&["apply"]).await.code, 0);
    assert!(!report.exists(), "a fixed file's report is removed");
    assert!(
        !p.root().join("manifests/sub/a.csv.errors.csv").exists(),
        "nothing is written into the manifests folder"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_shows_on_a_terminal_and_stays_silent_otherwise() {
    let (p, _sandbox) = with_sandbox("").await;
    p.file("a.csv", csv(0..5, ""));
    let plain = p.run_async(&["apply"]).await;
    assert!(
        !plain.stderr.contains("reading ") && !plain.stderr.contains("\u{1b}[2K"),
        "{}",
        plain.stderr
    );
    p.file("a.csv", csv(0..5, "").replace("ada1@", "lovelace@"));
    let command = format!(
        "{} plan --config {} && PAYSTAR_API_KEY={} {} apply --config {}",
        env!("CARGO_BIN_EXE_paystar-sync"),
        p.config_path().display(),
        crate::support::TEST_API_KEY,
        env!("CARGO_BIN_EXE_paystar-sync"),
        p.config_path().display()
    );
    let on_tty = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("util-linux `script` runs the commands on a pseudo-terminal");
    let screen = String::from_utf8_lossy(&on_tty.stdout);
    assert!(screen.contains("reading 1/1: a.csv"), "{screen}");
    assert!(screen.contains("sent "), "{screen}");
}

/// `guarded()` without a sandbox: the state alone.
fn guarded_project() -> Project {
    let p = Project::new();
    guard_removals(&p);
    p
}

/// The guard cannot tell a queued first delivery from one in flight, so it holds
/// both; a held customer that was never sent has nothing to unenroll.
#[test]
fn approving_a_held_removal_of_a_customer_never_sent_sends_nothing() {
    let p = guarded_project();
    p.file("a.csv", csv(0..100, ""));
    p.commit_and_acknowledge();
    p.file("b.csv", csv(100..110, ""));
    p.commit();
    p.remove("b.csv");
    assert!(p.commit().guard.is_some());
    let approve = p.run(&["approve"]);
    assert!(
        approve.stdout.contains("approving 10 unenroll(s)"),
        "{approve:?}"
    );
    let policy = p.load_config().policy();
    let now = crate::support::now_ms() + 20_000;
    let claim = p.store().claim(20, &[], now, &[]).unwrap();
    assert_eq!(
        claim.claimed.len(),
        10,
        "approval queues them to be compared"
    );
    assert!(claim.claimed.iter().all(|(_, s)| s.plan(policy).is_empty()));
}

/// A file removed while its customers' first ManageCustomer is in flight: once
/// Paystar acknowledges them they exist, and their removal is an unenroll like
/// any other. It counts in the mass-unenroll guard of the scan that saw the
/// removal, and is held when that trips, not sent unguarded once the
/// acknowledgement lands.
#[test]
fn a_removal_scanned_while_the_first_delivery_is_in_flight_is_guarded() {
    use paystar_sync::store::{Outcome, OutcomeResult};
    let p = guarded_project();
    p.file("a.csv", csv(0..100, ""));
    p.commit_and_acknowledge();
    p.file("b.csv", csv(100..110, ""));
    p.commit();
    let policy = p.load_config().policy();
    let now = crate::support::now_ms() + 20_000;
    let claim = p.store().claim(20, &[], now, &[]).unwrap();
    assert_eq!(claim.claimed.len(), 10, "the ten new customers are claimed");
    // The file goes while their ManageCustomer is on its way: 10 of 110
    // customers is more than the 5 % the guard allows.
    p.remove("b.csv");
    let scan = p.commit();
    assert!(scan.guard.is_some(), "the removal trips the guard");
    let outcomes: Vec<Outcome> = claim
        .claimed
        .into_iter()
        .map(|(key, state)| {
            let fields = state.plan(policy).manage.map(|m| m.fields.to_owned());
            let mut outcome = Outcome {
                key,
                acked_fields: fields,
                acked_unenroll: false,
                result: OutcomeResult::Done,
                history: Vec::new(),
                claimed: None,
            };
            outcome.claimed = Some(state.claimed_after(&outcome, policy, now));
            outcome
        })
        .collect();
    p.store().record_outcomes(&outcomes, |_| true, now).unwrap();
    // Paystar now knows the ten customers; their unenrolls wait for approval.
    let claim = p.store().claim(20, &[], now, &[]).unwrap();
    let sent: Vec<_> = claim
        .claimed
        .iter()
        .filter(|(_, state)| state.plan(policy).unenroll.is_some())
        .map(|(key, _)| key.account.clone())
        .collect();
    assert!(sent.is_empty(), "held unenrolls are not sent: {sent:?}");
    let holds = p.store().holds_by_cause().unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(
        (holds[0].cause.as_str(), holds[0].count),
        ("removed from b.csv", 10)
    );
    // Approved, they are sent.
    let approve = p.run(&["approve"]);
    assert!(
        approve.stdout.contains("approving 10 unenroll(s)"),
        "{approve:?}"
    );
    let claim = p.store().claim(20, &[], now, &[]).unwrap();
    let unenrolls = claim
        .claimed
        .iter()
        .filter(|(_, state)| state.plan(policy).unenroll.is_some())
        .count();
    assert_eq!(unenrolls, 10);
}
