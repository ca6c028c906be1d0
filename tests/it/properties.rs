//! Property tests, each within a fixed time budget (`arbtest`): the manifest
//! readers, the config loader and both webhook parsers never panic, and a
//! damaged manifest never loses a customer without saying so. The same
//! functions are fuzz targets under `fuzz/` (see FUZZING.md).

use arbtest::arbitrary::{Result, Unstructured};
use paystar_sync::config::{Config, Secret};
use paystar_sync::manifest::{Format, ManifestError, ParseOptions, ParsedFile, parse_bytes};
use paystar_sync::providers::payroc::{PayrocReceiver, Verdict as PayrocVerdict};
use paystar_sync::providers::smarterpay::{Auth, SmarterPay, Verdict as SmarterPayVerdict};
use paystar_sync::store::EventOutcome;
use std::collections::BTreeMap;
use std::path::Path;

/// Time per property (the suite runs them in parallel); `ARBTEST_BUDGET_MS`
/// gives a longer search, e.g. 60000 for a minute each.
fn budget_ms() -> u64 {
    paystar_sync::config::process_env("ARBTEST_BUDGET_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

/// Bytes that matter to the formats, offered more often than chance would.
const INTERESTING: &[u8] = b"\"',;:\n\r\t #-[]{}&*!|>%@\\\0\xff\xef\xbb\xbfx0";

fn opts() -> ParseOptions {
    ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    }
}

fn word(u: &mut Unstructured<'_>, alphabet: &[u8], max: usize) -> Result<String> {
    let len = u.int_in_range(1..=max)?;
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(*u.choose(alphabet)? as char);
    }
    Ok(out)
}

/// A valid manifest of 1 to 12 distinct customers, as CSV or block YAML.
fn good_manifest(u: &mut Unstructured<'_>, format: Format) -> Result<(Vec<u8>, usize)> {
    let n = u.int_in_range(1..=12)?;
    let letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = match format {
        Format::Yaml => "businessUnitSlug: water-bill-pay\ncustomers:\n".to_owned(),
        _ => "accountNumber,firstName,lastName,emailAddress,autopay\n".to_owned(),
    };
    for i in 0..n {
        let account = format!("A{i}{}", word(u, b"0123456789", 6)?);
        let first = word(u, letters, 10)?;
        let last = word(u, letters, 10)?;
        let email = format!("{}@example.com", word(u, letters, 8)?.to_lowercase());
        let autopay = *u.choose(&["", "true", "false"])?;
        match format {
            Format::Yaml => {
                out.push_str(&format!(
                    "  - accountNumber: \"{account}\"\n    firstName: {first}\n    lastName: {last}\n    emailAddress: {email}\n"
                ));
                if !autopay.is_empty() {
                    out.push_str(&format!("    autopay: {autopay}\n"));
                }
            }
            _ => out.push_str(&format!("{account},{first},{last},{email},{autopay}\n")),
        }
    }
    Ok((out.into_bytes(), n))
}

/// One to three byte-level edits: insert, delete or replace.
fn mutate(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>) -> Result<()> {
    for _ in 0..u.int_in_range(1..=3)? {
        let at = u.int_in_range(0..=bytes.len())?;
        let byte = if u.ratio(3, 4)? {
            *u.choose(INTERESTING)?
        } else {
            u.arbitrary()?
        };
        match u.int_in_range(0..=2)? {
            0 => bytes.insert(at, byte),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = byte,
            _ => bytes.push(byte),
        }
    }
    Ok(())
}

fn records(parsed: &ParsedFile) -> BTreeMap<String, String> {
    parsed
        .rows
        .iter()
        .map(|r| {
            let f = r.fields();
            (
                r.key().to_string(),
                format!(
                    "{}|{}|{}|{:?}",
                    f.first_name, f.last_name, f.email, r.autopay
                ),
            )
        })
        .collect()
}

/// Every error names its file, and a row error its line or entry.
fn located(errors: &[ManifestError], file: &str) -> bool {
    errors.iter().all(|e| {
        e.file == file
            && !e.reason.is_empty()
            && (e.kind != paystar_sync::manifest::ErrorKind::Row
                || e.line.is_some()
                || e.field
                    .as_deref()
                    .is_some_and(|f| f.starts_with("customers[")))
    })
}

fn damaged_manifests_never_lose_a_customer_silently(format: Format, file: &str) {
    arbtest::arbtest(|u| {
        let (good, n) = good_manifest(u, format)?;
        let before =
            parse_bytes(&good, format, file, &opts()).expect("the generated file is valid");
        assert!(before.errors.is_empty(), "{:?}", before.errors);
        assert_eq!(before.rows.len(), n);
        let mut bad = good.clone();
        mutate(u, &mut bad)?;
        match parse_bytes(&bad, format, file, &opts()) {
            Err(error) => assert!(located(&[error], file)),
            Ok(after) if !after.errors.is_empty() => assert!(located(&after.errors, file)),
            Ok(after) => {
                // No error: the same records, or no fewer customers (an edited value).
                let (old, new) = (records(&before), records(&after));
                assert!(
                    old == new || after.rows.len() >= n,
                    "a customer vanished without an error:\n{}\n---\n{}\n{old:?}\n{new:?}",
                    String::from_utf8_lossy(&good),
                    String::from_utf8_lossy(&bad)
                );
            }
        }
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
}

#[test]
fn a_damaged_csv_manifest_never_loses_a_customer_without_an_error() {
    damaged_manifests_never_lose_a_customer_silently(Format::Csv, "a.csv");
}

#[test]
fn a_damaged_yaml_manifest_never_loses_a_customer_without_an_error() {
    damaged_manifests_never_lose_a_customer_silently(Format::Yaml, "a.yaml");
}

/// A parse in full: rows (key, fields, line), errors, rejected keys, warnings.
fn whole_parse(parsed: &std::result::Result<ParsedFile, ManifestError>) -> String {
    match parsed {
        Err(error) => format!("file error {error:?}"),
        Ok(p) => {
            let rows: Vec<String> = p
                .rows
                .iter()
                .map(|r| {
                    let f = r.fields();
                    format!(
                        "{}@{}:{}|{}|{}|{:?}|{}",
                        r.key(),
                        r.line,
                        f.first_name,
                        f.last_name,
                        f.email,
                        r.autopay,
                        r.fingerprint()
                    )
                })
                .collect();
            format!(
                "{rows:#?}\n{:#?}\n{:?}\n{}\n{:?}",
                p.errors, p.rejected_keys, p.keyless_rejects, p.warnings
            )
        }
    }
}

#[test]
fn a_csv_manifest_read_in_two_parts_reads_exactly_as_in_one() {
    let (mut split, mut whole_errors) = (0, 0);
    arbtest::arbtest(|u| {
        let (mut bytes, _) = good_manifest(u, Format::Csv)?;
        // Quoted fields with delimiters, doubled quotes and line breaks inside.
        if u.ratio(1, 2)? {
            let at = u.int_in_range(0..=5)?;
            let quoted = format!(
                "Q{at}x,\"Ann \"\"Jo\"\"\nLee\",\"Smith, Jr\",\"a{at}@example.com\",true\n"
            );
            bytes.extend_from_slice(quoted.as_bytes());
        }
        if u.ratio(1, 3)? {
            bytes.extend_from_slice(b"\r\n,,,,\n\nZ9,,B,z@example.com,maybe\n");
        }
        // Empty lines, which the csv reader numbers in its own way.
        for _ in 0..u.int_in_range(0..=3)? {
            let breaks: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect();
            if let Ok(&at) = u.choose(&breaks) {
                bytes.insert(at, b'\n');
            }
        }
        if u.ratio(1, 2)? {
            mutate(u, &mut bytes)?;
        }
        let one = parse_bytes(&bytes, Format::Csv, "a.csv", &opts());
        whole_errors += usize::from(one.is_err());
        // From a tiny size up, so that the split lands anywhere in these small files.
        let two = paystar_sync::manifest::parse_csv_in_parts(&bytes, "a.csv", &opts(), 0);
        split += 1;
        assert_eq!(
            whole_parse(&one),
            whole_parse(&two),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
    assert!(
        split > 50 && whole_errors > 5,
        "{split} files, {whole_errors} file errors"
    );
}

#[test]
fn the_manifest_readers_never_panic_on_any_bytes() {
    arbtest::arbtest(|u| {
        let bytes: &[u8] = u.arbitrary()?;
        for format in [Format::Csv, Format::Tsv, Format::Yaml, Format::Xlsx] {
            match parse_bytes(bytes, format, "x", &opts()) {
                Ok(parsed) => assert!(located(&parsed.errors, "x")),
                Err(error) => assert!(located(&[error], "x")),
            }
        }
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
}

const GOOD_CONFIG: &str = "state:\n  path: state/db\nmanifests:\n  dir: manifests\n  on_removal: unenroll\n  debounce: 500ms\n  max_file_size: 10MiB\n  csv: { delimiter: \";\", columns: { accountNumber: \"Acct #\" } }\npaystar:\n  endpoint: sandbox\n  default_business_unit: w\n  retry: { schedule: [1s, 5s] }\nsafety: { max_unenrolls: 5, max_unenroll_percent: 2.5 }\nserver: { listen: \"127.0.0.1:0\" }\nhistory: { retention: 400d }\nshutdown_grace: 5s\nproviders:\n  lotuspay: { base_url: sandbox, schedule: \"0 */5 * * * *\" }\n  smarterpay: { auth: { signature_secret_env: S } }\n";

#[test]
fn the_config_loader_never_panics_and_names_every_problem() {
    assert!(Config::parse(GOOD_CONFIG, Path::new("/etc/p/config.yaml")).is_ok());
    arbtest::arbtest(|u| {
        let mut text = GOOD_CONFIG.as_bytes().to_vec();
        if u.ratio(1, 4)? {
            text = u.arbitrary::<Vec<u8>>()?;
        } else {
            mutate(u, &mut text)?;
        }
        let text = String::from_utf8_lossy(&text);
        if let Err(err) = Config::parse(&text, Path::new("/etc/p/config.yaml")) {
            assert!(!err.problems.is_empty());
            assert!(err.problems.iter().all(|p| !p.trim().is_empty()), "{err}");
        }
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
}

fn smarterpay() -> SmarterPay {
    SmarterPay {
        auth: Auth::Basic {
            user: Secret::new("sp-user"),
            password: Secret::new("sp-pass"),
        },
        account_field: "reference".into(),
        business_unit: "water-bill-pay".into(),
    }
}

const BASIC: &str = "Basic c3AtdXNlcjpzcC1wYXNz"; // sp-user:sp-pass

const SMARTERPAY_EVENT: &str = r#"{"events":[{"id":"EV1","created_at":"2021-07-15T12:48:39.000Z","resource_type":"customer_account","description":"API - Customer Account updated","event_source":"20022091","reference":"CUST1","Email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","status":"active","custom_reference":""}]}"#;

#[test]
fn the_smarterpay_parser_never_panics_and_stops_only_on_an_inactive_status() {
    let receiver = smarterpay();
    let right = |name: &str| (name == "authorization").then(|| BASIC.to_owned());
    let intact = receiver.receive(&right, SMARTERPAY_EVENT.as_bytes());
    assert!(
        matches!(&intact, SmarterPayVerdict::Record { events, .. } if events.len() == 1),
        "{intact:?}"
    );
    arbtest::arbtest(|u| {
        let mut body = SMARTERPAY_EVENT.as_bytes().to_vec();
        if u.ratio(1, 4)? {
            body = u.arbitrary::<Vec<u8>>()?;
        } else {
            mutate(u, &mut body)?;
        }
        let wrong =
            |name: &str| (name == "authorization").then(|| "Basic d3Jvbmc6d3Jvbmc=".to_owned());
        assert!(matches!(
            receiver.receive(&wrong, &body),
            SmarterPayVerdict::Unauthorised
        ));
        let right = |name: &str| (name == "authorization").then(|| BASIC.to_owned());
        if let SmarterPayVerdict::Record { events, .. } = receiver.receive(&right, &body) {
            let text = String::from_utf8_lossy(&body);
            for event in events {
                assert!(!event.event_id.is_empty());
                if event.outcome == EventOutcome::Stop {
                    assert!(text.contains("inactive"), "a stop from {text}");
                }
            }
        }
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
}

const PAYROC_EVENT: &str = r#"{"specversion":"1.0","type":"processingAccount.status.changed","source":"payroc","id":"e1","time":"2024-05-01T10:00:00Z","datacontenttype":"application/json","data":{"processingAccountId":"38765","status":"approved"}}"#;

#[test]
fn the_payroc_parser_never_panics_and_never_records_without_the_secret() {
    let receiver = PayrocReceiver {
        secret: Secret::new("hook-secret"),
        pause: None,
    };
    let right = |name: &str| (name == "payroc-secret").then(|| "hook-secret".to_owned());
    assert!(matches!(
        receiver.receive(&right, PAYROC_EVENT.as_bytes()),
        PayrocVerdict::Record(_)
    ));
    arbtest::arbtest(|u| {
        let mut body = PAYROC_EVENT.as_bytes().to_vec();
        if u.ratio(1, 4)? {
            body = u.arbitrary::<Vec<u8>>()?;
        } else {
            mutate(u, &mut body)?;
        }
        let secret: String = u.arbitrary()?;
        let wrong = |name: &str| (name == "payroc-secret").then(|| secret.clone());
        if secret != "hook-secret" {
            assert!(matches!(
                receiver.receive(&wrong, &body),
                PayrocVerdict::Unauthorised
            ));
        }
        // Binary content mode half the time: context attributes as ce-* headers.
        let ce: Option<[String; 4]> = if u.arbitrary()? {
            Some([
                u.choose(&["1.0", "0.3", ""])?.to_string(),
                u.arbitrary()?,
                u.choose(&["processingAccount.status.changed", "x"])?
                    .to_string(),
                u.arbitrary()?,
            ])
        } else {
            None
        };
        let right = |name: &str| match (name, &ce) {
            ("payroc-secret", _) => Some("hook-secret".to_owned()),
            ("ce-specversion", Some(ce)) => Some(ce[0].clone()),
            ("ce-id", Some(ce)) => Some(ce[1].clone()),
            ("ce-type", Some(ce)) => Some(ce[2].clone()),
            ("ce-source", Some(ce)) => Some(ce[3].clone()),
            _ => None,
        };
        if let PayrocVerdict::Record(event) = receiver.receive(&right, &body) {
            // Payroc's events are merchant-level: never a customer's stop.
            assert_ne!(event.outcome, EventOutcome::Stop);
            assert!(!event.event_id.is_empty());
        }
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
}

/// One random manifest over a key space of eight accounts (so that keys move
/// between files, come back after removal and collide), or a damaged one.
fn random_manifest(u: &mut Unstructured<'_>, yaml: bool) -> Result<String> {
    let mut rows = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let account = u.int_in_range(1..=8u8)?;
        let sub = *u.choose(&["", "", "S1"])?;
        let name = *u.choose(&["Ada", "Grace", "Alan"])?;
        // Now and then an address that is refused: a row error.
        let email = *u.choose(&["a@example.com", "b@example.com", "not-an-address"])?;
        let autopay = *u.choose(&["", "true", "false"])?;
        rows.push((account, sub, name, email, autopay));
    }
    if yaml {
        let mut text = String::from("customers:\n");
        for (account, sub, name, email, autopay) in rows {
            text.push_str(&format!(
                "  - accountNumber: \"{account}\"\n    subAccountNumber: \"{sub}\"\n    firstName: {name}\n    lastName: Lovelace\n    emailAddress: {email}\n"
            ));
            if !autopay.is_empty() {
                text.push_str(&format!("    autopay: {autopay}\n"));
            }
        }
        return Ok(text);
    }
    let mut text =
        String::from("accountNumber,subAccountNumber,firstName,lastName,emailAddress,autopay\n");
    for (account, sub, name, email, autopay) in rows {
        text.push_str(&format!(
            "{account},{sub},{name},Lovelace,{email},{autopay}\n"
        ));
    }
    if u.ratio(1, 10)? {
        text.push_str("9,,\"unbalanced,Lovelace,c@example.com,\n"); // a file error
    }
    Ok(text)
}

#[test]
fn each_files_stored_rows_stay_exactly_its_desired_rows_through_any_edits() {
    use crate::support::Project;
    let stored = std::cell::Cell::new(0usize);
    arbtest::arbtest(|u| {
        let project = Project::new();
        for _ in 0..u.int_in_range(1..=6)? {
            for (name, yaml) in [("a.csv", false), ("b.csv", false), ("c.yaml", true)] {
                match u.int_in_range(0..=4)? {
                    0 if project.root().join("manifests").join(name).exists() => {
                        project.remove(name);
                    }
                    0 | 1 => {}
                    _ => {
                        project.file(name, random_manifest(u, yaml)?);
                    }
                }
            }
            // `commit` checks every file's stored rows against `desired`.
            project.commit();
            stored.set(stored.get() + project.store().check_held_rows().unwrap().stored);
        }
        Ok(())
    })
    .budget_ms(budget_ms());
    assert!(stored.get() > 0, "no file's rows were ever stored");
}
