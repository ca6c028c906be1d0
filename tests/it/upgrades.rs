//! Upgrades without harm (README "Upgrading"): a writer older than the
//! state's schema is refused by the database itself, a stored shortcut that
//! another writer made stale is never used, and every surface names the build.

use crate::support::{BASE_CONFIG, Project, TestState, off_runtime};
use paystar_sync::store::{LeaseLook, Renewal, Store};
use std::time::Duration;

/// The scenario of a rolling upgrade gone wrong: a newer instance led and
/// stored each file's held rows; an older one led next and moved customer 2
/// from a.csv to b.csv in `desired` without touching the stored values (it
/// did not know them); the newer one leads again and a.csv is edited.
#[test]
fn a_stored_value_an_older_writer_left_stale_is_ignored_and_no_one_is_unenrolled() {
    let config = BASE_CONFIG.replace(
        "  dir: manifests\n",
        "  dir: manifests\n  on_removal: unenroll\n",
    );
    let p = Project::with_config(&config);
    let header = "accountNumber,firstName,lastName,emailAddress,autopay\n";
    p.file(
        "a.csv",
        format!(
            "{header}1,Ada,Lovelace,ada@example.com,true\n2,Alan,Turing,alan@example.com,true\n"
        ),
    );
    p.file(
        "b.csv",
        format!("{header}3,Grace,Hopper,grace@example.com,true\n"),
    );
    p.commit_and_acknowledge();
    // What the older leader found in place, and left there.
    p.execute_sql("CREATE TABLE saved_held AS SELECT * FROM held_rows");
    p.file(
        "a.csv",
        format!("{header}1,Ada,Lovelace,ada@example.com,true\n"),
    );
    p.file(
        "b.csv",
        format!(
            "{header}3,Grace,Hopper,grace@example.com,true\n2,Alan,Turing,alan@example.com,true\n"
        ),
    );
    p.commit();
    p.execute_sql("DELETE FROM held_rows; INSERT INTO held_rows SELECT * FROM saved_held; DROP TABLE saved_held");
    let check = p.run(&["state", "check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check
            .stdout
            .contains("DIFFERS: a.csv: its stored held rows are stale"),
        "{check:?}"
    );
    // The newer instance leads again; a.csv is edited.
    p.file(
        "a.csv",
        format!("{header}1,Ada,Lovelace,ada.l@example.com,true\n"),
    );
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer update emailAddress original=a***@example.com"],
        "customer 2 is still in b.csv: nothing may unenroll it"
    );
    p.commit();
    let check = p.with_store(|s| s.check_held_rows().unwrap());
    assert!(check.differ.is_empty(), "{:?}", check.differ);
    // a.csv, read in this scan, has its value again; b.csv's stays stale, and
    // unused, until b.csv is read.
    assert_eq!(check.stored, 1);
}

/// The SQL an older binary ran to write a customer: it declares no schema.
const OLDER_WRITE: &str = "INSERT INTO desired (business_unit, account, sub_account, first_name, last_name, email,
     autopay, removed, file_id, line, fingerprint, updated_at)
   VALUES ('water-bill-pay', '9', '', 'Old', 'Writer', 'old@example.com', NULL, false, NULL, NULL, 0, 0)";

#[test]
fn a_writer_older_than_the_states_schema_is_refused_by_the_database() {
    let Some(state) = TestState::postgres() else {
        return; // said loudly by TestState::postgres
    };
    let TestState::Postgres { url, schema } = &state else {
        unreachable!()
    };
    let (url, schema) = (url.clone(), schema.clone());
    let p = Project::on(state, BASE_CONFIG);
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    p.commit();
    off_runtime(|| {
        let mut older = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        older
            .batch_execute(&format!("SET search_path TO {schema}"))
            .unwrap();
        for declared in ["", "SET paystar_sync.schema = '5';"] {
            let err = older
                .batch_execute(&format!("{declared} {OLDER_WRITE}"))
                .expect_err("an older writer is refused");
            let db = err.as_db_error().expect("the database's own refusal");
            assert_eq!(db.code().code(), "PSF02", "{db}");
            assert!(
                db.message()
                    .contains("upgraded to schema v6 by a newer paystar-sync")
                    && db.message().contains("upgrade this instance"),
                "{db}"
            );
        }
        // Today's sessions declare what they keep, and write.
        older
            .batch_execute(&format!("SET paystar_sync.schema = '6'; {OLDER_WRITE}; DELETE FROM desired WHERE account = '9'"))
            .unwrap();
    });
    assert_eq!(
        p.plan_lines(),
        ["water-bill-pay/1 ManageCustomer create firstName,lastName,emailAddress"]
    );
}

#[test]
fn an_instance_older_than_the_state_will_not_take_or_keep_the_lease() {
    let Some(state) = TestState::postgres() else {
        return;
    };
    let p = Project::on(state, BASE_CONFIG);
    p.commit();
    let config = p.load_config();
    off_runtime(|| {
        let mut store = Store::open(&config.state).unwrap();
        let long = Duration::from_secs(60);
        let LeaseLook::Acquired(lease) = store.lease_try_acquire("host-a", long).unwrap() else {
            panic!("the first look takes the lease");
        };
        assert_eq!(
            lease.version.as_deref(),
            Some(paystar_sync::build_info::short().as_str()),
            "the lease names the leader's build"
        );
        // A newer paystar-sync migrates the state past this build.
        p.execute_sql("INSERT INTO schema_version (version) VALUES (99)");
        assert_eq!(
            store.lease_renew(lease.epoch, long).unwrap(),
            Renewal::Upgraded(99)
        );
        assert!(
            !store.lease().unwrap().unwrap().live(),
            "and it is released"
        );
        assert_eq!(
            store.lease_try_acquire("host-a", long).unwrap(),
            LeaseLook::Upgraded(99)
        );
        assert!(LeaseLook::upgraded_message(99).starts_with(
            "the state was upgraded to v99 by a newer paystar-sync; upgrade this instance"
        ));
    });
}

#[test]
fn version_status_and_metrics_name_the_build_and_the_state_schema() {
    let p = Project::new();
    let run = p.run(&["--version"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (sqlite, postgres) = paystar_sync::build_info::schemas();
    assert_eq!(
        run.stdout.trim(),
        format!(
            "paystar-sync {} (commit {}; state schema: SQLite v{sqlite}, PostgreSQL v{postgres})",
            env!("CARGO_PKG_VERSION"),
            paystar_sync::build_info::COMMIT
        )
    );
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress\n1,Ada,Lovelace,ada@example.com\n",
    );
    p.commit();
    let run = p.run(&["status"]);
    assert!(
        run.stdout
            .contains(&format!("build: {}", paystar_sync::build_info::describe())),
        "{run:?}"
    );
    let rendered = paystar_sync::metrics::Metrics::new().render(&Default::default(), false);
    assert!(
        rendered.contains(&format!(
            "paystar_sync_build_info{{version=\"{}\",commit=\"{}\",sqlite_schema=\"{sqlite}\",postgres_schema=\"{postgres}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            paystar_sync::build_info::COMMIT
        )),
        "{rendered}"
    );
}
