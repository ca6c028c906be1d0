//! SPEC §4: which events a difference between desired and acknowledged state plans.

use crate::support::{BASE_CONFIG, Project};

const HEADER: &str = "accountNumber,subAccountNumber,firstName,lastName,emailAddress,autopay\n";

fn customers(rows: &[&str]) -> String {
    format!("{HEADER}{}\n", rows.join("\n"))
}

#[test]
fn a_key_never_acknowledged_plans_a_manage_customer_create() {
    let p = Project::new();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress"]
    );
    let plan = p.plan_json();
    assert!(
        plan["changes"][0]["events"][0]
            .get("originalEmailAddress")
            .is_none()
    );
}

#[test]
fn running_again_after_acknowledgement_plans_nothing() {
    let p = Project::new();
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,no",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    assert_eq!(p.plan_lines(), Vec::<String>::new());
    let run = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Plan: no changes."));
}

#[test]
fn a_name_change_plans_an_update_without_original_email() {
    let p = Project::new();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file("c.csv", customers(&["1,,Ada,King,ada@example.com,"]));
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer update lastName"]
    );
}

#[test]
fn an_email_change_sends_the_acknowledged_email_as_original_email() {
    let p = Project::new();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file(
        "c.csv",
        customers(&["1,,Ada,Lovelace,countess@example.org,"]),
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer update emailAddress original=a***@example.com"]
    );
}

#[test]
fn successive_edits_before_delivery_keep_the_acknowledged_email_as_original() {
    let p = Project::new();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,second@example.org,"]));
    p.commit();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,third@example.net,"]));
    p.commit();
    let plan = p.plan_json();
    let event = &plan["changes"][0]["events"][0];
    assert_eq!(event["emailAddress"], "t***@example.net");
    assert_eq!(event["originalEmailAddress"], "a***@example.com");
}

#[test]
fn autopay_false_plans_an_unenroll_after_the_manage_customer() {
    let p = Project::new();
    p.file(
        "c.csv",
        customers(&["1,,Ada,Lovelace,ada@example.com,unenrolled"]),
    );
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/1 UnenrollAutopay autopay_false",
        ]
    );
}

#[test]
fn autopay_false_on_an_acknowledged_customer_plans_only_the_unenroll() {
    let p = Project::new();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.commit_and_acknowledge();
    p.file(
        "c.csv",
        customers(&["1,,Ada,Lovelace,ada@example.com,false"]),
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 UnenrollAutopay autopay_false"]
    );
    p.commit_and_acknowledge();
    assert_eq!(p.plan_lines(), Vec::<String>::new());
    // Paystar cannot enrol anyone: saying true afterwards sends nothing.
    p.file(
        "c.csv",
        customers(&["1,,Ada,Lovelace,ada@example.com,true"]),
    );
    assert_eq!(p.plan_lines(), Vec::<String>::new());
}

#[test]
fn a_removed_key_sends_nothing_when_on_removal_is_ignore() {
    let p = Project::new();
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    let plan = p.plan_json();
    assert_eq!(plan["summary"]["keys"], 0);
    assert_eq!(plan["summary"]["removals_ignored"], 1);
    assert_eq!(plan["removed"][0]["accountNumber"], "2");
    let text = p.run(&["plan"]);
    assert!(
        text.stdout
            .contains("1 customer(s) left every manifest; nothing is sent"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_removed_key_is_unenrolled_when_on_removal_is_unenroll() {
    let p = Project::with_config(&BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  on_removal: unenroll\n",
    ));
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    p.file("d.csv", customers(&["3,,Grace,Hopper,grace@example.com,"]));
    p.commit_and_acknowledge();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.remove("d.csv");
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/2 UnenrollAutopay removed",
            "water-bill-pay/3 UnenrollAutopay removed"
        ]
    );
}

#[test]
fn a_key_removed_before_paystar_ever_acknowledged_it_sends_nothing() {
    let p = Project::with_config(&BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  on_removal: unenroll\n",
    ));
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn a_key_that_returns_after_removal_is_live_again() {
    let p = Project::new();
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,alan@example.com,",
        ]),
    );
    p.commit_and_acknowledge();
    p.file("c.csv", customers(&["1,,Ada,Lovelace,ada@example.com,"]));
    p.commit();
    p.file(
        "c.csv",
        customers(&[
            "1,,Ada,Lovelace,ada@example.com,",
            "2,,Alan,Turing,turing@example.com,",
        ]),
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/2 ManageCustomer update emailAddress original=a***@example.com"]
    );
}
