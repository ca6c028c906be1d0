//! What the YAML parser does not report, read from the text itself: the line of each
//! customer entry, and account values written as unquoted numbers.

use std::collections::HashSet;

/// Account values written as plain (unquoted) numeric scalars, e.g. `accountNumber: 00123`.
/// serde_yaml reads some of them as strings, but other YAML readers turn them into
/// numbers (123, or octal 83), so they are refused whatever serde_yaml made of them.
pub fn unquoted_numbers(text: &str) -> HashSet<&str> {
    let mut found = HashSet::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        for key in ["accountNumber", "subAccountNumber"] {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            let Some(value) = rest.trim_start().strip_prefix(':') else {
                continue;
            };
            let value = value.split(" #").next().unwrap_or("").trim();
            let numeric = !value.is_empty()
                && value
                    .starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '.')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
                && value.chars().any(|c| c.is_ascii_digit());
            if numeric {
                found.insert(value);
            }
        }
    }
    found
}

/// The 1-based line of each block-style list entry (`- …`) of the customers list.
/// serde_yaml keeps no positions, so this reads the text's indentation; the caller
/// uses the result only when it finds exactly one line per parsed entry.
pub fn item_lines(text: &str, under_key: bool) -> Option<Vec<u32>> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i as u32 + 1, l));
    if under_key {
        lines.find(|(_, l)| {
            l.strip_prefix("customers")
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })?;
    }
    let mut indent = None;
    let mut found = Vec::new();
    for (number, line) in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "---" || trimmed == "..." {
            break;
        }
        let depth = line.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if is_item => indent = Some(depth),
            None => {
                if !under_key {
                    return None;
                }
                continue;
            }
            Some(i) if depth < i || (depth == i && !is_item) => break,
            Some(_) => {}
        }
        if Some(depth) == indent && is_item {
            found.push(number);
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lines_are_found_under_the_customers_key() {
        let text = "businessUnitSlug: w\ncustomers:\n  - accountNumber: \"1\"\n    firstName: A\n\n  - accountNumber: \"2\"\nother: x\n";
        assert_eq!(item_lines(text, true), Some(vec![3, 6]));
    }

    #[test]
    fn entry_lines_are_found_in_a_bare_list() {
        let text = "# comment\n- accountNumber: \"1\"\n- accountNumber: \"2\"\n  lastName: B\n";
        assert_eq!(item_lines(text, false), Some(vec![2, 3]));
    }
}
