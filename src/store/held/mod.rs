//! The rows a manifest file holds in the state, in one compact form: kept in
//! memory by a scan's merge, and stored per file (`held_rows`) by the scan
//! commit that changed them, so that the next scan of a changed file reads one
//! value instead of every row.
//!
//! Stored form (little-endian): the magic `PSH1`, then the row, unit and
//! text counts (`u32` each), the rows (16 bytes each: the fingerprint, the line
//! with the tombstone bit, the account's and the sub-account's length), the
//! account text, and the business units (each the first row it names, its
//! length and its bytes). [`HeldSize`] and [`HeldEncoder`] write it in one
//! buffer of its exact size, in two passes over the rows; [`HeldRows::decode`]
//! checks all of it, key order included, so that a damaged value is refused
//! (the rows are then read from `desired`) and never panics or misleads the merge.

use super::PrevRow;
use crate::customer::KeyRef;
use std::cmp::Ordering;

mod encode;
pub use encode::{HeldEncoder, HeldSize};

/// The rows one file holds, in key order: each business unit once with the
/// first row it names (a file's rows share one, usually), the accounts and
/// sub-accounts in one string, the rest in 16-byte entries kept as they are
/// stored, so that a stored value is read straight into place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldRows {
    /// Each business unit and the first row it names, in row (and key) order.
    units: Vec<(u32, String)>,
    text: String,
    /// [`ROW`] bytes a row, as stored: see [`HeldRow`].
    rows: Vec<u8>,
}

/// One entry, as [`HeldRows::rows`] stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldRow {
    fingerprint: u64,
    /// The line, [`NO_LINE`] for none, with [`REMOVED`] set for a tombstone.
    line: u32,
    /// The account's and the sub-account's length in `text` (each starts
    /// where the one before ended).
    lens: [u16; 2],
}

impl HeldRow {
    fn read(bytes: &[u8]) -> Self {
        let at = |i: usize, n: usize| &bytes[i..i + n];
        let u16_at = |i| u16::from_le_bytes(at(i, 2).try_into().expect("2 bytes"));
        HeldRow {
            fingerprint: u64::from_le_bytes(at(0, 8).try_into().expect("8 bytes")),
            line: u32::from_le_bytes(at(8, 4).try_into().expect("4 bytes")),
            lens: [u16_at(12), u16_at(14)],
        }
    }

    fn bytes(self) -> [u8; ROW] {
        let mut out = [0u8; ROW];
        out[..8].copy_from_slice(&self.fingerprint.to_le_bytes());
        out[8..12].copy_from_slice(&self.line.to_le_bytes());
        out[12..14].copy_from_slice(&self.lens[0].to_le_bytes());
        out[14..].copy_from_slice(&self.lens[1].to_le_bytes());
        out
    }

    fn len(self) -> usize {
        usize::from(self.lens[0]) + usize::from(self.lens[1])
    }

    /// The entry for `prev`, and whether it holds it: a line of 2^31 - 1 or
    /// more, or an account of 64 KiB or more, does not fit.
    fn of(prev: &PrevRow<'_>) -> (Self, bool) {
        let lens = [prev.key.account.len(), prev.key.sub_account.len()].map(u16::try_from);
        let fits = prev.line.is_none_or(|line| line < NO_LINE) && lens.iter().all(Result::is_ok);
        let line = prev.line.unwrap_or(NO_LINE).min(NO_LINE);
        let row = HeldRow {
            fingerprint: prev.fingerprint as u64,
            line: if prev.removed { line | REMOVED } else { line },
            lens: lens.map(|l| l.unwrap_or(0)),
        };
        (row, fits)
    }
}

/// The bit of [`HeldRow::line`] that marks a tombstone.
const REMOVED: u32 = 1 << 31;
/// A row without a line (a line this high does not fit: such rows are read
/// from the store row by row).
const NO_LINE: u32 = REMOVED - 1;
const MAGIC: &[u8; 4] = b"PSH1";
const HEADER: usize = 16;
const ROW: usize = 16;
/// The most rows (and bytes of account text, four times this) reserved ahead.
const MOST_RESERVED: usize = 1 << 24;

impl HeldRows {
    /// Room for about `expected` rows (capped, and a little over, for the
    /// tombstones and rows kept through an error that a row count leaves out):
    /// a wrong estimate costs at most room unused. The text is reserved by the
    /// first row's accounts.
    pub fn with_capacity(expected: usize) -> Self {
        let expected = expected.min(MOST_RESERVED);
        HeldRows {
            units: Vec::new(),
            text: String::new(),
            rows: Vec::with_capacity(expected.saturating_add(expected / 32) * ROW),
        }
    }

    /// Adds the next row, which must come after the last in key order; false
    /// if the compact form cannot hold it (4 GiB of rows or text, an account
    /// of 64 KiB, a line numbered 2^31 - 1 or more): such a file's rows are
    /// read from the store row by row.
    pub fn push(&mut self, prev: PrevRow<'_>) -> bool {
        let row_index = u32::try_from(self.len()).unwrap_or(u32::MAX);
        if self.units.last().map(|(_, unit)| unit.as_str()) != Some(prev.key.business_unit) {
            self.units
                .push((row_index, prev.key.business_unit.to_owned()));
        }
        if self.text.capacity() == 0 {
            // The first row's accounts stand for the rest.
            let each = prev.key.account.len() + prev.key.sub_account.len();
            let room = (self.rows.capacity() / ROW).saturating_mul(each + 1);
            self.text.reserve(room.min(MOST_RESERVED * 4));
        }
        self.text.push_str(prev.key.account);
        self.text.push_str(prev.key.sub_account);
        let (row, fits) = HeldRow::of(&prev);
        self.rows.extend_from_slice(&row.bytes());
        fits && row_index < u32::MAX && u32::try_from(self.text.len()).is_ok()
    }

    /// Gives back room reserved and not used.
    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.rows.len() / ROW
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn entries(&self) -> impl Iterator<Item = HeldRow> + '_ {
        self.rows.chunks_exact(ROW).map(HeldRow::read)
    }

    /// The rows, as the store would give them.
    pub fn iter(&self) -> impl Iterator<Item = PrevRow<'_>> {
        self.iter_from(0)
    }

    /// The rows from the `first`th on.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = PrevRow<'_>> {
        let mut start: usize = self.entries().take(first).map(HeldRow::len).sum();
        // The unit of row `first` is the last to start at or before it.
        let mut unit = self
            .units
            .partition_point(|(from, _)| *from as usize <= first)
            .saturating_sub(1);
        self.rows[first * ROW..]
            .chunks_exact(ROW)
            .enumerate()
            .map(move |(i, bytes)| {
                let row = HeldRow::read(bytes);
                if self
                    .units
                    .get(unit + 1)
                    .is_some_and(|(from, _)| *from as usize == first + i)
                {
                    unit += 1;
                }
                let account = start + usize::from(row.lens[0]);
                let end = account + usize::from(row.lens[1]);
                let key = KeyRef {
                    business_unit: &self.units[unit].1,
                    account: &self.text[start..account],
                    sub_account: &self.text[account..end],
                };
                start = end;
                let line = row.line & !REMOVED;
                PrevRow {
                    key,
                    fingerprint: row.fingerprint as i64,
                    line: (line != NO_LINE).then_some(line),
                    removed: row.line & REMOVED != 0,
                }
            })
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut size = HeldSize::default();
        self.iter().for_each(|prev| size.push(prev));
        let mut encoder = size.encoder().expect("rows held in memory fit");
        self.iter().for_each(|prev| encoder.push(prev));
        encoder.finish().expect("the same rows twice")
    }

    /// Reads a stored form back; `None` for anything [`encode`](Self::encode)
    /// could not have written: a short or long value, lengths past the text or
    /// inside a character, units out of place, keys out of order.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::read(bytes.len(), |buf, at| {
            buf.copy_from_slice(bytes.get(at..at + buf.len())?);
            Some(())
        })
    }

    /// Reads a stored form of `len` bytes through `read_at` (fill the buffer
    /// from the offset given), each part straight into place: the value is
    /// never held twice. `None` as for [`decode`](Self::decode), or where
    /// `read_at` fails.
    pub fn read(
        len: usize,
        mut read_at: impl FnMut(&mut [u8], usize) -> Option<()>,
    ) -> Option<Self> {
        let mut header = [0u8; HEADER];
        read_at(header.get_mut(..len.min(HEADER))?, 0)?;
        if len < HEADER || &header[..4] != MAGIC {
            return None;
        }
        let count = |i: usize| {
            u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
        };
        let (rows, units, text) = (count(1), count(2), count(3));
        let rows_end = HEADER.checked_add(rows.checked_mul(ROW)?)?;
        let text_end = rows_end.checked_add(text)?;
        if text_end > len {
            return None;
        }
        let mut part = |from: usize, to: usize| {
            let mut buf = vec![0u8; to - from];
            read_at(&mut buf, from).map(|()| buf)
        };
        let held = HeldRows {
            units: Self::read_units(&part(text_end, len)?, units, rows)?,
            text: String::from_utf8(part(rows_end, text_end)?).ok()?,
            rows: part(HEADER, rows_end)?,
        };
        held.in_order().then_some(held)
    }

    /// `count` business units, each the first row it names, a `u32` length
    /// and its bytes, filling `bytes` exactly: in strict order, the first
    /// naming row 0 and each a row of its own before `rows`.
    fn read_units(mut bytes: &[u8], count: usize, rows: usize) -> Option<Vec<(u32, String)>> {
        let mut units: Vec<(u32, String)> = Vec::with_capacity(count.min(bytes.len() / 8));
        for _ in 0..count {
            let (first, rest) = bytes.split_first_chunk::<4>()?;
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let (first, len) = (
                u32::from_le_bytes(*first),
                u32::from_le_bytes(*len) as usize,
            );
            let unit = std::str::from_utf8(rest.get(..len)?).ok()?;
            let in_place = match units.last() {
                Some((before, last)) => *before < first && last.as_str() < unit,
                None => first == 0,
            };
            if !in_place || first as usize >= rows {
                return None;
            }
            units.push((first, unit.to_owned()));
            bytes = &rest[len..];
        }
        (bytes.is_empty() && (rows == 0 || !units.is_empty())).then_some(units)
    }

    /// Whether every row's text falls on character boundaries, the rows take
    /// the whole text, and the keys come in strict order within each unit (the
    /// units themselves are): what the merge relies on.
    fn in_order(&self) -> bool {
        let text = self.text.as_bytes();
        let mut start = 0usize;
        let mut next_unit = self
            .units
            .iter()
            .map(|(first, _)| *first as usize)
            .peekable();
        let mut before: Option<(usize, usize, usize)> = None;
        for (i, row) in self.entries().enumerate() {
            if next_unit.next_if_eq(&i).is_some() {
                before = None; // a new unit: its keys come after every one before
            }
            let account = start + usize::from(row.lens[0]);
            let end = account + usize::from(row.lens[1]);
            let in_place = end <= text.len()
                && self.text.is_char_boundary(account)
                && self.text.is_char_boundary(end);
            if !in_place {
                return false;
            }
            if let Some((last_start, last_account, last_end)) = before {
                let order = (
                    &text[last_start..last_account],
                    &text[last_account..last_end],
                )
                    .cmp(&(&text[start..account], &text[account..end]));
                if order != Ordering::Less {
                    return false;
                }
            }
            before = Some((start, account, end));
            start = end;
        }
        start == text.len()
    }
}

/// A stored form read back, or `None` (logged: the rows are then read from
/// `desired`, and the next commit that changes the file stores them again).
/// Logs a stored value that no longer stands for its file's rows: `desired`
/// moved since it was written (by another writer), or the file's content did.
pub(super) fn stale(file_id: i64) -> Option<HeldRows> {
    tracing::warn!(
        file_id,
        "a manifest file's stored rows are stale (its rows or content changed since they were stored); reading them from the desired state and storing them again"
    );
    None
}

pub(super) fn decoded(file_id: i64, held: Option<HeldRows>, bytes: usize) -> Option<HeldRows> {
    if held.is_none() {
        tracing::warn!(
            file_id,
            bytes,
            "a manifest file's stored rows do not read back; reading them from the desired state instead"
        );
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in key order from arbitrary input: units, accounts and
    /// sub-accounts from small alphabets (so that keys share prefixes).
    fn arbitrary_rows(
        u: &mut arbtest::arbitrary::Unstructured<'_>,
    ) -> arbtest::arbitrary::Result<HeldRows> {
        let mut keys: Vec<(String, String, String, i64, Option<u32>, bool)> = Vec::new();
        for _ in 0..u.int_in_range(0..=40)? {
            let pick = |u: &mut arbtest::arbitrary::Unstructured<'_>, from: &[&str]| {
                u.choose(from).map(|s| (*s).to_owned())
            };
            keys.push((
                pick(u, &["", "w", "wé", "x"])?,
                pick(u, &["1", "12", "2", "é", "ü1"])?,
                pick(u, &["", "S1", "é"])?,
                u.arbitrary()?,
                if u.arbitrary()? {
                    Some(u.int_in_range(0..=NO_LINE - 1)?)
                } else {
                    None
                },
                u.arbitrary()?,
            ));
        }
        keys.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        keys.dedup_by(|a, b| (&a.0, &a.1, &a.2) == (&b.0, &b.1, &b.2));
        let mut held = HeldRows::default();
        for (unit, account, sub, fingerprint, line, removed) in &keys {
            let prev = PrevRow {
                key: KeyRef {
                    business_unit: unit,
                    account,
                    sub_account: sub,
                },
                fingerprint: *fingerprint,
                line: *line,
                removed: *removed,
            };
            assert!(held.push(prev));
        }
        Ok(held)
    }

    #[test]
    fn the_stored_form_reads_back_as_the_rows_it_was_written_from() {
        arbtest::arbtest(|u| {
            let held = arbitrary_rows(u)?;
            let back = HeldRows::decode(&held.encode()).expect("a written form reads back");
            assert_eq!(back, held);
            let rows = |h: &HeldRows| {
                h.iter()
                    .map(|p| (p.key.to_owned(), p.fingerprint, p.line, p.removed))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rows(&back), rows(&held));
            Ok(())
        })
        .budget_ms(1_000);
    }

    #[test]
    fn a_damaged_stored_form_is_refused_and_never_panics() {
        arbtest::arbtest(|u| {
            let held = arbitrary_rows(u)?;
            let mut bytes = held.encode();
            let damage = u.int_in_range(0..=2)?;
            if damage == 0 && !bytes.is_empty() {
                let at = u.choose_index(bytes.len())?;
                bytes[at] = u.arbitrary()?;
            } else if damage == 1 {
                bytes.truncate(u.choose_index(bytes.len() + 1)?);
            } else {
                bytes = u.arbitrary()?;
            }
            // Either refused, or a form that could have been written: in key
            // order (decode checked it) and the same when written again.
            if let Some(back) = HeldRows::decode(&bytes) {
                assert_eq!(back.encode(), bytes);
            }
            Ok(())
        })
        .budget_ms(1_000);
    }

    #[test]
    fn the_fuzz_seeds_are_stored_forms_that_read_back() {
        for seed in [
            &include_bytes!("../../../fuzz/seeds/held_rows/empty.bin")[..],
            &include_bytes!("../../../fuzz/seeds/held_rows/two_units_tombstone.bin")[..],
        ] {
            let held = HeldRows::decode(seed).expect("a seed reads back");
            assert_eq!(held.encode(), seed);
        }
    }

    #[test]
    fn what_the_compact_form_cannot_hold_is_said() {
        let row = |account: &str, line: Option<u32>| {
            let mut held = HeldRows::default();
            held.push(PrevRow {
                key: KeyRef {
                    business_unit: "w",
                    account,
                    sub_account: "",
                },
                fingerprint: 1,
                line,
                removed: false,
            })
        };
        assert!(row("1", Some(NO_LINE - 1)));
        assert!(row("1", None));
        assert!(!row("1", Some(NO_LINE)));
        assert!(!row("1", Some(u32::MAX)));
        assert!(!row(&"1".repeat(70_000), Some(1)));
    }

    #[test]
    fn an_encoder_given_other_rows_than_were_counted_gives_nothing() {
        arbtest::arbtest(|u| {
            let counted = arbitrary_rows(u)?;
            let written = arbitrary_rows(u)?;
            let mut size = HeldSize::default();
            counted.iter().for_each(|prev| size.push(prev));
            let mut encoder = size.encoder().expect("they fit");
            written.iter().for_each(|prev| encoder.push(prev));
            match encoder.finish() {
                Some(bytes) => assert_eq!(HeldRows::decode(&bytes), Some(written)),
                None => assert_ne!(counted, written),
            }
            Ok(())
        })
        .budget_ms(500);
    }

    #[test]
    fn rows_out_of_key_order_are_refused() {
        let row = |account: &'static str| PrevRow {
            key: KeyRef {
                business_unit: "w",
                account,
                sub_account: "",
            },
            fingerprint: 7,
            line: Some(2),
            removed: false,
        };
        let mut held = HeldRows::default();
        assert!(held.push(row("2")));
        assert!(held.push(row("1")));
        assert_eq!(HeldRows::decode(&held.encode()), None);
        let mut twice = HeldRows::default();
        assert!(twice.push(row("1")));
        assert!(twice.push(row("1")));
        assert_eq!(HeldRows::decode(&twice.encode()), None);
    }
}
