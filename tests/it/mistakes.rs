//! The mistakes operators really make, each caught with a message that says
//! what to do (SPEC §7, §9): a second writer on one SQLite state, Ctrl-C in
//! `apply`, a wrong endpoint, a copied live database.

use crate::support::{Project, daemon_config};
use std::time::Duration;

const HEADER: &str = "accountNumber,firstName,lastName,emailAddress,autopay\n";

fn customers(n: usize) -> String {
    let mut text = HEADER.to_owned();
    for i in 0..n {
        text.push_str(&format!(
            "{:06},Ann,Lee,ann{i}@example.com,true\n",
            100_000 + i
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_and_an_apply_beside_a_daemon_are_refused_on_sqlite_and_reads_still_work() {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    if p.state().is_postgres() {
        // PostgreSQL's lease refuses them (tests/it/ha.rs).
        return;
    }
    p.file("a.csv", customers(3));
    let daemon = p.start_daemon().await;
    let second = p.run_async(&["run"]).await;
    assert_eq!(second.code, 1, "{second:?}");
    assert!(
        second
            .stderr
            .contains("is in use by `paystar-sync run` (pid ")
            && second.stderr.contains("would send the same changes"),
        "{}",
        second.stderr
    );
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(
        apply.stderr.contains("`paystar-sync run`"),
        "{}",
        apply.stderr
    );
    for writer in [&["approve"][..], &["retry", "--all"][..]] {
        let run = p.run_async(writer).await;
        assert_eq!(run.code, 1, "{writer:?}: {run:?}");
    }
    // Read-only commands take no lock.
    for reader in [&["status"][..], &["validate"][..], &["plan"][..]] {
        let run = p.run_async(reader).await;
        assert_eq!(run.code, 0, "{reader:?}: {run:?}");
    }
    daemon.stop().await;
    // The lock goes with its holder: apply runs now.
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 0, "{apply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_killed_daemon_never_blocks() {
    let sandbox = crate::support::start_sandbox().await;
    let p = Project::with_config(&daemon_config(&sandbox.paystar_endpoint(), ""));
    if p.state().is_postgres() {
        return;
    }
    p.file("a.csv", customers(2));
    let mut daemon = p.start_daemon().await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10)).await;
    let lock = paystar_sync::store::lock_path(&p.db_path());
    assert!(lock.exists(), "the lock file stays behind");
    let apply = p.run_async(&["apply"]).await;
    assert_eq!(apply.code, 0, "{apply:?}");
}
