//! Crash safety: the daemon killed with SIGKILL at random moments,
//! while it delivers and while files change, loses nothing. Afterwards the
//! sandbox holds exactly what the manifests say and `plan` has nothing to send.

use crate::support::{Project, daemon_config};
use paystar_sync::sandbox::RunningSandbox;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const FILES: usize = 3;
const PER_FILE: usize = 60;
const KILLS: usize = 12;

/// What the manifests ask for one customer: name, email, autopay off.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    first: String,
    email: String,
    unenrolled: bool,
}

fn write_file(p: &Project, file: usize, wanted: &BTreeMap<String, Wanted>) {
    let mut out = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
    for (account, w) in wanted
        .iter()
        .filter(|(a, _)| a.starts_with(&format!("F{file}-")))
    {
        let autopay = if w.unenrolled { "false" } else { "" };
        out.push_str(&format!(
            "{account},{},Lovelace,{},{autopay}\n",
            w.first, w.email
        ));
    }
    // Write and rename, as an export tool does: the daemon never sees half a file.
    let tmp = p.root().join(format!("manifests/f{file}.csv.tmp"));
    std::fs::write(&tmp, out).unwrap();
    std::fs::rename(&tmp, p.root().join(format!("manifests/f{file}.csv"))).unwrap();
}

/// The sandbox's view: the last ManageCustomer per account, and who was unenrolled.
fn at_paystar(sandbox: &RunningSandbox) -> BTreeMap<String, Wanted> {
    let mut seen: BTreeMap<String, Wanted> = BTreeMap::new();
    for accepted in sandbox.sandbox.paystar.accepted() {
        let payload = accepted.payload_json();
        let account = payload["accountNumber"].as_str().unwrap().to_owned();
        let entry = seen.entry(account).or_insert_with(|| Wanted {
            first: String::new(),
            email: String::new(),
            unenrolled: false,
        });
        if accepted.event_type == "Accounts.UnenrollAutopay" {
            entry.unenrolled = true;
        } else {
            entry.first = payload["firstName"].as_str().unwrap().to_owned();
            entry.email = payload["emailAddress"].as_str().unwrap().to_owned();
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_while_delivering_and_editing_loses_nothing() {
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let sandbox = crate::support::start_sandbox().await;
    sandbox
        .sandbox
        .paystar
        .set_latency(Duration::from_millis(3));
    let config = daemon_config(&sandbox.paystar_endpoint(), "")
        .replace("  timeout: 2s\n", "  timeout: 2s\n  concurrency: 4\n");
    let p = Project::with_config(&config);
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    for file in 0..FILES {
        for i in 0..PER_FILE {
            wanted.insert(
                format!("F{file}-{i:03}"),
                Wanted {
                    first: "Ada".into(),
                    email: format!("ada{file}x{i}@example.com"),
                    unenrolled: false,
                },
            );
        }
        write_file(&p, file, &wanted);
    }
    let mut edits = 0;
    for round in 0..KILLS {
        let daemon = p.start_daemon().await;
        // An edit to one file: new emails and names, some autopay switched off
        // (never back on: Paystar's Events API cannot enrol anyone).
        let file = rng.usize(..FILES);
        for (account, w) in wanted
            .iter_mut()
            .filter(|(a, _)| a.starts_with(&format!("F{file}-")))
        {
            if rng.u8(..4) == 0 {
                edits += 1;
                w.first = format!("Ada{round}");
                w.email = format!("{}r{round}@example.com", account.to_lowercase());
                w.unenrolled |= rng.u8(..5) == 0;
            }
        }
        write_file(&p, file, &wanted);
        // Kill after a random number of further acknowledgements: mid-delivery,
        // mid-scan, or before the edit was even seen.
        let now = sandbox.sandbox.paystar.accepted().len();
        let more = rng.usize(0..40);
        if more > 0 {
            // Bounded: when less work is left than that, kill once it is done.
            sandbox
                .sandbox
                .paystar
                .wait_for(now + more, Duration::from_secs(2))
                .await;
        }
        daemon.signal("KILL");
        let mut daemon = daemon;
        assert_eq!(
            daemon.wait_exit(WAIT).await,
            Some(None),
            "seed {seed}: killed"
        );
    }
    // A last daemon delivers whatever is left; its queue drains to nothing.
    let daemon = p.start_daemon().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = daemon.metrics().await;
        let idle = metrics.contains("paystar_sync_queue{state=\"pending\"} 0\n")
            && metrics.contains("paystar_sync_queue{state=\"retrying\"} 0\n");
        if idle || tokio::time::Instant::now() > deadline {
            assert!(idle, "seed {seed}: the queue never drained\n{metrics}");
            break;
        }
        sandbox
            .sandbox
            .paystar
            .wait_for(
                sandbox.sandbox.paystar.accepted().len() + 1,
                Duration::from_millis(200),
            )
            .await;
    }
    daemon.stop().await;
    assert!(edits > 0);
    assert_eq!(
        at_paystar(&sandbox),
        wanted,
        "seed {seed}: Paystar's state differs from the manifests"
    );
    let plan = p.plan_json();
    assert_eq!(
        plan["changes"],
        serde_json::json!([]),
        "seed {seed}: {plan}"
    );
    assert_eq!(plan["errors"], serde_json::json!([]), "seed {seed}: {plan}");
    assert_eq!(
        sandbox.sandbox.paystar.same_customer_overlaps(),
        0,
        "seed {seed}: two requests for one customer overlapped"
    );
}
