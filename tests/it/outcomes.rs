//! Delivery outcomes recorded with what the claim saw of each key (the
//! worker's way), on this run's backend: the rules are the same on both.

use crate::support::{Project, now_ms};
use paystar_sync::customer::{CustomerKey, FieldsBuf};
use paystar_sync::store::{Claimed, KeyState, Outcome, OutcomeResult, Store};

fn key(account: &str) -> CustomerKey {
    CustomerKey {
        business_unit: "water-bill-pay".into(),
        account: account.into(),
        sub_account: String::new(),
    }
}

/// Customers 1–3 committed (so queued), and their states as a claim reads them.
fn three_claimed() -> (Project, Store, Vec<KeyState>) {
    let p = Project::new();
    p.file(
        "a.csv",
        "accountNumber,firstName,lastName,emailAddress,autopay\n\
         1,Ada,Lovelace,ada@example.com,\n\
         2,Grace,Hopper,grace@example.com,\n\
         3,Alan,Turing,alan@example.com,\n",
    );
    p.commit();
    let store = p.store();
    let states = read(&store, &["1", "2", "3"]);
    (p, store, states)
}

fn read(store: &Store, accounts: &[&str]) -> Vec<KeyState> {
    let keys: Vec<CustomerKey> = accounts.iter().map(|a| key(a)).collect();
    store
        .load_states(keys.iter().map(CustomerKey::as_ref))
        .unwrap()
        .into_iter()
        .map(|s| *s.expect("a committed key has a state"))
        .collect()
}

/// Paystar acknowledged a ManageCustomer of these fields for `account`.
fn acknowledged(account: &str, fields: [&str; 3], claimed: Claimed) -> Outcome {
    Outcome {
        key: key(account),
        acked_fields: Some(FieldsBuf {
            first_name: fields[0].into(),
            last_name: fields[1].into(),
            email: fields[2].into(),
        }),
        acked_unenroll: false,
        result: OutcomeResult::Done,
        history: Vec::new(),
        claimed: Some(claimed),
    }
}

/// What the delivery saw: the entry's version, done with once acknowledged.
fn saw(state: &KeyState, first_ack: bool) -> Claimed {
    Claimed {
        queue_version: state.queue.as_ref().unwrap().version,
        differs_after: false,
        first_ack,
    }
}

/// The customers of [`three_claimed`], in order.
const PEOPLE: [(&str, [&str; 3]); 3] = [
    ("1", ["Ada", "Lovelace", "ada@example.com"]),
    ("2", ["Grace", "Hopper", "grace@example.com"]),
    ("3", ["Alan", "Turing", "alan@example.com"]),
];

/// Records that Paystar acknowledged the first `claimed.len()` customers as
/// claimed, each with `first_ack` as the claim saw it.
fn record_delivered(store: &mut Store, claimed: &[KeyState], first_ack: bool) {
    let outcomes: Vec<Outcome> = PEOPLE
        .iter()
        .zip(claimed)
        .map(|((account, fields), state)| acknowledged(account, *fields, saw(state, first_ack)))
        .collect();
    store
        .record_outcomes(
            &outcomes,
            |_| panic!("a claimed outcome is not read again"),
            now_ms(),
        )
        .unwrap();
}

#[test]
fn a_delivered_key_leaves_the_queue_only_if_its_entry_is_the_one_the_delivery_claimed() {
    let (p, mut store, claimed) = three_claimed();
    // Meanwhile another writer queues 2 again (a provider stop), and a scan
    // drops 3 from the queue.
    p.execute_sql(
        "UPDATE queue SET version = version + 1 WHERE account = '2';
         DELETE FROM queue WHERE account = '3';",
    );
    record_delivered(&mut store, &claimed, false);
    let after = read(&store, &["1", "2", "3"]);
    let queued: Vec<bool> = after.iter().map(|s| s.queue.is_some()).collect();
    // 1 was the claimed entry: done. 2 was queued again: it stays. 3 was
    // dropped by a scan: it comes back, to be compared afresh.
    assert_eq!(queued, [false, true, true]);
    assert!(after.iter().all(|s| s.acked.is_some()));
}

#[test]
fn a_first_acknowledgement_whose_row_appeared_since_the_claim_is_merged_into_that_row() {
    let (p, mut store, claimed) = three_claimed();
    assert!(claimed.iter().all(|s| s.acked.is_none()));
    // Meanwhile an unenroll of 2 is acknowledged by another writer.
    p.execute_sql(
        "INSERT INTO acked (business_unit, account, sub_account, unenrolled, acked_at)
         VALUES ('water-bill-pay', '2', '', true, 1);",
    );
    record_delivered(&mut store, &claimed[..2], true);
    let after = read(&store, &["1", "2", "3"]);
    let acked = |i: usize| {
        after[i].acked.as_ref().map(|a| {
            (
                a.fields.as_ref().map(|f| f.first_name.as_str()),
                a.unenrolled,
            )
        })
    };
    // 1 is inserted; 2 keeps the unenroll and gains the fields; 3 was not sent.
    assert_eq!(acked(0), Some((Some("Ada"), false)));
    assert_eq!(acked(1), Some((Some("Grace"), true)));
    assert_eq!(acked(2), None);
    let queued: Vec<bool> = after.iter().map(|s| s.queue.is_some()).collect();
    assert_eq!(queued, [false, false, true]);
}
