//! `plan --format markdown`, for pull-request comments: golden files under
//! `tests/it/golden/` (set `UPDATE_GOLDEN=1` to rewrite them after a deliberate change).

use crate::support::{Project, with_sandbox};

fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/golden")
        .join(name);
    if paystar_sync::config::process_env("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is deliberate, run with UPDATE_GOLDEN=1",
        path.display()
    );
}

fn csv(rows: &[&str]) -> String {
    format!(
        "accountNumber,firstName,lastName,emailAddress,autopay\n{}\n",
        rows.join("\n")
    )
}

async fn project() -> Project {
    let (p, sandbox) = with_sandbox("").await;
    let config = std::fs::read_to_string(p.config_path())
        .unwrap()
        .replace(
            "  dir: manifests\n",
            "  dir: manifests\n  on_removal: unenroll\n",
        )
        .replace(
            "safety: { max_unenrolls: 100000, max_unenroll_percent: 100 }",
            "safety: { max_unenrolls: 2, max_unenroll_percent: 100 }",
        );
    p.config(&config);
    p.file(
        "residential.csv",
        csv(&[
            "1001,Ada,Lovelace,ada@example.com,",
            "1002,Grace,Hopper,grace@example.com,",
            "1003,Alan,Turing,alan@example.com,",
        ]),
    );
    p.file(
        "commercial.csv",
        csv(&[
            "2001,Edsger,Dijkstra,edsger@example.com,",
            "2002,Barbara,Liskov,barbara@example.com,",
            "2003,Donald,Knuth,donald@example.com,",
        ]),
    );
    assert_eq!(p.run_async(&["apply", "--timeout", "20s"]).await.code, 0);
    drop(sandbox);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_markdown_plan_puts_held_unenrolls_first_groups_by_file_and_masks_emails() {
    let p = project().await;
    p.file(
        "residential.csv",
        csv(&[
            "1001,Ada,Lovelace,countess@example.com,",
            "1002,Grace,Hopper,grace@example.com,false",
            "1003,Alan,Turing,alan@example.com,",
            "1004,Katherine,Johnson,katherine@example.com,",
            "1005,Hedy,Lamarr,not-an-email,",
        ]),
    );
    p.remove("commercial.csv");
    let run = p.run(&["plan", "--format", "markdown", "--detailed-exitcode"]);
    assert_eq!(run.code, 65, "{run:?}");
    for secret in ["Lovelace", "countess@example.com", "Katherine"] {
        assert!(
            !run.stdout.contains(secret),
            "{secret} leaked:\n{}",
            run.stdout
        );
    }
    check_golden("plan.md", &run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_markdown_plan_folds_and_says_how_many_it_left_out() {
    let p = project().await;
    let rows: Vec<String> = (0..60)
        .map(|i| format!("{},New,Customer,new{i}@example.com,", 3000 + i))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    p.file("imports/`odd` name.csv", csv(&rows));
    let run = p.run(&["plan", "--format", "markdown", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run:?}");
    check_golden("plan-long.md", &run.stdout);
}

#[test]
fn a_plan_with_nothing_to_do_says_so_in_markdown() {
    let p = Project::new();
    let run = p.run(&["plan", "--format", "markdown", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run:?}");
    check_golden("plan-empty.md", &run.stdout);
}

#[test]
fn the_gitops_examples_are_valid_yaml_and_post_the_markdown_plan() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops");
    for file in ["github-actions.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let parsed: Result<serde_yaml::Value, _> = serde_yaml::from_str(&text);
        assert!(parsed.is_ok(), "{file}: {parsed:?}");
        assert!(text.contains("paystar-sync validate --config"), "{file}");
        // Manifest errors still get their plan posted, and fail the job after it.
        assert!(
            text.contains(
                "paystar-sync validate --config config/paystar-sync.yaml || [ $? -eq 65 ]"
            ),
            "{file}"
        );
        assert!(
            text.contains("paystar-sync state snapshot --config"),
            "{file}"
        );
        assert!(
            text.contains(
                "plan --config config/paystar-sync.yaml --format markdown --detailed-exitcode"
            ),
            "{file}"
        );
    }
}
