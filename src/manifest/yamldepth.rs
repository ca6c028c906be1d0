//! Bounds what a hostile YAML manifest can cost. libyaml's scanner takes time
//! quadratic in the depth of nested flow collections (`{a: {a: {a: …`), so the
//! depth is measured first, in one linear pass over the text, and a file nested
//! deeper than [`MAX_DEPTH`] is refused before the parser sees it. Block-style
//! nesting is counted while the document is read (`yamlfile/doc.rs`).

/// Far more than a manifest needs (it nests three levels).
pub const MAX_DEPTH: usize = 64;

/// The 1-based line where flow nesting first goes past [`MAX_DEPTH`], if it does.
///
/// A lexical approximation of YAML: quoted scalars, comments and block scalars
/// are skipped; a bracket counts in flow context, and in block context only
/// where a value starts. It errs towards counting, never towards missing depth.
pub fn too_deep_flow(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1u32;
    let mut i = 0usize;
    // The last byte that was not a space or tab on this line, if any.
    let mut prev: Option<u8> = None;
    let mut indent = 0usize;
    let mut at_line_start = true;
    // Indentation of the line that opened a block scalar (`|` or `>`).
    let mut block_scalar: Option<usize> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if at_line_start {
            let start = i;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            indent = i - start;
            at_line_start = false;
            if let Some(parent) = block_scalar {
                let blank = i >= bytes.len() || bytes[i] == b'\n' || bytes[i] == b'\r';
                if blank || indent > parent {
                    i = skip_line(bytes, i);
                    continue;
                }
                block_scalar = None;
            }
            continue;
        }
        let value_start = depth > 0
            && matches!(prev, None | Some(b'[' | b'{' | b',' | b':' | b'?'))
            || depth == 0 && matches!(prev, None | Some(b':' | b'-' | b'?'));
        match b {
            b'\n' => {
                line += 1;
                prev = None;
                at_line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n') => {
                i = skip_line(bytes, i);
                continue;
            }
            b'"' | b'\'' if value_start => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if b == b'"' => i += 1,
                        b'\n' => line += 1,
                        q if q == b && b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        q if q == b => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if depth > 0 || value_start => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b'|' | b'>' if depth == 0 && value_start => block_scalar = Some(indent),
            _ => {}
        }
        prev = Some(b);
        i += 1;
    }
    None
}

fn skip_line(bytes: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_with_its_line() {
        assert_eq!(too_deep_flow(&"[".repeat(65)), Some(1));
        assert_eq!(
            too_deep_flow(&format!("a: 1\nb: {}", "{a: ".repeat(100))),
            Some(2)
        );
        assert_eq!(too_deep_flow(&"[".repeat(64)), None);
    }

    #[test]
    fn brackets_in_quotes_comments_block_scalars_and_plain_text_do_not_count() {
        let many = "[".repeat(100);
        let text = format!(
            "customers:\n  - firstName: \"{many}\"\n    lastName: '{many}'\n    # {many}\n    emailAddress: a{many}@x.io\n  - note: |\n      {many}\n    x: y\n"
        );
        assert_eq!(too_deep_flow(&text), None);
    }
}
