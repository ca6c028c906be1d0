//! Writing a stored form: [`HeldSize`] counts the rows, [`HeldEncoder`] writes
//! the same rows again into one buffer of exactly that size.

use super::{HEADER, HeldRow, MAGIC, ROW};
use crate::store::PrevRow;

/// The first pass of writing a stored form: its size.
#[derive(Default)]
pub struct HeldSize {
    rows: usize,
    text: usize,
    units: usize,
    unit_bytes: usize,
    last_unit: Option<String>,
    /// A row the compact form cannot hold was counted.
    unfit: bool,
}

impl HeldSize {
    /// Counts the next row (in key order).
    pub fn push(&mut self, prev: PrevRow<'_>) {
        if self.last_unit.as_deref() != Some(prev.key.business_unit) {
            self.units += 1;
            self.unit_bytes += 8 + prev.key.business_unit.len();
            self.last_unit = Some(prev.key.business_unit.to_owned());
        }
        self.rows += 1;
        self.text += prev.key.account.len() + prev.key.sub_account.len();
        self.unfit |= !HeldRow::of(&prev).1;
    }

    /// The second pass, into a buffer of the size counted; `None` where the
    /// compact form cannot hold the rows (see [`HeldRows::push`]).
    pub fn encoder(self) -> Option<HeldEncoder> {
        let counts = [self.rows, self.units, self.text].map(u32::try_from);
        if self.unfit || counts.iter().any(Result::is_err) {
            return None;
        }
        let rows_end = HEADER + self.rows * ROW;
        let text_end = rows_end + self.text;
        let mut out = vec![0u8; text_end + self.unit_bytes];
        out[..4].copy_from_slice(MAGIC);
        for (i, count) in counts.into_iter().enumerate() {
            let count = count.expect("checked");
            out[4 + i * 4..8 + i * 4].copy_from_slice(&count.to_le_bytes());
        }
        Some(HeldEncoder {
            out,
            rows_end,
            text_end,
            row_at: HEADER,
            text_at: rows_end,
            unit_at: text_end,
            rows: 0,
            units: 0,
            last_unit: None,
            over: false,
        })
    }
}

/// The second pass of writing a stored form: the same rows again, each
/// written in place.
pub struct HeldEncoder {
    out: Vec<u8>,
    rows_end: usize,
    text_end: usize,
    row_at: usize,
    text_at: usize,
    unit_at: usize,
    rows: u32,
    units: u32,
    last_unit: Option<String>,
    /// A row came that the first pass did not count.
    over: bool,
}

impl HeldEncoder {
    /// Writes the next row; the rows must be those [`HeldSize`] counted
    /// (anything else is refused by [`finish`](Self::finish)).
    pub fn push(&mut self, prev: PrevRow<'_>) {
        let key = prev.key;
        let text_to = self.text_at + key.account.len() + key.sub_account.len();
        let new_unit = self.last_unit.as_deref() != Some(key.business_unit);
        let unit_to = self.unit_at
            + if new_unit {
                8 + key.business_unit.len()
            } else {
                0
            };
        if self.over
            || self.row_at + ROW > self.rows_end
            || text_to > self.text_end
            || unit_to > self.out.len()
        {
            self.over = true;
            return;
        }
        if new_unit {
            let at = self.unit_at;
            let len = key.business_unit.len() as u32;
            self.out[at..at + 4].copy_from_slice(&self.rows.to_le_bytes());
            self.out[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
            self.out[at + 8..unit_to].copy_from_slice(key.business_unit.as_bytes());
            self.unit_at = unit_to;
            self.units += 1;
            self.last_unit = Some(key.business_unit.to_owned());
        }
        let account_to = self.text_at + key.account.len();
        self.out[self.text_at..account_to].copy_from_slice(key.account.as_bytes());
        self.out[account_to..text_to].copy_from_slice(key.sub_account.as_bytes());
        self.text_at = text_to;
        // The first pass refused rows that do not fit.
        let (row, _) = HeldRow::of(&prev);
        self.out[self.row_at..self.row_at + ROW].copy_from_slice(&row.bytes());
        self.row_at += ROW;
        self.rows += 1;
    }

    /// The stored form; `None` unless the rows were exactly those counted.
    pub fn finish(self) -> Option<Vec<u8>> {
        let counted_units = u32::from_le_bytes(self.out[8..12].try_into().expect("4 bytes"));
        let filled = !self.over
            && self.units == counted_units
            && self.row_at == self.rows_end
            && self.text_at == self.text_end
            && self.unit_at == self.out.len();
        filled.then_some(self.out)
    }
}
