//! Turns the raw values of one row (from CSV or YAML) into a [`ManifestRow`] or
//! the list of everything wrong with it.

use super::error::{ErrorKind, ManifestError};
use super::fields::{Field, check_email, check_text, is_scientific, parse_autopay};
use super::row::{FileIdx, ManifestRow, RowValues};
use crate::customer::CustomerKey;

/// Raw, untrimmed values of one row; `None` when the column or key is absent.
#[derive(Default)]
pub struct RawRow<'a> {
    pub business_unit: Option<&'a str>,
    pub account: Option<&'a str>,
    pub sub_account: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub autopay: Option<&'a str>,
}

impl<'a> RawRow<'a> {
    pub fn set(&mut self, field: Field, value: &'a str) {
        let slot = match field {
            Field::BusinessUnitSlug => &mut self.business_unit,
            Field::AccountNumber => &mut self.account,
            Field::SubAccountNumber => &mut self.sub_account,
            Field::FirstName => &mut self.first_name,
            Field::LastName => &mut self.last_name,
            Field::EmailAddress => &mut self.email,
            Field::Autopay => &mut self.autopay,
        };
        *slot = Some(value);
    }
}

/// `value.trim()`, answered from the first and last bytes when both are
/// printable ASCII other than a space (nearly every value): neither end is
/// whitespace then.
fn trim(value: &str) -> &str {
    let printable = |b: Option<&u8>| b.is_some_and(|b| (0x21..0x7f).contains(b));
    let bytes = value.as_bytes();
    if printable(bytes.first()) && printable(bytes.last()) {
        value
    } else {
        value.trim()
    }
}

/// Where a row sits, for error messages, and the business units to fall back on.
pub struct RowContext<'a> {
    pub file: &'a str,
    pub file_idx: FileIdx,
    pub line: u32,
    /// From the file (YAML `businessUnitSlug`) or else `paystar.default_business_unit`.
    pub default_business_unit: Option<&'a str>,
}

/// A rejected row: its errors, and its key when that much was readable (the key
/// then keeps its previous desired state).
pub struct Rejected {
    pub key: Option<CustomerKey>,
    pub errors: Vec<ManifestError>,
}

pub fn build<'a>(raw: &RawRow<'a>, ctx: &RowContext<'a>) -> Result<ManifestRow, Rejected> {
    let mut problems: Vec<(Field, String)> = Vec::new();
    let mut text = |field: Field, value: Option<&'a str>, required: bool| -> &'a str {
        let value = value.map(trim).unwrap_or("");
        if value.is_empty() && required {
            problems.push((field, "is required but empty or missing".into()));
        } else if let Err(reason) = check_text(value) {
            problems.push((field, reason));
        }
        value
    };
    let account = text(Field::AccountNumber, raw.account, true);
    let sub_account = text(Field::SubAccountNumber, raw.sub_account, false);
    let first_name = text(Field::FirstName, raw.first_name, true);
    let last_name = text(Field::LastName, raw.last_name, true);
    let email = text(Field::EmailAddress, raw.email, true);
    let row_unit = text(Field::BusinessUnitSlug, raw.business_unit, false);
    for (field, value) in [
        (Field::AccountNumber, account),
        (Field::SubAccountNumber, sub_account),
    ] {
        if is_scientific(value) {
            problems.push((
                field,
                format!(
                    "is {value}, a number Excel rewrote in scientific notation (its last digits are lost), so it is not sent; format the column as Text in Excel (or export it from the billing system again) and save again"
                ),
            ));
        }
    }
    let business_unit = if row_unit.is_empty() {
        ctx.default_business_unit.map(str::trim).unwrap_or("")
    } else {
        row_unit
    };
    if business_unit.is_empty() {
        problems.push((
            Field::BusinessUnitSlug,
            "no business unit: set it on the row, in the file, or as paystar.default_business_unit"
                .into(),
        ));
    }
    if !email.is_empty()
        && let Err(reason) = check_email(email)
    {
        problems.push((Field::EmailAddress, reason));
    }
    let autopay = match parse_autopay(raw.autopay.unwrap_or("")) {
        Ok(value) => value,
        Err(reason) => {
            problems.push((Field::Autopay, reason));
            None
        }
    };
    if problems.is_empty() {
        return Ok(ManifestRow::new(
            RowValues {
                business_unit,
                account,
                sub_account,
                first_name,
                last_name,
                email,
            },
            autopay,
            ctx.file_idx,
            ctx.line,
        ));
    }
    let readable = |value: &str| !value.is_empty() && check_text(value).is_ok();
    let key = (readable(account) && readable(business_unit) && check_text(sub_account).is_ok())
        .then(|| CustomerKey::new(business_unit, account, sub_account));
    let account = readable(account).then(|| account.to_owned());
    Err(Rejected {
        errors: problems
            .into_iter()
            .map(|(field, reason)| ManifestError {
                file: ctx.file.to_owned(),
                line: Some(ctx.line),
                account: account.clone(),
                field: Some(field.name().to_owned()),
                kind: ErrorKind::Row,
                reason,
            })
            .collect(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_agrees_with_str_trim() {
        let pieces = [
            "a", " ", "\t", "\n", "\u{a0}", "\u{2003}", "é", "~", "\u{7f}", "\u{85}", "x y", "",
        ];
        arbtest::arbtest(|u| {
            let mut text = String::new();
            for _ in 0..u.int_in_range(0..=5)? {
                text.push_str(pieces[u.choose_index(pieces.len())?]);
            }
            assert_eq!(trim(&text), text.trim(), "{text:?}");
            Ok(())
        })
        .budget_ms(100);
    }
}
