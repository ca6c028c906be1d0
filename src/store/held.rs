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
/// rest in one array of 24-byte entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldRows {
    units: Vec<String>,
    text: String,
    rows: Vec<HeldRow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeldRow {
    /// Index into `units`, with [`REMOVED`] set for a tombstone.
    unit: u32,
    /// Where the account and the sub-account end in `text` (each starts where
    /// the row before ended).
    ends: [u32; 2],
    /// The fingerprint's two halves: 4-byte alignment keeps the entry small.
    fingerprint: [u32; 2],
    /// `NO_LINE` for none.
    line: u32,
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
            rows: Vec::with_capacity(expected.saturating_add(expected / 32)),
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
            let room = self.rows.capacity().saturating_mul(each + 1);
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
        self.rows.push(HeldRow {
            unit: if prev.removed { unit | REMOVED } else { unit },
            ends,
            fingerprint: [(fingerprint >> 32) as u32, fingerprint as u32],
            line: prev.line.unwrap_or(NO_LINE),
        });
        fits
    }

    /// Gives back room reserved and not used.
    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, as the store would give them.
    pub fn iter(&self) -> impl Iterator<Item = PrevRow<'_>> {
        self.iter_from(0)
    }

    /// The rows from the `first`th on.
    pub fn iter_from(&self, first: usize) -> impl Iterator<Item = PrevRow<'_>> {
        let mut start = match first.checked_sub(1) {
            Some(before) => self.rows[before].ends[1] as usize,
            None => 0,
        };
        self.rows[first..].iter().map(move |row| {
            let [account, sub] = row.ends.map(|e| e as usize);
            let key = KeyRef {
                business_unit: &self.units[(row.unit & !REMOVED) as usize],
                account: &self.text[start..account],
                sub_account: &self.text[account..sub],
            };
            start = sub;
            PrevRow {
                key,
                fingerprint: ((u64::from(row.fingerprint[0]) << 32) | u64::from(row.fingerprint[1]))
                    as i64,
                line: (row.line != NO_LINE).then_some(row.line),
                removed: row.unit & REMOVED != 0,
            }
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let units: usize = self.units.iter().map(|u| 4 + u.len()).sum();
        let mut out = Vec::with_capacity(HEADER + self.rows.len() * ROW + units + self.text.len());
        out.extend_from_slice(MAGIC);
        for count in [self.rows.len(), self.units.len(), self.text.len()] {
            // Each fits: `push` refuses what would not.
            out.extend_from_slice(&(count as u32).to_le_bytes());
        }
        for row in &self.rows {
            let fields = [
                row.unit,
                row.ends[0],
                row.ends[1],
                row.fingerprint[0],
                row.fingerprint[1],
                row.line,
            ];
            for field in fields {
                out.extend_from_slice(&field.to_le_bytes());
            }
        }
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
        let mut input = Input(bytes);
        if input.take(4)? != MAGIC {
            return None;
        }
        let [rows, units, text] = [0; 3].map(|_| input.u32().map(|n| n as usize));
        let (rows, units, text) = (rows?, units?, text?);
        let row_bytes = input.take(rows.checked_mul(ROW)?)?;
        let mut held = HeldRows {
            units: Vec::with_capacity(units.min(bytes.len() / 4)),
            text: String::new(),
            rows: Vec::with_capacity(rows),
        };
        for _ in 0..units {
            let len = input.u32()? as usize;
            let unit = std::str::from_utf8(input.take(len)?).ok()?;
            // Units come in key order, each once.
            if held.units.last().is_some_and(|last| last.as_str() >= unit) {
                return None;
            }
            held.units.push(unit.to_owned());
        }
        held.text = std::str::from_utf8(input.take(text)?).ok()?.to_owned();
        if !input.0.is_empty() {
            return None;
        }
        let mut start = 0usize;
        let mut before: Option<(u32, usize, usize, usize)> = None;
        for chunk in row_bytes.chunks_exact(ROW) {
            let field =
                |i: usize| u32::from_le_bytes(chunk[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            let row = HeldRow {
                unit: field(0),
                ends: [field(1), field(2)],
                fingerprint: [field(3), field(4)],
                line: field(5),
            };
            let unit = row.unit & !REMOVED;
            let [account, sub] = row.ends.map(|e| e as usize);
            let in_place = (unit as usize) < held.units.len()
                && start <= account
                && account <= sub
                && sub <= held.text.len()
                && held.text.is_char_boundary(account)
                && held.text.is_char_boundary(sub);
            if !in_place {
                return None;
            }
            if let Some((last_unit, last_start, last_account, last_sub)) = before {
                let order = last_unit.cmp(&unit).then_with(|| {
                    let text = held.text.as_bytes();
                    (
                        &text[last_start..last_account],
                        &text[last_account..last_sub],
                    )
                        .cmp(&(&text[start..account], &text[account..sub]))
                });
                if order != Ordering::Less {
                    return None;
                }
            }
            before = Some((unit, start, account, sub));
            start = sub;
            held.rows.push(row);
        }
        // The rows' text is the whole text, and every unit is used.
        let units_used = before.map_or(0, |(unit, ..)| unit as usize + 1);
        (start == held.text.len() && units_used == held.units.len()).then_some(held)
    }
}

/// A stored form read back, or `None` (logged: the rows are then read from
/// `desired`, and the next commit that changes the file stores them again).
pub(super) fn decoded(file_id: i64, bytes: &[u8]) -> Option<HeldRows> {
    let held = HeldRows::decode(bytes);
    if held.is_none() {
        tracing::warn!(
            file_id,
            bytes = bytes.len(),
            "a manifest file's stored rows do not read back; reading them from the desired state instead"
        );
    }
    held
}

/// Reads a stored form front to back.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
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
