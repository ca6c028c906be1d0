//! Masking of personal data for logs and human-facing output.

use std::fmt;

/// Shows an email as `j***@example.com`: the first character of the local part
/// and the domain. Anything that is not an email shows as `***`.
pub struct MaskedEmail<'a>(pub &'a str);

impl fmt::Display for MaskedEmail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                let first = local.chars().next().unwrap_or('*');
                write!(f, "{first}***@{domain}")
            }
            _ => f.write_str("***"),
        }
    }
}

impl fmt::Debug for MaskedEmail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shows an account number for logs as `*****6789`: a star for each hidden
/// character (so the length shows) and the last four, or the last half of a
/// shorter one, so that keys can be told apart without being readable whole.
pub struct MaskedAccount<'a>(pub &'a str);

impl fmt::Display for MaskedAccount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: Vec<char> = self.0.chars().collect();
        let shown = (chars.len() / 2).min(4);
        let hidden = chars.len() - shown;
        let tail: String = chars[hidden..].iter().collect();
        write!(f, "{}{tail}", "*".repeat(hidden))
    }
}

/// Masks every email address in free text (Paystar's answers may echo one).
pub fn mask_emails(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Walk the text keeping separators: each maximal run of email characters
    // that holds an `@` is masked.
    let is_part = |c: char| c.is_alphanumeric() || "._%+-@".contains(c);
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.contains('@') {
            out.push_str(&MaskedEmail(run).to_string());
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_part(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(value: &str) -> String {
        MaskedEmail(value).to_string()
    }

    #[test]
    fn an_email_keeps_its_first_letter_and_domain() {
        assert_eq!(email("john.smith@example.com"), "j***@example.com");
    }

    #[test]
    fn something_that_is_not_an_email_is_fully_masked() {
        assert_eq!(email("john smith"), "***");
        assert_eq!(email("@example.com"), "***");
    }

    #[test]
    fn emails_in_free_text_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            mask_emails(r#"{"error":"jane.doe@example.com exists", "code": 409}"#),
            format!(
                r#"{{"error":"{} exists", "code": 409}}"#,
                email("jane.doe@example.com")
            )
        );
        assert_eq!(mask_emails("no address here"), "no address here");
    }

    #[test]
    fn an_account_shows_its_length_and_its_last_four_characters_or_half() {
        assert_eq!(MaskedAccount("1234567890").to_string(), "******7890");
        assert_eq!(MaskedAccount("123456").to_string(), "***456");
        assert_eq!(MaskedAccount("12346").to_string(), "***46");
        assert_eq!(MaskedAccount("7").to_string(), "*");
        // Two keys that differ near the end no longer look alike.
        assert_ne!(
            MaskedAccount("10001201").to_string(),
            MaskedAccount("10002201").to_string()
        );
    }
}
