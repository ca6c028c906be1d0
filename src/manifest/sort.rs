//! Sorting a scan's rows by customer key (then file, then line) without chasing
//! each row's text on every comparison: rows are ordered by an 8-byte prefix of
//! their key first, and only rows whose prefixes tie compare their keys in full.

use super::row::ManifestRow;
use std::cmp::Ordering;

impl ManifestRow {
    /// Byte `p` of the key written as `business unit NUL account NUL sub-account`
    /// (`None` past its end). With no NUL inside a value, this byte string sorts
    /// exactly as the key does, column by column.
    fn key_byte(&self, p: usize) -> Option<u8> {
        let (ends, text) = (self.key_ends(), self.key_text().as_bytes());
        let (bu, account, sub) = (ends[0], ends[1] + 1, ends[2] + 2);
        match p {
            _ if p < bu => Some(text[p]),
            _ if p == bu => Some(0),
            _ if p < account => Some(text[p - 1]),
            _ if p == account => Some(0),
            _ if p < sub => Some(text[p - 2]),
            _ => None,
        }
    }

    /// The eight key bytes after the first `skip` (zero past the end), big-endian:
    /// a row whose key sorts before another's never has a larger prefix.
    fn key_prefix(&self, skip: usize) -> u64 {
        (0..8).fold(0u64, |acc, k| {
            (acc << 8) | u64::from(self.key_byte(skip + k).unwrap_or(0))
        })
    }
}

/// The order a scan works in: key, then file, then line.
fn full_order(a: &ManifestRow, b: &ManifestRow) -> Ordering {
    a.key()
        .cmp(&b.key())
        .then(a.file.cmp(&b.file))
        .then(a.line.cmp(&b.line))
}

/// How many leading key bytes every row shares (all of them share a business
/// unit, usually), so that the prefix holds the bytes that tell keys apart.
fn shared_key_bytes(rows: &[ManifestRow]) -> usize {
    let Some(first) = rows.first() else {
        return 0;
    };
    let mut shared = usize::MAX;
    for row in rows {
        let mut p = 0;
        while p < shared {
            match (first.key_byte(p), row.key_byte(p)) {
                (Some(a), Some(b)) if a == b => p += 1,
                _ => break,
            }
        }
        shared = p;
        if shared == 0 {
            break;
        }
    }
    shared
}

/// Sorts `rows` by key, then file, then line (as `sort_unstable_by` with
/// [`full_order`] would), moving each row once.
pub fn sort_rows(rows: &mut [ManifestRow]) {
    let has_nul = |r: &ManifestRow| r.key_text().as_bytes().contains(&0);
    if rows.len() < 2 || u32::try_from(rows.len()).is_err() || rows.iter().any(has_nul) {
        rows.sort_unstable_by(full_order);
        return;
    }
    let skip = shared_key_bytes(rows);
    let mut order: Vec<(u64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key_prefix(skip), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| full_order(&rows[a.1 as usize], &rows[b.1 as usize]))
    });
    permute(rows, order.into_iter().map(|(_, i)| i).collect());
}

/// Reorders `items` so that position `i` holds what was at `source[i]` (a
/// permutation of the indices), moving each item once by following its cycle.
pub fn permute<T>(items: &mut [T], mut source: Vec<u32>) {
    const PLACED: u32 = u32::MAX;
    assert_eq!(items.len(), source.len(), "one source index per item");
    for start in 0..source.len() {
        if source[start] == PLACED {
            continue;
        }
        let mut at = start;
        loop {
            let from = source[at] as usize;
            source[at] = PLACED;
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::row::RowValues;

    fn row(bu: &str, account: &str, sub: &str, file: u32, line: u32) -> ManifestRow {
        ManifestRow::new(
            RowValues {
                business_unit: bu,
                account,
                sub_account: sub,
                first_name: "A",
                last_name: "B",
                email: "a@example.com",
            },
            None,
            file,
            line,
        )
    }

    #[test]
    fn rows_sort_exactly_as_their_keys_files_and_lines_compare() {
        let parts = [
            "",
            "a",
            "ab",
            "abc",
            "b",
            "water-bill-pay",
            "water-bill",
            "0",
            "00",
            "1",
            "é",
            "z",
        ];
        arbtest::arbtest(|u| {
            let n = u.int_in_range(0..=60)?;
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                let bu = parts[u.choose_index(parts.len())?];
                let account = format!(
                    "{}{}",
                    parts[u.choose_index(parts.len())?],
                    parts[u.choose_index(parts.len())?]
                );
                let sub = parts[u.choose_index(parts.len())?];
                rows.push(row(
                    bu,
                    &account,
                    sub,
                    u.int_in_range(0..=2)?,
                    u.int_in_range(1..=3)?,
                ));
            }
            let mut expected = rows.clone();
            expected.sort_by(full_order);
            sort_rows(&mut rows);
            assert_eq!(rows, expected);
            Ok(())
        })
        .budget_ms(300);
    }

    #[test]
    fn rows_that_share_a_long_key_prefix_still_sort_by_what_follows_it() {
        let mut rows: Vec<ManifestRow> = (0..500u32)
            .rev()
            .map(|i| row("water-bill-pay", &format!("0000000000{i:05}"), "", 0, i))
            .collect();
        rows.push(row("water-bill-pay", "0000000000", "", 1, 1));
        rows.push(row("water-bill-pay", "0000000000", "s", 1, 2));
        let mut expected = rows.clone();
        expected.sort_by(full_order);
        sort_rows(&mut rows);
        assert_eq!(rows, expected);
    }
}
