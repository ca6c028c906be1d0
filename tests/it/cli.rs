//! SPEC §7: commands and exit codes.

use crate::support::Project;

#[test]
fn validate_exits_0_when_clean_and_65_on_manifest_errors() {
    let p = Project::new();
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    let clean = p.run(&["validate"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(clean.stdout.contains("1 customer row(s) read; 0 error(s)"));
    p.file(
        "b.csv",
        "accountNumber,firstName,lastName,emailAddress\n2,Alan,Turing,nope\n",
    );
    let dirty = p.run(&["validate"]);
    assert_eq!(dirty.code, 65);
    assert!(
        dirty
            .stdout
            .contains("b.csv:2: emailAddress: is not a valid email address"),
        "{}",
        dirty.stdout
    );
}

#[test]
fn plan_with_detailed_exitcode_exits_2_on_changes_and_0_without() {
    let p = Project::new();
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 0);
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    assert_eq!(p.run(&["plan", "--detailed-exitcode"]).code, 2);
    assert_eq!(p.run(&["plan"]).code, 0);
}

#[test]
fn plan_exits_65_on_manifest_errors_but_still_lists_valid_changes() {
    let p = Project::new();
    p.file("a.csv", "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n2,,Turing,alan@example.com\n");
    let run = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 65);
    assert!(
        run.stdout
            .contains("+ water-bill-pay/1  ManageCustomer create  (a.csv:2)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("a.csv:3: firstName: is required"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_text_plan_masks_emails_and_never_shows_names() {
    let p = Project::new();
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Augusta,Lovelace,ada@example.com\n",
    );
    let run = p.run(&["plan"]);
    assert!(
        run.stdout.contains("emailAddress: a***@example.com"),
        "{}",
        run.stdout
    );
    for secret in ["ada@example.com", "Augusta", "Lovelace"] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn plan_out_writes_the_json_plan_to_a_file() {
    let p = Project::new();
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    let out = p.root().join("plan.json");
    let run = p.run(&["plan", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["summary"]["manage_create"], 1);
}

/// A plain `plan` does not hash a file it parses anyway (new, or resized); the
/// plan it prints is the one `plan --out` seals with the files' hashes.
#[test]
fn a_plan_on_stdout_shows_what_the_sealed_plan_holds() {
    let p = Project::new();
    let rows = |accounts: std::ops::Range<usize>, autopay: &str| {
        let mut text = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
        for i in accounts {
            text.push_str(&format!("{i},Ada,Lovelace,ada{i}@example.com,{autopay}\n"));
        }
        text
    };
    p.file("a.csv", rows(0..20, ""));
    p.commit_and_acknowledge();
    p.file("a.csv", rows(0..25, "no")); // resized: parsed whatever its hash
    p.file("b.csv", rows(100..103, "")); // new
    let printed = p.plan_json();
    let out = p.root().join("plan.json");
    let run = p.run(&["plan", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let sealed: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(printed["changes"], sealed["changes"]);
    assert_eq!(printed["summary"], sealed["summary"]);
    assert_eq!(sealed["summary"]["unenroll"], 25, "{}", sealed["summary"]);
    assert!(sealed["fingerprint"]["manifests"].is_string(), "{sealed}");
}

#[test]
fn a_usage_error_exits_64() {
    let p = Project::new();
    assert_eq!(p.run(&["plan", "--format", "yaml"]).code, 64);
    assert_eq!(p.run(&["frobnicate"]).code, 64);
}

#[test]
fn a_missing_manifests_folder_is_a_configuration_error_that_touches_nothing() {
    let p = Project::new();
    std::fs::remove_dir(p.root().join("manifests")).unwrap();
    let run = p.run(&["plan"]);
    assert_eq!(run.code, 78);
    assert!(run.stderr.contains("manifests.dir"), "{}", run.stderr);
    assert!(!p.state_exists());
}

#[test]
fn validate_warns_about_every_secret_it_cannot_resolve_but_sends_nothing() {
    let p = Project::with_config(&format!(
        "{}providers:\n  lotuspay:\n    secret_key_env: PAYSTAR_SYNC_TEST_UNSET_LP\n  smarterpay:\n    auth: {{ signature_secret_file: /nonexistent/secret }}\n",
        crate::support::BASE_CONFIG
    ));
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("providers.lotuspay.secret_key_env: environment variable PAYSTAR_SYNC_TEST_UNSET_LP is not set"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "providers.smarterpay.auth.signature_secret_file: cannot read /nonexistent/secret"
        ),
        "{}",
        run.stdout
    );
}

/// Runs the binary without a config (commands that need none).
fn bare(args: &[&str]) -> crate::support::Run {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paystar-sync"))
        .args(args)
        .output()
        .expect("run paystar-sync");
    crate::support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = bare(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        for word in [
            "paystar-sync",
            "validate",
            "plan",
            "markdown",
            "completions",
        ] {
            assert!(run.stdout.contains(word), "{shell}: {word} missing");
        }
    }
    // The bash script is valid bash.
    let script = p.root().join("paystar-sync.bash");
    std::fs::write(&script, bare(&["completions", "bash"]).stdout).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(checked.success());
    let unknown = bare(&["completions", "tcsh"]);
    assert_eq!(unknown.code, 64, "{unknown:?}");
}

#[test]
fn the_man_page_is_roff_that_man_can_render() {
    let p = Project::new();
    let run = bare(&["man"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(".TH paystar-sync 1"), "{}", run.stdout);
    for command in ["validate", "plan", "apply", "completions"] {
        assert!(run.stdout.contains(command), "{command} missing");
    }
    let page = p.root().join("paystar-sync.1");
    std::fs::write(&page, &run.stdout).unwrap();
    // groff renders it without complaint when it is installed (Debian: groff-base).
    if let Ok(rendered) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
    {
        assert!(rendered.status.success(), "{rendered:?}");
        assert!(
            rendered.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}
