//! Strict CSV quoting, checked as the bytes stream past the csv reader (which
//! is lenient: it reads `"G04x007"x` as `G04x007x` and lets an unclosed quote
//! swallow every row after it). RFC 4180 rules: a quote may only open a field,
//! a quote inside a quoted field is doubled, and a closing quote is followed by
//! the delimiter or the end of the line.

use std::collections::VecDeque;
use std::io::{self, Read};

/// A quoting mistake, with the 1-based line it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error(
        "line {line}: a quote (\") inside an unquoted field; quote the whole field and double the quotes inside it (\"a \"\"b\"\" c\")"
    )]
    InUnquoted { line: u32 },
    #[error(
        "line {line}: text after the closing quote of a field; quote the whole field and double the quotes inside it"
    )]
    AfterClose { line: u32 },
    #[error(
        "line {line}: a quoted field opens here and is never closed; add the closing quote (\")"
    )]
    Unclosed { line: u32 },
}

impl QuoteError {
    pub fn line(self) -> u32 {
        match self {
            QuoteError::InUnquoted { line }
            | QuoteError::AfterClose { line }
            | QuoteError::Unclosed { line } => line,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    FieldStart,
    /// Past the first byte of an unquoted field, up to the end of the line:
    /// later fields start after a delimiter, where a quote may open them.
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: it closes the field or starts `""`.
    QuoteInQuoted,
    /// A carriage return right after a closing quote.
    CrAfterClose,
}

/// Passes bytes through unchanged while checking their quoting; the first
/// mistake becomes an `InvalidData` error carrying a [`QuoteError`].
pub struct QuoteCheck<R> {
    inner: R,
    delimiter: u8,
    state: State,
    line: u32,
    opened_at: u32,
    /// Bytes of a leading UTF-8 byte order mark still to skip.
    bom: usize,
    /// Bytes checked before the current read.
    offset: u64,
    /// Whether the next byte starts a line (outside quotes).
    line_start: bool,
    /// The last byte checked (what precedes a read's first byte).
    last: u8,
    /// Runs of empty lines (the offset of the first one's line break, how many)
    /// that the csv reader skips: a record after them is numbered from the first.
    empty: VecDeque<(u64, u64)>,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl<R: Read> QuoteCheck<R> {
    pub fn new(inner: R, delimiter: u8) -> Self {
        Self {
            inner,
            delimiter,
            state: State::FieldStart,
            line: 1,
            opened_at: 1,
            bom: 0,
            offset: 0,
            line_start: true,
            last: 0,
            empty: VecDeque::new(),
        }
    }

    /// How many empty lines start at byte `at`, where the csv reader began
    /// reading a record: it skipped them, so the record is that many lines on.
    /// Forgets the empty lines before `at` (the reader is past them).
    pub fn empty_lines_at(&mut self, at: u64) -> u64 {
        while let Some(&(start, count)) = self.empty.front() {
            if start + count <= at {
                self.empty.pop_front();
                continue;
            }
            return if start <= at { start + count - at } else { 0 };
        }
        0
    }

    fn check(&mut self, bytes: &[u8]) -> Result<(), QuoteError> {
        let checked = self.check_bytes(bytes);
        self.offset += bytes.len() as u64;
        if let Some(&last) = bytes.last() {
            self.last = last;
        }
        checked
    }

    /// Notes a line break outside quotes at `i` of the current read: an empty
    /// line if a line starts there.
    fn line_break(&mut self, i: usize) {
        if self.line_start {
            let at = self.offset + i as u64;
            match self.empty.back_mut() {
                Some((start, count)) if *start + *count == at => *count += 1,
                _ => self.empty.push_back((at, 1)),
            }
        }
        self.line_start = true;
    }

    fn check_bytes(&mut self, bytes: &[u8]) -> Result<(), QuoteError> {
        let mut i = 0;
        while self.bom < BOM.len() && i < bytes.len() {
            if bytes[i] != BOM[self.bom] {
                self.bom = BOM.len();
                break;
            }
            self.bom += 1;
            self.line_start = false;
            i += 1;
        }
        let delim = self.delimiter;
        while i < bytes.len() {
            match self.state {
                // One search a line, not one a field: a quote is only right
                // after a delimiter, where it opens a quoted field.
                State::Unquoted => match memchr::memchr2(b'"', b'\n', &bytes[i..]) {
                    None => return Ok(()),
                    Some(at) => {
                        i += at;
                        if bytes[i] == b'\n' {
                            self.line += 1;
                            self.line_break(i);
                            self.state = State::FieldStart;
                        } else {
                            let before = if i > 0 { bytes[i - 1] } else { self.last };
                            if before != delim {
                                return Err(QuoteError::InUnquoted { line: self.line });
                            }
                            self.opened_at = self.line;
                            self.state = State::Quoted;
                        }
                        i += 1;
                    }
                },
                State::Quoted => match memchr::memchr2(b'"', b'\n', &bytes[i..]) {
                    None => return Ok(()),
                    Some(at) => {
                        i += at;
                        if bytes[i] == b'\n' {
                            self.line += 1;
                        } else {
                            self.state = State::QuoteInQuoted;
                        }
                        i += 1;
                    }
                },
                State::FieldStart => {
                    let b = bytes[i];
                    if b == b'\n' {
                        self.line_break(i);
                    } else {
                        self.line_start = false;
                    }
                    self.state = if b == b'"' {
                        self.opened_at = self.line;
                        State::Quoted
                    } else if b == delim {
                        State::FieldStart
                    } else if b == b'\n' {
                        self.line += 1;
                        State::FieldStart
                    } else {
                        State::Unquoted
                    };
                    i += 1;
                }
                State::QuoteInQuoted => {
                    let b = bytes[i];
                    self.state = if b == b'"' {
                        State::Quoted
                    } else if b == delim {
                        State::FieldStart
                    } else if b == b'\n' {
                        self.line += 1;
                        self.line_break(i);
                        State::FieldStart
                    } else if b == b'\r' {
                        State::CrAfterClose
                    } else {
                        return Err(QuoteError::AfterClose {
                            line: self.opened_at,
                        });
                    };
                    i += 1;
                }
                State::CrAfterClose => {
                    let b = bytes[i];
                    self.state = if b == b'\n' {
                        self.line += 1;
                        self.line_break(i);
                        State::FieldStart
                    } else if b == delim {
                        State::FieldStart
                    } else if b == b'\r' {
                        State::CrAfterClose
                    } else {
                        return Err(QuoteError::AfterClose {
                            line: self.opened_at,
                        });
                    };
                    i += 1;
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), QuoteError> {
        match self.state {
            State::Quoted => Err(QuoteError::Unclosed {
                line: self.opened_at,
            }),
            _ => Ok(()),
        }
    }
}

impl<R: Read> Read for QuoteCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let checked = if n == 0 && !buf.is_empty() {
            self.finish()
        } else {
            self.check(&buf[..n])
        };
        checked.map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        Ok(n)
    }
}

/// The quoting mistake behind a csv error, if that is what it is.
pub fn quote_error(err: &::csv::Error) -> Option<QuoteError> {
    match err.kind() {
        ::csv::ErrorKind::Io(io) => io.get_ref()?.downcast_ref::<QuoteError>().copied(),
        _ => None,
    }
}

/// Checks a whole text at once (tests and tools).
pub fn check_str(text: &[u8], delimiter: u8) -> Result<(), QuoteError> {
    let mut check = QuoteCheck::new(&[][..], delimiter);
    check.check(text)?;
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_quoted_csv_passes() {
        for text in [
            "a,b\n1,2\n",
            "a,b\r\n\"1\",\"x, y\"\r\n",
            "a\n\"say \"\"hi\"\"\"\n",
            "a\n\"two\nlines\"\n",
            "\u{feff}\"a\",b\n1,2",
            "a,b\n,\n",
        ] {
            assert_eq!(check_str(text.as_bytes(), b','), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_names_its_line() {
        assert_eq!(
            check_str(b"a,b\n1,2\n3,4\"x\n", b','),
            Err(QuoteError::InUnquoted { line: 3 })
        );
    }

    #[test]
    fn text_after_a_closing_quote_names_the_line_the_quote_opened() {
        assert_eq!(
            check_str(b"a\n\"G04\nx007\"x\n", b','),
            Err(QuoteError::AfterClose { line: 2 })
        );
        assert_eq!(
            check_str(b"a\n\"G04x007\"\rx\n", b','),
            Err(QuoteError::AfterClose { line: 2 })
        );
    }

    #[test]
    fn an_unclosed_quote_names_the_line_it_opened() {
        assert_eq!(
            check_str(b"a,b\n1,2\n\"3,4\n5,6\n", b','),
            Err(QuoteError::Unclosed { line: 3 })
        );
    }

    #[test]
    fn the_configured_delimiter_ends_a_quoted_field() {
        assert_eq!(check_str(b"a;b\n\"1\";2\n", b';'), Ok(()));
        assert_eq!(
            check_str(b"a;b\n\"1\",2\n", b';'),
            Err(QuoteError::AfterClose { line: 2 })
        );
    }

    #[test]
    fn checking_in_pieces_gives_the_same_answer_as_at_once() {
        let text = b"a,b\n\"x\"\"y\",2\r\n\"q\r\n\",3\n4,\"5\"z\n";
        let whole = check_str(text, b',');
        for split in 0..text.len() {
            let mut check = QuoteCheck::new(&[][..], b',');
            let result = check
                .check(&text[..split])
                .and_then(|()| check.check(&text[split..]))
                .and_then(|()| check.finish());
            assert_eq!(result, whole, "split at {split}");
        }
    }

    /// The rules field by field, as RFC 4180 states them: what the checker
    /// must answer, however it finds its way through the bytes.
    fn reference(text: &[u8], delim: u8) -> Result<(), QuoteError> {
        let skip = (0..=BOM.len())
            .rev()
            .find(|&n| text.starts_with(&BOM[..n]))
            .unwrap_or(0);
        let (mut i, mut line) = (skip, 1);
        while i < text.len() {
            if text[i] == b'"' {
                let opened = line;
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err(QuoteError::Unclosed { line: opened }),
                        Some(b'"') if text.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break i += 1,
                        Some(b'\n') => (line, i) = (line + 1, i + 1),
                        Some(_) => i += 1,
                    }
                }
                while text.get(i) == Some(&b'\r') {
                    i += 1;
                }
                match text.get(i) {
                    None => return Ok(()),
                    Some(b'\n') => (line, i) = (line + 1, i + 1),
                    Some(&b) if b == delim => i += 1,
                    Some(_) => return Err(QuoteError::AfterClose { line: opened }),
                }
            } else {
                while i < text.len() && text[i] != delim && text[i] != b'\n' {
                    if text[i] == b'"' {
                        return Err(QuoteError::InUnquoted { line });
                    }
                    i += 1;
                }
                if text.get(i) == Some(&b'\n') {
                    line += 1;
                }
                i += 1;
            }
        }
        Ok(())
    }

    #[test]
    fn the_checker_answers_as_the_rules_do_whole_or_in_pieces() {
        let pieces: [&[u8]; 9] = [b"a", b"bc", b",", b";", b"\"", b"\"\"", b"\n", b"\r", b" "];
        arbtest::arbtest(|u| {
            let mut text = Vec::new();
            if u.ratio(1, 8)? {
                text.extend_from_slice(&BOM[..u.int_in_range(1..=3)?]);
            }
            for _ in 0..u.int_in_range(0..=24)? {
                text.extend_from_slice(pieces[u.choose_index(pieces.len())?]);
            }
            let delim = if u.ratio(1, 4)? { b';' } else { b',' };
            let whole = check_str(&text, delim);
            assert_eq!(
                whole,
                reference(&text, delim),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
            let split = u.int_in_range(0..=text.len())?;
            let mut check = QuoteCheck::new(&[][..], delim);
            let pieces = check
                .check(&text[..split])
                .and_then(|()| check.check(&text[split..]))
                .and_then(|()| check.finish());
            assert_eq!(pieces, whole, "split at {split}");
            Ok(())
        })
        .budget_ms(300);
    }
}
