//! SPEC §3: reading manifests, and what counts as a row or a file error.

use crate::support::{Project, error_lines};

const YAML_ONE: &str = "\
businessUnitSlug: water-bill-pay
customers:
  - accountNumber: \"12345\"
    firstName: John
    lastName: Smith
    emailAddress: john.smith@example.com
";

#[test]
fn an_excel_csv_export_with_bom_crlf_and_spaced_headers_is_read() {
    let p = Project::new();
    p.file(
        "export.csv",
        "\u{feff}Account Number,Sub Account Number,First Name,Last Name,E-mail Address,AutoPay\r\n\
         10001,,Ada,Lovelace,ada@example.com,Yes\r\n\
         10002,A,Alan,Turing,alan@example.com,N\r\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), Vec::<String>::new());
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/10001 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/10002/A ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/10002/A UnenrollAutopay autopay_false",
        ]
    );
    assert_eq!(plan["changes"][1]["source"]["line"], 3);
}

#[test]
fn a_semicolon_file_is_read_when_the_config_names_the_delimiter() {
    let p = Project::with_config(&crate::support::BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  csv: { delimiter: \";\" }\n",
    ));
    p.file(
        "semi.csv",
        "accountNumber;firstName;lastName;emailAddress\n1;Ada;Lovelace;ada@example.com\n",
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn configured_column_names_map_other_headers() {
    let config = crate::support::BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  csv:\n    columns: { accountNumber: \"Acct #\", emailAddress: \"Contact\" }\n",
    );
    let p = Project::with_config(&config);
    p.file(
        "mapped.csv",
        "Acct #,First Name,Last Name,Contact\n77,Ada,Lovelace,ada@example.com\n",
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/77 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn quoted_commas_and_line_breaks_in_fields_keep_line_numbers_right() {
    let p = Project::new();
    p.file(
        "notes.csv",
        "accountNumber,firstName,lastName,emailAddress,notes\n\
         1,Ada,\"Lovelace, Countess\",ada@example.com,\"first line\nsecond line\"\n\
         2,Alan,Turing,not-an-email,plain\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["notes.csv:4 emailAddress [row]"]);
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn a_line_break_inside_a_known_field_is_a_control_character_error() {
    let p = Project::new();
    p.file("broken.csv", "accountNumber,firstName,lastName,emailAddress\n1,\"Ada\nMarie\",Lovelace,ada@example.com\n");
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["broken.csv:2 firstName [row]"]);
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("control character")
    );
}

#[test]
fn trailing_blank_lines_and_rows_of_bare_delimiters_are_skipped() {
    let p = Project::new();
    p.file(
        "trailing.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n,,,\n\n\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), Vec::<String>::new());
    assert_eq!(plan["summary"]["keys"], 1);
}

#[test]
fn a_header_only_csv_is_a_file_error() {
    let p = Project::new();
    p.file(
        "empty.csv",
        "accountNumber,firstName,lastName,emailAddress\n",
    );
    p.file("nothing.csv", "");
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        ["empty.csv [file]", "nothing.csv [file]"]
    );
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("never removes")
    );
}

#[test]
fn a_csv_missing_a_required_column_is_a_file_error_naming_the_column() {
    let p = Project::new();
    p.file(
        "partial.csv",
        "accountNumber,firstName,lastName\n1,Ada,Lovelace\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["partial.csv:1 [file]"]);
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("emailAddress")
    );
    assert_eq!(plan["summary"]["keys"], 0);
}

#[test]
fn unknown_csv_columns_are_ignored_with_one_warning_per_file() {
    let p = Project::new();
    p.file(
        "extra.csv",
        "accountNumber,firstName,lastName,emailAddress,Balance,Phone\n1,Ada,Lovelace,ada@example.com,10,555\n2,Alan,Turing,alan@example.com,0,556\n",
    );
    let plan = p.plan_json();
    let warnings = plan["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("\"Balance\", \"Phone\"")
    );
    assert_eq!(plan["summary"]["keys"], 2);
}

#[test]
fn invalid_utf8_is_a_file_error_with_a_hint() {
    let p = Project::new();
    p.file(
        "latin1.csv",
        b"accountNumber,firstName,lastName,emailAddress\n1,Ren\xe9,Dupont,rene@example.com\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["latin1.csv:2 [file]"]);
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("CSV UTF-8")
    );
}

#[test]
fn yaml_anchors_and_merge_keys_are_expanded() {
    let p = Project::new();
    p.file(
        "family.yaml",
        "x-smith: &smith\n  lastName: Smith\n  autopay: false\ncustomers:\n  - <<: *smith\n    accountNumber: \"1\"\n    firstName: John\n    emailAddress: john@example.com\n  - <<: *smith\n    accountNumber: \"2\"\n    firstName: Jane\n    emailAddress: jane@example.com\n",
    );
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/1 UnenrollAutopay autopay_false",
            "water-bill-pay/2 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/2 UnenrollAutopay autopay_false",
        ]
    );
}

#[test]
fn a_bare_yaml_list_is_accepted() {
    let p = Project::new();
    p.file("list.yml", "- accountNumber: \"9\"\n  firstName: Ada\n  lastName: Lovelace\n  emailAddress: ada@example.com\n");
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/9 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn an_unquoted_yaml_account_number_is_a_row_error() {
    let p = Project::new();
    p.file(
        "numbers.yaml",
        "customers:\n  - accountNumber: 00123\n    firstName: Ada\n    lastName: Lovelace\n    emailAddress: ada@example.com\n  - accountNumber: 12345\n    firstName: Alan\n    lastName: Turing\n    emailAddress: alan@example.com\n  - accountNumber: \"00777\"\n    subAccountNumber: 7\n    firstName: Grace\n    lastName: Hopper\n    emailAddress: grace@example.com\n",
    );
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        [
            "numbers.yaml:2 accountNumber [row]",
            "numbers.yaml:6 accountNumber [row]",
            "numbers.yaml:10 subAccountNumber [row]"
        ]
    );
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("quoted")
    );
    assert_eq!(plan["summary"]["keys"], 0);
}

#[test]
fn a_misspelt_yaml_field_is_a_row_error_and_never_ignored() {
    let p = Project::new();
    p.file("typo.yaml", format!("{YAML_ONE}    autopy: false\n"));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["typo.yaml:3 autopy [row]"]);
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("did you mean autopay?")
    );
    assert_eq!(plan["errors"][0]["accountNumber"], "12345");
    assert_eq!(plan["summary"]["keys"], 0);
}

#[test]
fn a_yaml_syntax_error_is_a_file_error_with_its_line() {
    let p = Project::new();
    p.file(
        "bad.yaml",
        "customers:\n  - accountNumber: \"1\"\n   firstName: [unclosed\n",
    );
    let plan = p.plan_json();
    let errors = error_lines(&plan);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("bad.yaml:") && errors[0].ends_with("[file]"),
        "{errors:?}"
    );
}

#[test]
fn an_unknown_top_level_yaml_key_is_a_file_error() {
    let p = Project::new();
    p.file("top.yaml", YAML_ONE.replace("customers:", "customer:"));
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["top.yaml [file]"]);
}

#[test]
fn every_row_error_names_its_file_line_and_field() {
    let p = Project::new();
    let long = "x".repeat(256);
    p.file(
        "rows.csv",
        format!(
            "accountNumber,firstName,lastName,emailAddress,autopay\n\
             1,Ada,Lovelace,ada@@example.com,\n\
             2,Alan,,alan@example.com,\n\
             3,{long},Hopper,grace@example.com,\n\
             4,Edsger,Dijkstra,edsger@example.com,maybe\n\
             5,Barbara,Liskov,barbara@example.com,no\n"
        ),
    );
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        [
            "rows.csv:2 emailAddress [row]",
            "rows.csv:3 lastName [row]",
            "rows.csv:4 firstName [row]",
            "rows.csv:5 autopay [row]",
        ]
    );
    // Errors never hold back valid rows.
    assert_eq!(
        p.plan_lines(),
        [
            "water-bill-pay/5 ManageCustomer create firstName,lastName,emailAddress",
            "water-bill-pay/5 UnenrollAutopay autopay_false",
        ]
    );
}

#[test]
fn the_same_key_in_two_files_rejects_every_occurrence_and_names_each_location() {
    let p = Project::new();
    p.file("a.yaml", YAML_ONE);
    p.file("b.csv", "accountNumber,firstName,lastName,emailAddress\n12345,Jon,Smith,jon@example.com\n2,Ada,Lovelace,ada@example.com\n");
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        [
            "a.yaml:3 accountNumber [duplicate]",
            "b.csv:2 accountNumber [duplicate]"
        ]
    );
    assert!(
        plan["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("b.csv:2")
    );
    assert!(
        plan["errors"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("a.yaml:3")
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/2 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn the_same_key_twice_in_one_file_is_rejected() {
    let p = Project::new();
    p.file("twice.csv", "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n1 ,Ada,King,ada@example.com\n");
    let plan = p.plan_json();
    assert_eq!(
        error_lines(&plan),
        [
            "twice.csv:2 accountNumber [duplicate]",
            "twice.csv:3 accountNumber [duplicate]"
        ]
    );
    assert_eq!(plan["summary"]["keys"], 0);
}

#[test]
fn the_same_account_in_two_business_units_or_sub_accounts_is_two_customers() {
    let p = Project::new();
    p.file(
        "units.csv",
        "businessUnitSlug,accountNumber,subAccountNumber,firstName,lastName,emailAddress\n\
         water,1,,Ada,Lovelace,ada@example.com\n\
         power,1,,Ada,Lovelace,ada@example.com\n\
         power,1,B,Ada,Lovelace,ada@example.com\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), Vec::<String>::new());
    assert_eq!(plan["summary"]["keys"], 3);
}

#[test]
fn the_business_unit_comes_from_the_row_then_the_file_then_the_config() {
    let p = Project::new();
    p.file(
        "units.yaml",
        "businessUnitSlug: gas\ncustomers:\n  - accountNumber: \"1\"\n    firstName: A\n    lastName: B\n    emailAddress: a@example.com\n  - accountNumber: \"2\"\n    businessUnitSlug: power\n    firstName: A\n    lastName: B\n    emailAddress: a@example.com\n",
    );
    p.file(
        "plain.csv",
        "accountNumber,firstName,lastName,emailAddress\n3,A,B,a@example.com\n",
    );
    let units: Vec<String> = p.plan_json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["businessUnitSlug"].as_str().unwrap(),
                c["accountNumber"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(units, ["gas/1", "power/2", "water-bill-pay/3"]);
}

#[test]
fn a_row_without_any_business_unit_is_a_row_error() {
    let p = Project::with_config(
        &crate::support::BASE_CONFIG.replace("  default_business_unit: water-bill-pay\n", ""),
    );
    p.file(
        "plain.csv",
        "accountNumber,firstName,lastName,emailAddress\n3,A,B,a@example.com\n",
    );
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), ["plain.csv:2 businessUnitSlug [row]"]);
}

#[test]
fn values_are_trimmed_and_a_missing_sub_account_is_empty() {
    let p = Project::new();
    p.file("spaces.csv", "accountNumber,firstName,lastName,emailAddress\n  42  , Ada , Lovelace ,  ada@example.com \n");
    let plan = p.plan_json();
    assert_eq!(plan["changes"][0]["accountNumber"], "42");
    assert_eq!(plan["changes"][0]["subAccountNumber"], "");
}

#[test]
fn ignored_names_are_never_read() {
    let p = Project::new();
    for name in [
        ".hidden.csv",
        "_draft.csv",
        "a.csv~",
        "b.csv.tmp",
        "c.yaml.swp",
        "d.csv.part",
        "e.csv.partial",
        "f.csv.crdownload",
        "notes.txt",
    ] {
        p.file(name, "this is not a manifest");
    }
    p.file(".git/config.yaml", "not: a manifest");
    let plan = p.plan_json();
    assert_eq!(error_lines(&plan), Vec::<String>::new());
    assert_eq!(plan["stats"]["files"], 0);
}

#[test]
fn manifests_in_subfolders_and_behind_a_symlinked_root_are_found() {
    let p = Project::new();
    let release = p.root().join("releases/r1");
    std::fs::create_dir_all(release.join("east")).unwrap();
    std::fs::write(release.join("east/customers.yaml"), YAML_ONE).unwrap();
    std::fs::remove_dir(p.root().join("manifests")).unwrap();
    std::os::unix::fs::symlink(&release, p.root().join("manifests")).unwrap();
    let plan = p.plan_json();
    assert_eq!(plan["changes"][0]["source"]["file"], "east/customers.yaml");
}
