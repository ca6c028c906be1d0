//! A validated manifest row, stored compactly: one allocation per row, so a
//! million customers fit in about a hundred megabytes.

use crate::customer::{Fields, KeyRef};
use std::hash::Hasher;

/// Index of a file in the scan that read the row.
pub type FileIdx = u32;

/// One customer as a manifest declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRow {
    /// business unit, account, sub-account, first name, last name, email, concatenated.
    text: Box<str>,
    ends: [u16; 6],
    pub autopay: Option<bool>,
    pub line: u32,
    pub file: FileIdx,
    /// [`fingerprint`] of the fields, taken while the row is being built (its
    /// text is in cache then; a scan compares it later in key order, when it is not).
    fingerprint: i64,
}

/// The six text values of a row, each already trimmed and validated.
pub struct RowValues<'a> {
    pub business_unit: &'a str,
    pub account: &'a str,
    pub sub_account: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
}

impl ManifestRow {
    /// Packs validated values. Each value is at most 255 characters, so every
    /// offset fits in a `u16`.
    pub fn new(values: RowValues<'_>, autopay: Option<bool>, file: FileIdx, line: u32) -> Self {
        let parts = [
            values.business_unit,
            values.account,
            values.sub_account,
            values.first_name,
            values.last_name,
            values.email,
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u16; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = u16::try_from(text.len()).expect("validated values are at most 255 characters");
        }
        let fingerprint = fingerprint([values.first_name, values.last_name, values.email], autopay);
        Self {
            text: text.into_boxed_str(),
            ends,
            autopay,
            line,
            file,
            fingerprint,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The key's three values, concatenated, and where each ends.
    pub(super) fn key_text(&self) -> &str {
        &self.text[..self.ends[2] as usize]
    }

    pub(super) fn key_ends(&self) -> [usize; 3] {
        [
            self.ends[0] as usize,
            self.ends[1] as usize,
            self.ends[2] as usize,
        ]
    }

    pub fn key(&self) -> KeyRef<'_> {
        KeyRef {
            business_unit: self.part(0),
            account: self.part(1),
            sub_account: self.part(2),
        }
    }

    pub fn fields(&self) -> Fields<'_> {
        Fields {
            first_name: self.part(3),
            last_name: self.part(4),
            email: self.part(5),
        }
    }

    /// A fingerprint of everything but the key and location, used only to skip
    /// rows that did not change since the last committed scan. A mismatch costs a
    /// full comparison; it never changes a result.
    pub fn fingerprint(&self) -> i64 {
        self.fingerprint
    }
}

/// Fingerprint of a desired row's fields: SipHash 2-4 with fixed keys (the same
/// in every build) over the byte stream that hashing the first name, last name,
/// email and autopay one after another gives (each text ends in `0xFF`, a byte
/// no `str` holds), so fingerprints stored by any version still match. The
/// stream is put together first and hashed in one call: a scan takes a
/// fingerprint for every row it reads, and the hasher's cost is per call.
fn fingerprint(fields: [&str; 3], autopay: Option<bool>) -> i64 {
    // `Option<bool>`'s hash: its discriminant as an `isize`, then the value.
    let discriminant = (autopay.is_some() as isize).to_ne_bytes();
    let tail: &[u8] = match autopay {
        None => &[],
        Some(false) => &[0],
        Some(true) => &[1],
    };
    let mut stream = [0u8; 256];
    let mut len = 0;
    let parts = [fields[0].as_bytes(), &[0xFF], fields[1].as_bytes(), &[0xFF]]
        .into_iter()
        .chain([fields[2].as_bytes(), &[0xFF], &discriminant[..], tail]);
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    for part in parts {
        if len + part.len() > stream.len() {
            // A long row: the same stream in more calls (the hasher streams).
            hasher.write(&stream[..len]);
            len = 0;
            if part.len() > stream.len() {
                hasher.write(part);
                continue;
            }
        }
        stream[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    hasher.write(&stream[..len]);
    hasher.finish() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ManifestRow {
        ManifestRow::new(
            RowValues {
                business_unit: "water",
                account: "12345",
                sub_account: "",
                first_name: "John",
                last_name: "Smith",
                email: "john@example.com",
            },
            Some(false),
            0,
            3,
        )
    }

    #[test]
    fn a_packed_row_gives_back_every_value() {
        let row = row();
        assert_eq!(row.key().business_unit, "water");
        assert_eq!(row.key().account, "12345");
        assert_eq!(row.key().sub_account, "");
        assert_eq!(row.fields().first_name, "John");
        assert_eq!(row.fields().last_name, "Smith");
        assert_eq!(row.fields().email, "john@example.com");
    }

    /// The fingerprint as hashing each value in turn gives it.
    fn fingerprint_field_by_field(fields: [&str; 3], autopay: Option<bool>) -> i64 {
        use std::hash::Hash;
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        fields.iter().for_each(|f| f.hash(&mut hasher));
        autopay.hash(&mut hasher);
        hasher.finish() as i64
    }

    #[test]
    fn the_fingerprint_is_the_one_hashing_field_by_field_gives() {
        let pieces = [
            "",
            "a",
            "Jo",
            "é",
            "@",
            "x".repeat(100).leak(),
            "ü".repeat(70).leak(),
        ];
        arbtest::arbtest(|u| {
            let mut field = || -> arbtest::arbitrary::Result<String> {
                let mut text = String::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    text.push_str(pieces[u.choose_index(pieces.len())?]);
                }
                Ok(text)
            };
            let fields = [field()?, field()?, field()?];
            let autopay = [None, Some(false), Some(true)][u.choose_index(3)?];
            let fields = [&*fields[0], &*fields[1], &*fields[2]];
            assert_eq!(
                fingerprint(fields, autopay),
                fingerprint_field_by_field(fields, autopay),
                "{fields:?} {autopay:?}"
            );
            Ok(())
        })
        .budget_ms(200);
        // A value known from before: stored fingerprints keep matching.
        assert_eq!(
            fingerprint(["John", "Smith", "john@example.com"], Some(false)),
            -1703458842924955519
        );
    }

    #[test]
    fn the_fingerprint_changes_when_any_field_changes() {
        let a = row();
        let b = ManifestRow::new(
            RowValues {
                business_unit: "water",
                account: "12345",
                sub_account: "",
                first_name: "John",
                last_name: "Smith",
                email: "john@example.com",
            },
            None,
            0,
            9,
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), row().fingerprint());
        // The same characters split between the fields another way.
        let moved = |first_name, last_name| {
            ManifestRow::new(
                RowValues {
                    business_unit: "water",
                    account: "12345",
                    sub_account: "",
                    first_name,
                    last_name,
                    email: "john@example.com",
                },
                Some(false),
                0,
                3,
            )
        };
        assert_ne!(a.fingerprint(), moved("Joh", "nSmith").fingerprint());
        assert_ne!(a.fingerprint(), moved("JohnS", "mith").fingerprint());
        assert_eq!(a.fingerprint(), moved("John", "Smith").fingerprint());
    }
}
