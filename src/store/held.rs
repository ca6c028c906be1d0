//! The rows a manifest file holds in the state, in one compact form: kept in
//! memory by a scan's merge, and stored per file (`held_rows`) by the scan
//! commit that changed them, so that the next scan of a changed file reads one
//! value instead of every row.
//!
//! Stored form (little-endian): the magic `PSH1`, then the row, unit and
//! text counts (`u32` each), the rows (24 bytes each: unit, the two text ends,
//! the fingerprint's halves, the line), the business units (a `u32` length and
//! the bytes each), and the account text. [`HeldRows::decode`] checks all of
//! it, key order included, so that a damaged value is refused (the rows are then
//! read from `desired`) and never panics or misleads the merge.

use super::PrevRow;
use crate::customer::KeyRef;
use std::cmp::Ordering;

/// The rows one file holds, in key order: each business unit once (a file's
/// rows share one, usually), the accounts and sub-accounts in one string, the
/// rest in 24-byte entries kept as they are stored, so that a stored value is
/// read straight into place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldRows {
    units: Vec<String>,
    text: String,
    /// [`ROW`] bytes a row, as stored: see [`HeldRow`].
    rows: Vec<u8>,
}

/// One entry, as [`HeldRows::rows`] stores it (six little-endian `u32`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldRow {
    /// Index into `units`, with [`REMOVED`] set for a tombstone.
    unit: u32,
    /// Where the account and the sub-account end in `text` (each starts where
    /// the row before ended).
    ends: [u32; 2],
    /// The fingerprint's two halves.
    fingerprint: [u32; 2],
    /// `NO_LINE` for none.
    line: u32,
}

impl HeldRow {
    fn read(bytes: &[u8]) -> Self {
        let field = |i: usize| {
            u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("a row's field"))
        };
        HeldRow {
            unit: field(0),
            ends: [field(1), field(2)],
            fingerprint: [field(3), field(4)],
            line: field(5),
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        let fields = [
            self.unit,
            self.ends[0],
            self.ends[1],
            self.fingerprint[0],
            self.fingerprint[1],
            self.line,
        ];
        for field in fields {
            out.extend_from_slice(&field.to_le_bytes());
        }
    }
}

const NO_LINE: u32 = u32::MAX;
/// The bit of [`HeldRow::unit`] that marks a tombstone (24-byte entries, not 28).
const REMOVED: u32 = 1 << 31;
const MAGIC: &[u8; 4] = b"PSH1";
const HEADER: usize = 16;
const ROW: usize = 24;
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
    /// if the compact form cannot hold it (over 4 GiB of account text, 2^31
    /// business units, or a line numbered `u32::MAX`): such a file's rows are
    /// read from the store row by row.
    pub fn push(&mut self, prev: PrevRow<'_>) -> bool {
        if self.units.last().map(String::as_str) != Some(prev.key.business_unit) {
            self.units.push(prev.key.business_unit.to_owned());
        }
        if self.text.capacity() == 0 {
            // The first row's accounts stand for the rest.
            let each = prev.key.account.len() + prev.key.sub_account.len();
            let room = (self.rows.capacity() / ROW).saturating_mul(each + 1);
            self.text.reserve(room.min(MOST_RESERVED * 4));
        }
        let unit = (self.units.len() - 1) as u32;
        let mut fits = prev.line != Some(NO_LINE) && unit < REMOVED;
        let mut end = |part: &str| {
            self.text.push_str(part);
            u32::try_from(self.text.len()).unwrap_or_else(|_| {
                fits = false;
                0
            })
        };
        let ends = [end(prev.key.account), end(prev.key.sub_account)];
        let fingerprint = prev.fingerprint as u64;
        HeldRow {
            unit: if prev.removed { unit | REMOVED } else { unit },
            ends,
            fingerprint: [(fingerprint >> 32) as u32, fingerprint as u32],
            line: prev.line.unwrap_or(NO_LINE),
        }
        .write(&mut self.rows);
        fits && self.len() < u32::MAX as usize
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

    fn row(&self, i: usize) -> HeldRow {
        HeldRow::read(&self.rows[i * ROW..(i + 1) * ROW])
    }

    /// The rows, as the store would give them.
    pub fn iter(&self) -> impl Iterator<Item = PrevRow<'_>> {
        self.iter_from(0)
    }

    /// The rows from the `first`th on.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = PrevRow<'_>> {
        let mut start = match first.checked_sub(1) {
            Some(before) => self.row(before).ends[1] as usize,
            None => 0,
        };
        self.rows[first * ROW..]
            .chunks_exact(ROW)
            .map(move |bytes| {
                let row = HeldRow::read(bytes);
                let [account, sub] = row.ends.map(|e| e as usize);
                let key = KeyRef {
                    business_unit: &self.units[(row.unit & !REMOVED) as usize],
                    account: &self.text[start..account],
                    sub_account: &self.text[account..sub],
                };
                start = sub;
                PrevRow {
                    key,
                    fingerprint: ((u64::from(row.fingerprint[0]) << 32)
                        | u64::from(row.fingerprint[1])) as i64,
                    line: (row.line != NO_LINE).then_some(row.line),
                    removed: row.unit & REMOVED != 0,
                }
            })
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let units: usize = self.units.iter().map(|u| 4 + u.len()).sum();
        let mut out = Vec::with_capacity(HEADER + self.rows.len() + units + self.text.len());
        out.extend_from_slice(MAGIC);
        for count in [self.len(), self.units.len(), self.text.len()] {
            // Each fits: `push` refuses what would not.
            out.extend_from_slice(&(count as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.rows);
        for unit in &self.units {
            out.extend_from_slice(&(unit.len() as u32).to_le_bytes());
            out.extend_from_slice(unit.as_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// Reads a stored form back; `None` for anything [`encode`](Self::encode)
    /// could not have written: a short or long value, a text end out of place
    /// or inside a character, a unit that does not exist, keys out of order.
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
        let units_end = len.checked_sub(text)?;
        if units_end < rows_end {
            return None;
        }
        let mut part = |from: usize, to: usize| {
            let mut buf = vec![0u8; to - from];
            read_at(&mut buf, from).map(|()| buf)
        };
        let held = HeldRows {
            units: Self::read_units(&part(rows_end, units_end)?, units)?,
            text: String::from_utf8(part(units_end, len)?).ok()?,
            rows: part(HEADER, rows_end)?,
        };
        held.in_order().then_some(held)
    }

    /// `count` business units, each a `u32` length and its bytes, filling
    /// `bytes` exactly, in strict order.
    fn read_units(mut bytes: &[u8], count: usize) -> Option<Vec<String>> {
        let mut units: Vec<String> = Vec::with_capacity(count.min(bytes.len() / 4));
        for _ in 0..count {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let unit = std::str::from_utf8(rest.get(..len)?).ok()?;
            if units.last().is_some_and(|last| last.as_str() >= unit) {
                return None;
            }
            units.push(unit.to_owned());
            bytes = &rest[len..];
        }
        bytes.is_empty().then_some(units)
    }

    /// Whether every row's unit exists, its text ends fall in place on
    /// character boundaries, the rows take the whole text and every unit, and
    /// the keys come in strict order: what the merge relies on.
    fn in_order(&self) -> bool {
        let text = self.text.as_bytes();
        let mut start = 0usize;
        let mut before: Option<(u32, usize, usize, usize)> = None;
        for bytes in self.rows.chunks_exact(ROW) {
            let row = HeldRow::read(bytes);
            let unit = row.unit & !REMOVED;
            let [account, sub] = row.ends.map(|e| e as usize);
            let in_place = (unit as usize) < self.units.len()
                && start <= account
                && account <= sub
                && sub <= text.len()
                && self.text.is_char_boundary(account)
                && self.text.is_char_boundary(sub);
            if !in_place {
                return false;
            }
            if let Some((last_unit, last_start, last_account, last_sub)) = before {
                let order = last_unit.cmp(&unit).then_with(|| {
                    (
                        &text[last_start..last_account],
                        &text[last_account..last_sub],
                    )
                        .cmp(&(&text[start..account], &text[account..sub]))
                });
                if order != Ordering::Less {
                    return false;
                }
            }
            before = Some((unit, start, account, sub));
            start = sub;
        }
        let units_used = before.map_or(0, |(unit, ..)| unit as usize + 1);
        start == text.len() && units_used == self.units.len()
    }
}

/// A stored form read back, or `None` (logged: the rows are then read from
/// `desired`, and the next commit that changes the file stores them again).
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
                    Some(u.int_in_range(0..=u32::MAX - 1)?)
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
            &include_bytes!("../../fuzz/seeds/held_rows/empty.bin")[..],
            &include_bytes!("../../fuzz/seeds/held_rows/two_units_tombstone.bin")[..],
        ] {
            let held = HeldRows::decode(seed).expect("a seed reads back");
            assert_eq!(held.encode(), seed);
        }
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
