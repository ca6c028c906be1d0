//! Sorting a scan's rows by customer key (then file, then line) without chasing
//! each row's text on every comparison: rows are ordered by a 16-byte prefix of
//! their key first, and only rows whose prefixes tie compare their keys in full.

use super::row::ManifestRow;
use crate::customer::KeyRef;
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

    fn key_prefix(&self, skip: usize) -> u128 {
        key_prefix(self.key(), skip)
    }
}

/// The sixteen bytes of `key`'s byte string (see [`ManifestRow::key_byte`]) after
/// the first `skip` (zero past the end), big-endian: a key that sorts before
/// another never has a larger prefix. Each piece is copied in one go.
fn key_prefix(key: KeyRef<'_>, skip: usize) -> u128 {
    let mut bytes = [0u8; PREFIX];
    let mut at = 0; // position in the byte string
    for (piece, nul) in [
        (key.business_unit, true),
        (key.account, true),
        (key.sub_account, false),
    ] {
        let piece = piece.as_bytes();
        let from = skip.saturating_sub(at).min(piece.len());
        let to = (skip + PREFIX).saturating_sub(at).min(piece.len());
        if from < to {
            bytes[at + from - skip..at + to - skip].copy_from_slice(&piece[from..to]);
        }
        // A NUL separator is zero, as the unwritten bytes are already.
        at += piece.len() + usize::from(nul);
    }
    u128::from_be_bytes(bytes)
}

/// How many key bytes a prefix holds: an account number and a short
/// sub-account, after the business unit every row shares.
const PREFIX: usize = 16;

/// The order a scan works in: key, then file, then line.
fn full_order(a: &ManifestRow, b: &ManifestRow) -> Ordering {
    a.key()
        .cmp(&b.key())
        .then(a.file.cmp(&b.file))
        .then(a.line.cmp(&b.line))
}

/// How many leading key bytes every row shares (all of them share a business
/// unit, usually), so that the prefix holds the bytes that tell keys apart;
/// `None` if a key holds a NUL byte (its byte string would not sort as the key
/// does). One pass, each row's text read once.
fn shared_key_bytes(rows: &[ManifestRow]) -> Option<usize> {
    let Some(first) = rows.first() else {
        return Some(0);
    };
    let first = first.key();
    let mut shared = usize::MAX;
    for row in rows {
        if row.key_text().as_bytes().contains(&0) {
            return None;
        }
        shared = shared.min(common_key_bytes(first, row.key()));
    }
    Some(shared)
}

/// How many leading bytes the byte strings of two keys (see
/// [`ManifestRow::key_byte`]) have in common, a piece at a time.
fn common_key_bytes(a: KeyRef<'_>, b: KeyRef<'_>) -> usize {
    let pieces = [
        (a.business_unit, b.business_unit),
        (a.account, b.account),
        (a.sub_account, b.sub_account),
    ];
    let mut at = 0;
    for (n, (x, y)) in pieces.into_iter().enumerate() {
        let same = x.bytes().zip(y.bytes()).take_while(|(p, q)| p == q).count();
        at += same;
        if same < x.len() || same < y.len() || n == 2 {
            return at;
        }
        at += 1; // both pieces end here: the NUL after them is shared too
    }
    at
}

/// A row's place in the sort: its key prefix and index, packed into 20 bytes
/// (a `(u128, u32)` pair takes 32): less to move, and less memory at the peak.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct SortEntry {
    prefix: u128,
    row: u32,
}

/// Sorts `rows` by key, then file, then line (as `sort_unstable_by` with
/// [`full_order`] would), moving each row once. Returns each sorted row's key
/// prefix, so that later passes in key order can compare keys without reading
/// the rows' text; `None` where the sort compared whole keys (fewer than two
/// rows, or a key with a NUL byte).
pub fn sort_rows(rows: &mut [ManifestRow]) -> Option<KeyPrefixes> {
    sort_rows_split(rows, rows.len() >= crate::halves::split_from())
}

/// [`sort_rows`], taking the rows' halves on two threads if `split`.
fn sort_rows_split(rows: &mut [ManifestRow], split: bool) -> Option<KeyPrefixes> {
    let split = split && rows.len() >= 2;
    let mid = rows.len() / 2;
    let skip = if split {
        // The bytes all rows share: those each half shares, up to where the
        // halves' first rows part.
        match crate::halves::in_parallel(
            || shared_key_bytes(&rows[..mid]),
            || shared_key_bytes(&rows[mid..]),
        ) {
            (Some(a), Some(b)) => Some(
                a.min(b)
                    .min(common_key_bytes(rows[0].key(), rows[mid].key())),
            ),
            _ => None,
        }
    } else {
        shared_key_bytes(rows)
    };
    let skip = match skip {
        Some(skip) if rows.len() >= 2 && u32::try_from(rows.len()).is_ok() => skip,
        _ => {
            rows.sort_unstable_by(full_order);
            return None;
        }
    };
    let shared: Box<[u8]> = (0..skip)
        .map(|p| {
            rows[0]
                .key_byte(p)
                .expect("shared bytes are within every key")
        })
        .collect();
    let in_order = |a: &SortEntry, b: &SortEntry| {
        let (a, b) = (*a, *b);
        { a.prefix }
            .cmp(&{ b.prefix })
            .then_with(|| full_order(&rows[a.row as usize], &rows[b.row as usize]))
    };
    // Entries for the rows from `first` on, sorted. All of them are allocated
    // here, so a helper thread leaves no memory behind in an arena of its own.
    let sorted = |entries: &mut [SortEntry], first: u32| {
        for ((entry, r), row) in entries.iter_mut().zip(&rows[first as usize..]).zip(first..) {
            *entry = SortEntry {
                prefix: r.key_prefix(skip),
                row,
            };
        }
        entries.sort_unstable_by(in_order);
    };
    let mut order = vec![SortEntry { prefix: 0, row: 0 }; rows.len()];
    if split {
        let (a, b) = order.split_at_mut(mid);
        crate::halves::in_parallel(|| sorted(a, 0), || sorted(b, mid as u32));
        merge_halves(&mut order, mid, in_order);
    } else {
        sorted(&mut order, 0);
    }
    permute_in(rows, &mut order);
    Some(KeyPrefixes {
        shared,
        entries: order,
    })
}

/// Merges the sorted runs `entries[..mid]` and `entries[mid..]` into one, in
/// place but for a copy of the first run: the next entry written is never an
/// unread one of the second run, which is read from where it lies.
fn merge_halves(
    entries: &mut [SortEntry],
    mid: usize,
    order: impl Fn(&SortEntry, &SortEntry) -> Ordering,
) {
    let first = entries[..mid].to_vec();
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < first.len() {
        if j < entries.len() && order(&entries[j], &first[i]) == Ordering::Less {
            entries[k] = entries[j];
            j += 1;
        } else {
            entries[k] = first[i];
            i += 1;
        }
        k += 1;
    }
    // What is left of the second run is already in its place.
}

/// The sorted rows' keys as 16-byte prefixes after the bytes they all share (see
/// [`ManifestRow::key_byte`] for the byte string). Comparing two prefixes orders
/// two keys unless the prefixes are equal; equal prefixes of keys that both end
/// within them are equal keys (a key holds exactly two NULs, so neither can be
/// the other with bytes added).
pub struct KeyPrefixes {
    /// The leading bytes every sorted row's key has.
    shared: Box<[u8]>,
    /// Per sorted row, its prefix (the entries' row indices were spent by the
    /// permutation): the sort's own array, so that no second one exists at the peak.
    entries: Vec<SortEntry>,
}

/// A key, written as the sorted rows' prefixes are: `None` if it does not start
/// with their shared bytes (compare it in full).
#[derive(Clone, Copy)]
pub struct KeyProbe {
    prefix: u128,
    /// Whether the key ends within its prefix.
    whole: bool,
}

impl KeyPrefixes {
    /// Keeps the prefixes of the rows `keep` says yes to, as `Vec::retain` does.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            keep(i - 1)
        });
    }

    /// Row `i`'s key (row `i` of the sorted rows, as `row`).
    pub fn of_row(&self, i: usize, row: &ManifestRow) -> KeyProbe {
        KeyProbe {
            prefix: self.entries[i].prefix,
            whole: row.key_ends()[2] + 2 <= self.shared.len() + PREFIX,
        }
    }

    /// `key` written as the rows' prefixes are, if it starts with their shared bytes.
    pub fn probe(&self, key: KeyRef<'_>) -> Option<KeyProbe> {
        if !starts_with_bytes(key, &self.shared) {
            return None;
        }
        let len = key.business_unit.len() + key.account.len() + key.sub_account.len() + 2;
        Some(KeyProbe {
            prefix: key_prefix(key, self.shared.len()),
            whole: len <= self.shared.len() + PREFIX,
        })
    }
}

/// Whether `key`'s byte string (see [`ManifestRow::key_byte`]) starts with
/// `bytes`, compared a piece at a time.
fn starts_with_bytes(key: KeyRef<'_>, mut bytes: &[u8]) -> bool {
    for (n, piece) in [key.business_unit, key.account, key.sub_account]
        .into_iter()
        .enumerate()
    {
        let piece = piece.as_bytes();
        if bytes.len() <= piece.len() {
            return piece.starts_with(bytes);
        }
        if !bytes.starts_with(piece) || n == 2 || bytes[piece.len()] != 0 {
            return false;
        }
        bytes = &bytes[piece.len() + 1..];
    }
    unreachable!("the last piece returns")
}

impl KeyProbe {
    /// How the two keys compare, if their prefixes tell (else `None`).
    pub fn compare(self, other: KeyProbe) -> Option<Ordering> {
        match self.prefix.cmp(&other.prefix) {
            Ordering::Equal if self.whole && other.whole => Some(Ordering::Equal),
            Ordering::Equal => None,
            unequal => Some(unequal),
        }
    }
}

/// Reorders `items` so that position `i` holds what was at `source[i]` (a
/// permutation of the indices), moving each item once by following its cycle.
pub fn permute<T>(items: &mut [T], mut source: Vec<u32>) {
    permute_in(items, &mut source);
}

/// Where an item of a permutation comes from; overwritten once it is placed.
trait Source: Copy {
    fn index(self) -> u32;
    fn set_index(&mut self, index: u32);
}

impl Source for u32 {
    fn index(self) -> u32 {
        self
    }
    fn set_index(&mut self, index: u32) {
        *self = index;
    }
}

impl Source for SortEntry {
    fn index(self) -> u32 {
        self.row
    }
    fn set_index(&mut self, index: u32) {
        self.row = index;
    }
}

/// [`permute`], spending the indices held in `source`.
fn permute_in<T, S: Source>(items: &mut [T], source: &mut [S]) {
    const PLACED: u32 = u32::MAX;
    assert_eq!(items.len(), source.len(), "one source index per item");
    for start in 0..source.len() {
        if source[start].index() == PLACED {
            continue;
        }
        let mut at = start;
        loop {
            let from = source[at].index() as usize;
            source[at].set_index(PLACED);
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
    fn keys_share_as_many_leading_bytes_as_their_byte_strings_do() {
        let parts = ["", "a", "ab", "b", "water", "water-bill", "0", "01"];
        arbtest::arbtest(|u| {
            let mut pick =
                || -> arbtest::arbitrary::Result<&str> { Ok(parts[u.choose_index(parts.len())?]) };
            let a = row(pick()?, pick()?, pick()?, 0, 1);
            let b = row(pick()?, pick()?, pick()?, 0, 1);
            let mut p = 0;
            while matches!((a.key_byte(p), b.key_byte(p)), (Some(x), Some(y)) if x == y) {
                p += 1;
            }
            assert_eq!(
                common_key_bytes(a.key(), b.key()),
                p,
                "{:?} {:?}",
                a.key(),
                b.key()
            );
            Ok(())
        })
        .budget_ms(100);
    }

    #[test]
    fn a_key_starts_with_the_bytes_its_byte_string_starts_with() {
        let parts = ["", "a", "ab", "b", "water", "0", "01"];
        arbtest::arbtest(|u| {
            let mut pick =
                || -> arbtest::arbitrary::Result<&str> { Ok(parts[u.choose_index(parts.len())?]) };
            let a = row(pick()?, pick()?, pick()?, 0, 1);
            let string: Vec<u8> = (0..).map_while(|p| a.key_byte(p)).collect();
            let other: Vec<u8> = u
                .arbitrary::<Vec<bool>>()?
                .iter()
                .map(|b| if *b { 0 } else { b'a' })
                .collect();
            for bytes in [&string[..u.int_in_range(0..=string.len())?], &other[..]] {
                assert_eq!(
                    starts_with_bytes(a.key(), bytes),
                    string.starts_with(bytes),
                    "{:?} {bytes:?}",
                    a.key()
                );
            }
            Ok(())
        })
        .budget_ms(100);
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
            let mut split = rows.clone();
            let prefixes = sort_rows_split(&mut rows, false);
            assert_eq!(rows, expected);
            // Taking the halves on two threads changes nothing.
            let split_prefixes = sort_rows_split(&mut split, true);
            assert_eq!(split, expected);
            let parts = |p: Option<KeyPrefixes>| {
                p.map(|p| {
                    (
                        p.shared,
                        p.entries.iter().map(|e| e.prefix).collect::<Vec<_>>(),
                    )
                })
            };
            assert_eq!(parts(split_prefixes), parts(prefixes));
            Ok(())
        })
        .budget_ms(300);
    }

    #[test]
    fn a_prefix_comparison_that_answers_agrees_with_comparing_whole_keys() {
        let parts = [
            "",
            "a",
            "ab",
            "water-bill-pay",
            "0",
            "0000000",
            "12345678",
            "é",
            "z",
        ];
        let mut told = 0;
        arbtest::arbtest(|u| {
            let pick = |u: &mut arbtest::arbitrary::Unstructured<'_>| -> arbtest::arbitrary::Result<String> {
                let n = u.int_in_range(0..=3)?;
                let mut s = String::new();
                for _ in 0..n {
                    s.push_str(parts[u.choose_index(parts.len())?]);
                }
                Ok(s)
            };
            let n = u.int_in_range(2..=30)?;
            let mut rows = Vec::with_capacity(n);
            let bu = if u.arbitrary()? { "water-bill-pay".to_owned() } else { pick(u)? };
            for _ in 0..n {
                let bu = if u.ratio(1, 8)? { pick(u)? } else { bu.clone() };
                rows.push(row(&bu, &pick(u)?, &pick(u)?, 0, 1));
            }
            let Some(prefixes) = sort_rows(&mut rows) else {
                return Ok(());
            };
            let probes: Vec<(String, String, String)> = (0..8)
                .map(|_| Ok((pick(u)?, pick(u)?, pick(u)?)))
                .collect::<arbtest::arbitrary::Result<_>>()?;
            for (i, a) in rows.iter().enumerate() {
                let mut keys: Vec<KeyRef<'_>> = rows.iter().map(|r| r.key()).collect();
                keys.extend(probes.iter().map(|(b, c, d)| KeyRef {
                    business_unit: b,
                    account: c,
                    sub_account: d,
                }));
                for key in keys {
                    let Some(probe) = prefixes.probe(key) else {
                        continue;
                    };
                    if let Some(order) = prefixes.of_row(i, a).compare(probe) {
                        told += 1;
                        assert_eq!(order, a.key().cmp(&key), "{} against {key}", a.key());
                    }
                }
                // A row's own key always probes (it shares the rows' bytes) and equals itself
                // whenever the prefix tells.
                let own = prefixes.probe(a.key()).expect("a row's key shares the rows' bytes");
                assert!(matches!(
                    prefixes.of_row(i, a).compare(own),
                    None | Some(Ordering::Equal)
                ));
            }
            Ok(())
        })
        .budget_ms(300);
        assert!(told > 100, "the prefixes decided only {told} comparisons");
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
