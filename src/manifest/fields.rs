//! Field names, header normalisation and the per-value checks of SPEC §3.

/// A manifest field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    BusinessUnitSlug,
    AccountNumber,
    SubAccountNumber,
    FirstName,
    LastName,
    EmailAddress,
    Autopay,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::BusinessUnitSlug,
        Field::AccountNumber,
        Field::SubAccountNumber,
        Field::FirstName,
        Field::LastName,
        Field::EmailAddress,
        Field::Autopay,
    ];

    pub const REQUIRED: [Field; 4] = [
        Field::AccountNumber,
        Field::FirstName,
        Field::LastName,
        Field::EmailAddress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::BusinessUnitSlug => "businessUnitSlug",
            Field::AccountNumber => "accountNumber",
            Field::SubAccountNumber => "subAccountNumber",
            Field::FirstName => "firstName",
            Field::LastName => "lastName",
            Field::EmailAddress => "emailAddress",
            Field::Autopay => "autopay",
        }
    }

    /// The field whose name matches `name` exactly (YAML keys).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field a CSV or XLSX header means, ignoring case, spaces, `_`, `-`
    /// and `.`: its own name or one of [`ALIASES`].
    pub fn from_header(header: &str) -> Option<Field> {
        let normalised = normalise_header(header);
        Field::ALL
            .into_iter()
            .find(|f| normalise_header(f.name()) == normalised)
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(alias, _)| *alias == normalised)
                    .map(|(_, field)| *field)
            })
    }
}

/// Header names that spreadsheets and billing systems use for the fields,
/// normalised (README "Manifests" lists them as people write them).
pub const ALIASES: [(&str, Field); 32] = [
    ("businessunit", Field::BusinessUnitSlug),
    ("account", Field::AccountNumber),
    ("account#", Field::AccountNumber),
    ("accountno", Field::AccountNumber),
    ("accountnum", Field::AccountNumber),
    ("accountid", Field::AccountNumber),
    ("acct", Field::AccountNumber),
    ("acct#", Field::AccountNumber),
    ("acctno", Field::AccountNumber),
    ("acctnumber", Field::AccountNumber),
    ("subaccount", Field::SubAccountNumber),
    ("subaccount#", Field::SubAccountNumber),
    ("subaccountno", Field::SubAccountNumber),
    ("subacct", Field::SubAccountNumber),
    ("subacct#", Field::SubAccountNumber),
    ("subacctno", Field::SubAccountNumber),
    ("subacctnumber", Field::SubAccountNumber),
    ("first", Field::FirstName),
    ("forename", Field::FirstName),
    ("givenname", Field::FirstName),
    ("last", Field::LastName),
    ("surname", Field::LastName),
    ("familyname", Field::LastName),
    ("email", Field::EmailAddress),
    ("mail", Field::EmailAddress),
    ("emailaddr", Field::EmailAddress),
    ("emailid", Field::EmailAddress),
    ("autopayenrolled", Field::Autopay),
    ("autopayenabled", Field::Autopay),
    ("autopaystatus", Field::Autopay),
    ("enrolledinautopay", Field::Autopay),
    ("autopayment", Field::Autopay),
];

/// Lower-cases and drops spaces, `_`, `-`, `.`, a stray byte-order mark and a
/// trailing carriage return.
pub fn normalise_header(header: &str) -> String {
    header
        .trim_start_matches('\u{feff}')
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '.' | '\t' | '\r'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an account value is a number Excel turned into scientific notation
/// (`1.23457E+11`, `1,23457E+11`, `1E+11`): its digits are lost, so it is never
/// sent. Excel always writes the exponent's sign, which real account numbers
/// with an `E` in them do not have.
pub fn is_scientific(value: &str) -> bool {
    let Some((mantissa, exponent)) = value.split_once(['E', 'e']) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once(['.', ',']) {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.strip_prefix(['+', '-']).is_some_and(digits);
    mantissa_ok && exponent_ok
}

pub const MAX_CHARS: usize = 255;

/// Checks a trimmed value: no control characters, at most 255 characters.
pub fn check_text(value: &str) -> Result<(), String> {
    // Printable ASCII (most values), in one pass: a byte is a character.
    if value.len() <= MAX_CHARS && value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    // Otherwise one pass over the characters: any control is an error, whatever
    // the length; then the length.
    let mut count = 0;
    for c in value.chars() {
        if c.is_control() {
            return Err(
                "contains a control character (a line break or tab inside the value?); remove it"
                    .into(),
            );
        }
        count += 1;
    }
    if count > MAX_CHARS {
        return Err(format!(
            "is {count} characters long; the limit is {MAX_CHARS}"
        ));
    }
    Ok(())
}

/// The characters besides letters and digits an email's local part may hold.
const LOCAL_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";

/// A practical email check: one `@`, a non-empty local part, a dotted domain of
/// letters, digits and hyphens, no spaces.
pub fn check_email(value: &str) -> Result<(), String> {
    const HINT: &str = "is not a valid email address (expected name@example.com)";
    let ok = if value.is_ascii() {
        ascii_email_ok(value.as_bytes())
    } else {
        email_ok(value)
    };
    if ok { Ok(()) } else { Err(HINT.into()) }
}

/// The rule of [`check_email`] over characters: what any text is held to.
fn email_ok(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || (c.is_ascii() && LOCAL_SPECIALS.contains(&(c as u8))));
    // A dot: at least two labels.
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// Which bytes an email's local part may hold: ASCII letters, digits and
/// [`LOCAL_SPECIALS`].
const LOCAL_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < LOCAL_SPECIALS.len() {
        table[LOCAL_SPECIALS[i] as usize] = true;
        i += 1;
    }
    table
};

/// [`email_ok`] for ASCII text (nearly every address), in one pass over its
/// bytes: for ASCII, a letter or digit is `is_ascii_alphanumeric`.
fn ascii_email_ok(value: &[u8]) -> bool {
    let Some(at) = memchr::memrchr(b'@', value) else {
        return false;
    };
    let (local, domain) = (&value[..at], &value[at + 1..]);
    let (Some(&first), Some(&last)) = (local.first(), local.last()) else {
        return false;
    };
    if local.len() > 64 || first == b'.' || last == b'.' {
        return false;
    }
    let mut prev = 0;
    for &b in local {
        if !LOCAL_BYTES[b as usize] || (b == b'.' && prev == b'.') {
            return false;
        }
        prev = b;
    }
    let label_ok = |label: &[u8]| {
        matches!((label.first(), label.last()), (Some(&f), Some(&l)) if f != b'-' && l != b'-')
            && label.len() <= 63
    };
    let mut start = 0;
    for (i, &b) in domain.iter().enumerate() {
        if b == b'.' {
            if !label_ok(&domain[start..i]) {
                return false;
            }
            start = i + 1;
        } else if !(b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
    }
    // A dot: at least two labels.
    start > 0 && label_ok(&domain[start..])
}

/// Parses an autopay word; empty means "no opinion".
pub fn parse_autopay(value: &str) -> Result<Option<bool>, String> {
    let word = value.trim();
    let is = |words: &[&str]| words.iter().any(|w| word.eq_ignore_ascii_case(w));
    if word.is_empty() {
        Ok(None)
    } else if is(&["true", "yes", "y", "1", "enrolled"]) {
        Ok(Some(true))
    } else if is(&["false", "no", "n", "0", "unenrolled"]) {
        Ok(Some(false))
    } else {
        Err(format!(
            "{value:?} is not an autopay value; use true/false, yes/no, y/n, 1/0, enrolled/unenrolled, or leave it empty"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_ignoring_case_spaces_underscores_and_hyphens() {
        for header in [
            "Account Number",
            "account_number",
            "accountNumber",
            "ACCOUNT-NUMBER",
            "\u{feff}Account Number",
        ] {
            assert_eq!(
                Field::from_header(header),
                Some(Field::AccountNumber),
                "{header}"
            );
        }
        assert_eq!(
            Field::from_header("E-mail Address"),
            Some(Field::EmailAddress)
        );
        assert_eq!(Field::from_header("Notes"), None);
        assert_eq!(Field::from_header("Account Name"), None);
    }

    #[test]
    fn the_header_names_spreadsheets_use_are_recognised() {
        for (header, field) in [
            ("Email", Field::EmailAddress),
            ("E-mail", Field::EmailAddress),
            ("Email Address\r", Field::EmailAddress),
            ("Account #", Field::AccountNumber),
            ("Acct #", Field::AccountNumber),
            ("Account No.", Field::AccountNumber),
            ("ACCOUNT", Field::AccountNumber),
            ("Sub Account", Field::SubAccountNumber),
            ("Sub-Acct No", Field::SubAccountNumber),
            ("Surname", Field::LastName),
            ("Given Name", Field::FirstName),
            ("Business Unit", Field::BusinessUnitSlug),
        ] {
            assert_eq!(Field::from_header(header), Some(field), "{header:?}");
        }
        // No alias is a field's own name, and none is listed twice.
        for (i, (alias, _)) in ALIASES.iter().enumerate() {
            assert_eq!(normalise_header(alias), *alias, "{alias} is normalised");
            assert!(
                Field::ALL
                    .iter()
                    .all(|f| normalise_header(f.name()) != *alias)
            );
            assert!(
                ALIASES[..i].iter().all(|(a, _)| a != alias),
                "{alias} twice"
            );
        }
    }

    #[test]
    fn excel_scientific_notation_is_told_from_account_numbers() {
        for damaged in ["1.23457E+11", "1,23457E+11", "1E+11", "9.9e-05", "12.5E+3"] {
            assert!(is_scientific(damaged), "{damaged}");
        }
        for fine in [
            "12345", "12E45", "E+11", "1.2E", "1.E+5", "AB1E+5", "1E+", "0012",
        ] {
            assert!(!is_scientific(fine), "{fine}");
        }
    }

    #[test]
    fn autopay_accepts_every_documented_word_in_any_case() {
        for word in ["true", "YES", "y", "1", "Enrolled"] {
            assert_eq!(parse_autopay(word), Ok(Some(true)), "{word}");
        }
        for word in ["False", "no", "N", "0", "UNENROLLED"] {
            assert_eq!(parse_autopay(word), Ok(Some(false)), "{word}");
        }
        assert_eq!(parse_autopay(""), Ok(None));
        assert!(parse_autopay("maybe").is_err());
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(check_email("john.smith@example.com").is_ok());
        assert!(check_email("j+tag@mail.example.co.uk").is_ok());
        for bad in [
            "john",
            "john@",
            "@example.com",
            "john@example",
            "jo hn@example.com",
            "john@exa_mple.com",
            "a..b@example.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        // At most 64 characters before the `@`, 63 in a label.
        let (a, b) = ("a".repeat(64), "b".repeat(63));
        assert!(check_email(&format!("{a}@{b}.com")).is_ok());
        assert!(check_email(&format!("{a}a@{b}.com")).is_err());
        assert!(check_email(&format!("{a}@{b}b.com")).is_err());
        assert!(email_ok(&format!("{a}@{b}.com")));
        assert!(!email_ok(&format!("{a}a@{b}.com")) && !email_ok(&format!("{a}@{b}b.com")));
    }

    #[test]
    fn the_ascii_email_check_agrees_with_the_check_over_characters() {
        let pieces = [
            "a", "Z", "0", "ab", "c1", "x-y", "example", "com", ".", "..", "@", "-", "_", "+", "é",
            " ", "\t", ".-", "-.", "!", "~", "\"", "(", "%", "\u{0}", "ü", "ß",
        ];
        let (mut valid, mut invalid) = (0, 0);
        arbtest::arbtest(|u| {
            let part = |u: &mut arbtest::arbitrary::Unstructured<'_>, most| {
                let mut text = String::new();
                for _ in 0..u.int_in_range(1..=most)? {
                    // Mostly pieces that belong in an address.
                    let from = if u.ratio(3, 4)? {
                        &pieces[..8]
                    } else {
                        &pieces[..]
                    };
                    text.push_str(from[u.choose_index(from.len())?]);
                }
                Ok::<_, arbtest::arbitrary::Error>(text)
            };
            // Mostly `local@label.label`, of pieces that are sometimes wrong.
            let mut text = part(u, 4)?;
            if u.ratio(1, 16)? {
                text.push_str(&"a".repeat(u.int_in_range(60..=65)?));
            }
            if u.ratio(7, 8)? {
                text.push('@');
            }
            for i in 0..u.int_in_range(0..=3)? {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(&part(u, 2)?);
                if u.ratio(1, 16)? {
                    text.push_str(&"b".repeat(u.int_in_range(59..=63)?));
                }
            }
            if !text.is_ascii() {
                return Ok(());
            }
            let fast = ascii_email_ok(text.as_bytes());
            assert_eq!(fast, email_ok(&text), "{text:?}");
            if fast {
                valid += 1
            } else {
                invalid += 1
            }
            Ok(())
        })
        .budget_ms(300);
        assert!(
            valid > 10 && invalid > 10,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn values_with_control_characters_or_over_255_characters_are_rejected() {
        assert!(check_text("Smith\nJr").is_err());
        assert!(check_text(&"x".repeat(256)).is_err());
        assert!(check_text(&"é".repeat(255)).is_ok());
        assert!(check_text("Smith\u{7f}").is_err());
        assert!(check_text("Smith\u{85}").is_err());
        let edge = [
            "", "x", "\t", "\u{1f}", " ", "~", "\u{7f}", "\u{80}", "\u{85}", "é", "\u{a0}",
        ];
        arbtest::arbtest(|u| {
            let value: String = (0..u.int_in_range(0..=300)?)
                .map(|_| Ok(edge[u.choose_index(edge.len())?]))
                .collect::<arbtest::arbitrary::Result<_>>()?;
            let expected =
                !value.chars().any(char::is_control) && value.chars().count() <= MAX_CHARS;
            assert_eq!(check_text(&value).is_ok(), expected, "{value:?}");
            Ok(())
        })
        .budget_ms(100);
    }
}
