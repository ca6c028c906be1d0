//! YAML as people write it: a file of several documents split into them, and
//! the reader's syntax errors told in a sentence a clerk can act on.

/// The documents of a text separated by `---` lines, each with how many lines
/// of the text come before it; documents that hold nothing but blank lines
/// and comments are left out. A text with one document is returned whole.
pub fn documents(text: &str) -> Vec<(u32, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u32;
    let mut offset = 0usize;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare.strip_prefix("---").is_some_and(|rest| {
            rest.is_empty()
                || (rest.starts_with([' ', '\t'])
                    && (rest.trim().is_empty() || rest.trim_start().starts_with('#')))
        });
        if marker {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = number as u32 + 1;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    let kept: Vec<(u32, &str)> = docs.into_iter().filter(|(_, d)| !blank(d)).collect();
    if kept.len() <= 1 {
        return vec![(0, text)];
    }
    kept
}

/// Nothing but blank lines and comments.
fn blank(doc: &str) -> bool {
    doc.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "...")
}

/// A sentence for a YAML syntax error at `line` (1-based, if known) of `text`,
/// with the reader's own words after it for whoever needs them.
pub fn syntax(text: &str, line: Option<u32>, words: &str) -> (String, Option<u32>) {
    // A tab where indentation is expected: the commonest mistake, and the
    // reader's words for it vary with what follows the tab.
    let tabbed = text
        .lines()
        .enumerate()
        .find(|(_, l)| {
            let indent = &l[..l.len() - l.trim_start().len()];
            indent.contains('\t')
        })
        .map(|(i, _)| i as u32 + 1);
    if let Some(tab_line) = tabbed.filter(|t| line.is_none_or(|l| *t <= l)) {
        return (
            format!(
                "line {tab_line} is indented with a tab, and YAML indents with spaces only: replace the tab with spaces so the line lines up with the one above (the YAML reader says: {words})"
            ),
            Some(tab_line),
        );
    }
    let advice = if words.contains("mapping values are not allowed") {
        "a value holds \": \" (a colon and a space); put the whole value in quotes"
    } else if words.contains("did not find expected key")
        || words.contains("did not find expected '-'")
    {
        "this line is not lined up with the ones around it; each field of a customer must start in the same column as the first, under its \"- \""
    } else if words.contains("found character that cannot start any token") {
        "a value starts with a character YAML keeps for itself (such as @, ` or %); put the whole value in quotes"
    } else if words.contains("found unexpected end of stream") || words.contains("quoted scalar") {
        "a quote opened here is never closed; add the closing quote"
    } else if words.contains("repetition limit exceeded") {
        "its aliases (*name) expand to more than the reader allows; a manifest never needs that many"
    } else if words.contains("duplicate") {
        "a field appears twice in one customer; keep one"
    } else if words.contains("found undefined alias") || words.contains("unknown anchor") {
        "it refers (*name) to an anchor (&name) that is not defined above it"
    } else {
        "this line is not valid YAML; check its indentation and quotes"
    };
    let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
    (
        format!("{at}{advice} (the YAML reader says: {words})"),
        line,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_splits_into_its_documents_with_their_line_offsets() {
        let text = "---\na: 1\n--- # second\nb: 2\n---\n# only a comment\n...\n";
        let docs = documents(text);
        assert_eq!(docs, [(1, "a: 1\n"), (3, "b: 2\n")]);
        // One document, with or without a leading marker: the text whole.
        assert_eq!(documents("---\na: 1\n"), [(0, "---\na: 1\n")]);
        assert_eq!(documents("a: 1\n"), [(0, "a: 1\n")]);
        // A marker with text after it on its line is not a separator.
        assert_eq!(documents("a: |\n  x\n---x\n"), [(0, "a: |\n  x\n---x\n")]);
        let crlf = "a: 1\r\n---\r\nb: 2\r\n";
        assert_eq!(documents(crlf), [(0, "a: 1\r\n"), (2, "b: 2\r\n")]);
    }

    #[test]
    fn a_tab_in_the_indentation_is_named_with_its_line() {
        let text = "customers:\n  - accountNumber: \"1\"\n\tfirstName: A\n";
        let (sentence, line) = syntax(text, Some(3), "found a tab character");
        assert_eq!(line, Some(3));
        assert!(
            sentence.starts_with("line 3 is indented with a tab"),
            "{sentence}"
        );
    }
}
