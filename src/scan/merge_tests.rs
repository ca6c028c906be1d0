//! Tests of the merge of a changed file's rows with the rows it held.

use super::*;
use crate::manifest::RowValues;

fn row(account: &str) -> ManifestRow {
    let values = RowValues {
        business_unit: "w",
        account,
        sub_account: "",
        first_name: "A",
        last_name: "B",
        email: "a@example.com",
    };
    ManifestRow::new(values, None, 0, 1)
}

#[test]
fn a_file_merged_in_two_halves_touches_what_it_does_in_one() {
    let store = Store::in_memory().unwrap();
    let (mut split, mut touched_any) = (0, 0);
    arbtest::arbtest(|u| {
        let name = |n: u8| format!("{n:03}");
        // New rows: some accounts, some with other names.
        let mut rows = Vec::new();
        for n in 0..=60u8 {
            if u.ratio(2, 3)? {
                let first = if u.ratio(1, 5)? { "Z" } else { "A" };
                let values = RowValues {
                    business_unit: "w",
                    account: &name(n),
                    sub_account: "",
                    first_name: first,
                    last_name: "B",
                    email: "a@example.com",
                };
                rows.push(ManifestRow::new(values, None, 0, u.int_in_range(1..=3)?));
            }
        }
        let prefixes = crate::manifest::sort_rows(&mut rows);
        // Held rows: some accounts, as an unchanged row would hold them or not.
        let unchanged = row("000").fingerprint();
        let mut held = Vec::new();
        for n in 0..=60u8 {
            if u.ratio(2, 3)? {
                let fingerprint = if u.ratio(3, 4)? { unchanged } else { 7 };
                let line = Some(u.int_in_range(1..=3)?).filter(|_| u.ratio(7, 8).unwrap_or(true));
                held.push((name(n), fingerprint, line, u.ratio(1, 8)?));
            }
        }
        let mut held_rows = HeldRows::default();
        for (account, fingerprint, line, removed) in &held {
            assert!(held_rows.push(PrevRow {
                key: crate::customer::KeyRef {
                    business_unit: "w",
                    account,
                    sub_account: "",
                },
                fingerprint: *fingerprint,
                line: *line,
                removed: *removed,
            }));
        }
        let mut kept = HashSet::new();
        if u.ratio(1, 4)? {
            kept.insert(CustomerKey::new("w", &name(u.int_in_range(0..=60)?), ""));
        }
        let error = u.ratio(1, 8)?;
        let files = [ScannedFile::parsed_for_test(1, error)];
        let previous = HashMap::from([(1, held_rows)]);
        let merged = |split_from| {
            let m = merge(
                &store,
                &files,
                &rows,
                prefixes.as_ref(),
                &kept,
                &mut previous.clone(),
                split_from,
            )
            .unwrap();
            let keys: Vec<String> = m
                .touched
                .iter()
                .map(|t| key_of(t, &rows).to_string())
                .collect();
            (keys, m.relocated)
        };
        let one = merged(usize::MAX);
        assert_eq!(merged(1), one);
        // The same file beside another one whose keys come after it: its rows
        // are then listed, not taken as all the rows, and it touches the same.
        let mut both = rows.clone();
        for n in 0..u.int_in_range(1..=5u8)? {
            let values = RowValues {
                business_unit: "w",
                account: &format!("5{n:02}"),
                sub_account: "",
                first_name: "A",
                last_name: "B",
                email: "a@example.com",
            };
            both.push(ManifestRow::new(values, None, 1, 1));
        }
        let both_prefixes = crate::manifest::sort_rows(&mut both);
        let both_files = [
            ScannedFile::parsed_for_test(1, error),
            ScannedFile::parsed_for_test(2, false),
        ];
        let listed = merge(
            &store,
            &both_files,
            &both,
            both_prefixes.as_ref(),
            &kept,
            &mut previous.clone(),
            usize::MAX,
        )
        .unwrap();
        let first_file: Vec<String> = listed
            .touched
            .iter()
            .map(|t| key_of(t, &both).to_string())
            .filter(|k| !k.contains("/5"))
            .collect();
        assert_eq!(first_file, one.0);
        let moved = |r: &[u32], rows: &[ManifestRow]| -> Vec<String> {
            r.iter()
                .map(|&i| rows[i as usize].key().to_string())
                .collect()
        };
        assert_eq!(moved(&listed.relocated, &both), moved(&one.1, &rows));
        split += 1;
        touched_any += usize::from(!one.0.is_empty());
        Ok(())
    })
    .budget_ms(300);
    assert!(
        split > 20 && touched_any > 10,
        "{split} merges, {touched_any} touching"
    );
}

#[test]
fn touched_keys_of_several_files_are_put_in_key_order_by_rank() {
    arbtest::arbtest(|u| {
        let mut accounts: Vec<String> = (0..u.int_in_range(0..=40)?)
            .map(|_| Ok(format!("{}", u.int_in_range(0..=99u8)?)))
            .collect::<arbtest::arbitrary::Result<_>>()?;
        accounts.sort();
        accounts.dedup();
        let rows: Vec<ManifestRow> = accounts.iter().map(|a| row(a)).collect();
        let mut touched = Vec::new();
        for file in 0..u.int_in_range(1..=3)? {
            // Each file's keys come in key order, as the merge makes them.
            let mut keys: Vec<TouchedKey> = Vec::new();
            for (i, _) in rows.iter().enumerate() {
                if u.ratio(1, 3)? {
                    keys.push(TouchedKey::Row(i as u32));
                }
            }
            for _ in 0..u.int_in_range(0..=3)? {
                let account = format!("{}x", u.int_in_range(0..=99u8)?);
                keys.push(TouchedKey::Gone(
                    Box::new(CustomerKey {
                        business_unit: "w".into(),
                        account,
                        sub_account: String::new(),
                    }),
                    file,
                ));
            }
            keys.sort_by(|a, b| key_of(a, &rows).cmp(&key_of(b, &rows)));
            touched.extend(keys);
        }
        let keys = |t: &[TouchedKey]| -> Vec<CustomerKey> {
            t.iter().map(|t| key_of(t, &rows).to_owned()).collect()
        };
        let mut expected = keys(&touched);
        expected.sort_by(|a, b| a.as_ref().cmp(&b.as_ref()));
        sort_touched(&mut touched, &rows);
        assert_eq!(keys(&touched), expected);
        Ok(())
    })
    .budget_ms(300);
}
