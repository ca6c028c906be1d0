//! A large CSV file read as two parts on two threads.
//!
//! The file is split after the first line break past its middle that lies
//! outside every quoted field: one with an even number of quotes before it
//! (with strict quoting a quote only opens a field, doubles inside one, or
//! closes it). Each part then holds whole records, and the parts' rows, row
//! errors and rejected keys, one after the other, are the whole file's (a
//! row's line is where it starts in its part, after any empty lines the csv
//! reader skipped, plus the line breaks before the part).
//!
//! If either part has a file error (bad quoting, bad UTF-8, growth past the
//! size limit, no customers) the file is read again from its start in one part,
//! so that every file error reads exactly as the one-part reader says it.

use super::csvfile::{self, Dialect};
use super::open::Limited;
use super::row::FileIdx;
use super::{ManifestError, ParseOptions, ParsedFile};
use std::io::{self, BufReader, Read};

/// Files smaller than this are read in one part: a second thread would not pay.
pub const SPLIT_FROM: u64 = 1024 * 1024;

/// How far past the middle a split point is looked for.
const SEARCH: u64 = 4 * 1024 * 1024;

const BUFFER: usize = 256 * 1024;

/// Bytes read by position, so that two threads can read one open file.
pub trait Positional: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Positional for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl Positional for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Reads `src` from `pos` up to `end` (or its end).
struct Part<'a, S: ?Sized> {
    src: &'a S,
    pos: u64,
    end: u64,
}

impl<S: Positional + ?Sized> Read for Part<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.end.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if room == 0 {
            return Ok(0);
        }
        loop {
            match self.src.read_at(&mut buf[..room], self.pos) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

/// Parses `src` (`size` bytes long when it was opened) as
/// [`csvfile::parse`] would, in two parts on two threads when it has at least
/// `split_from` bytes.
pub fn parse<S: Positional + ?Sized>(
    src: &S,
    size: u64,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    dialect: Dialect,
    split_from: u64,
) -> Result<ParsedFile, ManifestError> {
    let whole = || {
        let all = Part {
            src,
            pos: 0,
            end: u64::MAX,
        };
        let limited = Limited::new(all, opts.max_file_size);
        csvfile::parse(
            BufReader::with_capacity(BUFFER, limited),
            file,
            file_idx,
            opts,
            dialect,
        )
    };
    if size < split_from.max(2) {
        return whole();
    }
    let split = match split_point(src, size) {
        Ok(Some(split)) => split,
        // No split point near the middle, or a read error the one-part reader reports.
        Ok(None) | Err(_) => return whole(),
    };
    // The csv reader drops a byte order mark where it starts reading: a line
    // that starts with one (mid-file, where it is text) is no place to start
    // the second part (found by the csv_manifest fuzz target).
    let mut next = [0u8; 3];
    if src
        .read_at(&mut next, split.at)
        .is_ok_and(|n| next[..n] == b"\xEF\xBB\xBF"[..n] && n > 0)
    {
        return whole();
    }
    match in_two(src, &split, size, file, file_idx, opts, dialect) {
        Some(parsed) => Ok(parsed),
        None => whole(),
    }
}

/// Where the second part starts, and how many lines come before it.
struct Split {
    at: u64,
    lines_before: u32,
}

/// The first line break at or past the middle with an even number of quotes
/// before it, if there is one within [`SEARCH`] bytes and before the end.
fn split_point<S: Positional + ?Sized>(src: &S, size: u64) -> io::Result<Option<Split>> {
    let middle = size / 2;
    let mut part = Part {
        src,
        pos: 0,
        end: middle.saturating_add(SEARCH).min(size),
    };
    let mut buf = vec![0u8; BUFFER];
    let (mut pos, mut quotes, mut lines) = (0u64, 0u64, 0u64);
    loop {
        let n = part.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let chunk = &buf[..n];
        // Before the middle, only counts matter.
        let before = usize::try_from(middle.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(n);
        quotes += memchr::memchr_iter(b'"', &chunk[..before]).count() as u64;
        lines += memchr::memchr_iter(b'\n', &chunk[..before]).count() as u64;
        for (i, &byte) in chunk[before..].iter().enumerate() {
            match byte {
                b'"' => quotes += 1,
                b'\n' => {
                    lines += 1;
                    let at = pos + (before + i) as u64 + 1;
                    if quotes % 2 == 0 && at < size {
                        return Ok(u32::try_from(lines)
                            .ok()
                            .map(|lines_before| Split { at, lines_before }));
                    }
                }
                _ => {}
            }
        }
        pos += n as u64;
    }
}

/// The two parts, each on a thread; `None` if either has a file error (or a
/// thread could not be had).
fn in_two<S: Positional + ?Sized>(
    src: &S,
    split: &Split,
    size: u64,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    dialect: Dialect,
) -> Option<ParsedFile> {
    let head = Part {
        src,
        pos: 0,
        end: split.at,
    };
    let mut csv = csvfile::reader_for(BufReader::with_capacity(BUFFER, head), dialect);
    let (columns, mut parsed) = csvfile::header(&mut csv, file, opts, dialect).ok()?;
    // Room for the whole file's rows, so that the second part's are appended
    // without moving the first's (pages never written cost no memory).
    let estimate = (u64::from(split.lines_before) * size / split.at) * 11 / 10 + 1024;
    parsed.rows.reserve(usize::try_from(estimate).unwrap_or(0));
    // The second part's share of the estimate: its rows do not grow by doubling.
    let tail_estimate = estimate.saturating_sub(estimate * split.at / size);
    let (head, tail) = std::thread::scope(|s| {
        let tail = std::thread::Builder::new()
            .name("csv-part".into())
            .spawn_scoped(s, || {
                let rest = Part {
                    src,
                    pos: split.at,
                    end: u64::MAX,
                };
                let limited = Limited::new(rest, opts.max_file_size.saturating_sub(split.at));
                let mut csv =
                    csvfile::reader_for(BufReader::with_capacity(BUFFER, limited), dialect);
                let mut tail = ParsedFile::default();
                tail.rows
                    .reserve(usize::try_from(tail_estimate).unwrap_or(0));
                csvfile::rows(
                    &mut csv,
                    &columns,
                    split.lines_before,
                    file,
                    file_idx,
                    opts,
                    &mut tail,
                )
                .map(|()| tail)
            });
        let head = csvfile::rows(&mut csv, &columns, 0, file, file_idx, opts, &mut parsed);
        let tail = tail.map(|t| match t.join() {
            Ok(tail) => tail,
            // A panic while parsing is a bug: it is the caller's, as in one part.
            Err(panic) => std::panic::resume_unwind(panic),
        });
        (head, tail)
    });
    head.ok()?;
    let tail = tail.ok()?.ok()?;
    parsed.rows.extend(tail.rows);
    parsed.errors.extend(tail.errors);
    parsed.rejected_keys.extend(tail.rejected_keys);
    parsed.keyless_rejects += tail.keyless_rejects;
    parsed.warnings.extend(tail.warnings);
    csvfile::no_customers(parsed, file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Format, parse_bytes};

    fn opts() -> ParseOptions {
        ParseOptions {
            default_business_unit: Some("water-bill-pay".into()),
            ..ParseOptions::default()
        }
    }

    /// 2,000 customers; every tenth has a quoted name with a line break and quotes in it.
    fn big_file() -> String {
        let mut text = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
        for i in 0..2_000 {
            if i % 10 == 0 {
                text.push_str(&format!(
                    "A{i},\"Jo \"\"J\"\"\nAnn\",\"Lee, Jr\",a{i}@example.com,true\n"
                ));
            } else {
                text.push_str(&format!("A{i},Jo,Lee,a{i}@example.com,\n"));
            }
        }
        text
    }

    fn lines(parsed: &ParsedFile) -> Vec<(String, u32)> {
        parsed
            .rows
            .iter()
            .map(|r| (r.key().to_string(), r.line))
            .collect()
    }

    #[test]
    fn a_file_splits_after_a_line_break_outside_quotes_and_reads_as_in_one_part() {
        let text = big_file();
        let bytes = text.as_bytes();
        let split = split_point(bytes, bytes.len() as u64)
            .unwrap()
            .expect("a split point");
        assert!(split.at as usize >= bytes.len() / 2);
        assert_eq!(bytes[split.at as usize - 1], b'\n');
        let before = &bytes[..split.at as usize];
        assert_eq!(memchr::memchr_iter(b'"', before).count() % 2, 0);
        assert_eq!(
            split.lines_before as usize,
            memchr::memchr_iter(b'\n', before).count()
        );
        let two = in_two(
            bytes,
            &split,
            bytes.len() as u64,
            "a.csv",
            0,
            &opts(),
            Dialect::COMMA,
        )
        .expect("two parts");
        let one = parse_bytes(bytes, Format::Csv, "a.csv", &opts()).unwrap();
        // The names with a line break are row errors, in both.
        assert_eq!(two.rows.len(), 1_800);
        assert_eq!(lines(&two), lines(&one));
        assert_eq!(two.rows, one.rows);
        assert_eq!(two.errors, one.errors);
        assert_eq!(two.rejected_keys, one.rejected_keys);
    }

    /// Both reads of `bytes`, split anywhere from the middle on.
    fn both(
        bytes: &[u8],
    ) -> (
        Result<ParsedFile, ManifestError>,
        Result<ParsedFile, ManifestError>,
    ) {
        let two = parse(
            bytes,
            bytes.len() as u64,
            "a.csv",
            0,
            &opts(),
            Dialect::COMMA,
            0,
        );
        (parse_bytes(bytes, Format::Csv, "a.csv", &opts()), two)
    }

    #[test]
    fn a_part_that_starts_at_or_just_after_an_empty_line_numbers_its_rows_as_one_part_does() {
        // Found by the csv_manifest fuzz target: the csv reader numbered a record that
        // follows empty lines from the first of them, so a part starting there
        // numbered its first record one line later than the one-part read did (and
        // the one-part read was the one off: rows are numbered by their own line now).
        let found = include_bytes!("../../fuzz/seeds/csv_manifest/split-after-blank-line.csv");
        let (one, two) = both(found);
        assert_eq!(one, two);
        let mut text = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
        for i in 0..200 {
            text.push_str(&format!("A{i},Jo,Lee,bad{i},\n\n"));
            if i % 3 == 0 {
                text.push_str("B,Jo,Lee,b@example.com,\n");
            }
        }
        let (one, two) = both(text.as_bytes());
        assert_eq!(one, two);
        // Every line followed by an empty one.
        let every = "accountNumber,firstName,lastName,emailAddress,autopay\n\nA1,Jo,Lee,bad,\n\nA2,Jo,Lee,bad,\n\n";
        let bytes = every.as_bytes();
        assert!(split_point(bytes, bytes.len() as u64).unwrap().is_some());
        let (one, two) = both(bytes);
        assert_eq!(one, two);
        let lines: Vec<Option<u32>> = two.unwrap().errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(3), Some(5)]);
    }

    #[test]
    fn a_byte_order_mark_at_the_start_of_the_second_part_stays_text_as_in_one_part() {
        // Found by the csv_manifest fuzz target: the csv reader drops a BOM where
        // it starts reading, so a part that started with one read it away.
        let found = include_bytes!("../../fuzz/seeds/csv_manifest/bom-at-the-split.csv");
        let one = parse_bytes(found, Format::Csv, "a.csv", &opts());
        let two = crate::manifest::parse_csv_in_parts(found, "a.csv", &opts(), 0);
        assert_eq!(one, two);
        let mut text = String::from("accountNumber,firstName,lastName,emailAddress,autopay\n");
        for i in 0..4 {
            text.push_str(&format!("\u{feff}A{i},Jo,Lee,a{i}@example.com,\n"));
        }
        let (one, two) = both(text.as_bytes());
        assert_eq!(one, two);
    }

    #[test]
    fn row_errors_in_the_second_part_name_their_lines_in_the_file() {
        let mut text = big_file();
        text.push_str("B1,Jo,Lee,not-an-email,\n");
        let bytes = text.as_bytes();
        let two = parse(
            bytes,
            bytes.len() as u64,
            "a.csv",
            0,
            &opts(),
            Dialect::COMMA,
            0,
        )
        .unwrap();
        let one = parse_bytes(bytes, Format::Csv, "a.csv", &opts()).unwrap();
        assert_eq!(two.errors.len(), 201);
        assert_eq!(two.errors, one.errors);
        let last = two.errors.last().unwrap();
        assert_eq!(last.line, Some(text.matches('\n').count() as u32));
        assert_eq!(last.account.as_deref(), Some("B1"));
    }

    #[test]
    fn a_file_error_in_the_second_part_reads_as_the_one_part_reader_says_it() {
        for damage in [
            "B1,\"Jo,Lee,b@example.com,\n",
            "B1,J\"o,Lee,b@example.com,\n",
        ] {
            let mut text = big_file();
            text.push_str(damage);
            let bytes = text.as_bytes();
            let two = parse(
                bytes,
                bytes.len() as u64,
                "a.csv",
                0,
                &opts(),
                Dialect::COMMA,
                0,
            )
            .unwrap_err();
            let one = parse_bytes(bytes, Format::Csv, "a.csv", &opts()).unwrap_err();
            assert_eq!(two, one);
            assert!(two.line.is_some_and(|l| l > 2_000), "{two:?}");
        }
    }
}
