//! Which CSV a file is, found from its first bytes: its encoding (UTF-8 with
//! or without a BOM, UTF-16 by its BOM, or `manifests.csv.encoding`), its line
//! ends (a file whose lines end in CR alone, as Excel's "CSV (Macintosh)"
//! writes, is read with LF in their place) and its delimiter (a `sep=X` first
//! line, `*.tsv`, `manifests.csv.delimiter`, or the one of `,` `;` tab `|` that
//! yields the required columns).
//!
//! A UTF-8 file with LF or CRLF line ends, the common case, is read where it
//! lies, in two parts when it is big ([`csvsplit`]); the others are decoded
//! into memory first (at most `manifests.max_file_size`), line for line, so
//! every line number stays the file's.

use super::csvfile::{self, Dialect};
use super::csvsplit::{self, Positional};
use super::discover::Format;
use super::error::ManifestError;
use super::row::FileIdx;
use super::{ParseOptions, ParsedFile};
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE};

/// How much of a file is looked at to find its dialect.
const PREFIX: usize = 64 * 1024;

/// The delimiters a header is tried with, in this order.
pub const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Parses a CSV or TSV manifest of `size` bytes in whichever dialect it is written.
pub fn parse<S: Positional + ?Sized>(
    src: &S,
    size: u64,
    file: &str,
    file_idx: FileIdx,
    opts: &ParseOptions,
    format: Format,
    split_from: u64,
) -> Result<ParsedFile, ManifestError> {
    match prepare(src, size, file, opts, format)? {
        (None, dialect) => csvsplit::parse(src, size, file, file_idx, opts, dialect, split_from),
        (Some(bytes), dialect) => {
            let len = bytes.len() as u64;
            csvsplit::parse(&bytes[..], len, file, file_idx, opts, dialect, split_from)
        }
    }
}

/// Every record of a CSV or TSV file as the manifest reader splits it (each
/// with its line), found and decoded as [`parse`] does: the record layer alone,
/// for comparing with other readers.
pub fn records(
    bytes: &[u8],
    file: &str,
    opts: &ParseOptions,
    format: Format,
) -> Result<Vec<(u32, Vec<String>)>, ManifestError> {
    match prepare(bytes, bytes.len() as u64, file, opts, format)? {
        (None, dialect) => csvfile::records(bytes, file, dialect),
        (Some(decoded), dialect) => csvfile::records(&decoded[..], file, dialect),
    }
}

/// The file's dialect, and its text decoded into memory where it cannot be
/// read where it lies (`None`: UTF-8 with LF or CRLF line ends).
fn prepare<S: Positional + ?Sized>(
    src: &S,
    size: u64,
    file: &str,
    opts: &ParseOptions,
    format: Format,
) -> Result<(Option<Vec<u8>>, Dialect), ManifestError> {
    let prefix = read_at_most(src, PREFIX, file)?;
    let text = if let Some(encoding) = utf16_bom(&prefix) {
        let bytes = read_whole(src, size, file, opts)?;
        encoding.decode_with_bom_removal(&bytes).0.into_owned()
    } else if let Some(encoding) = opts.encoding {
        match String::from_utf8(read_whole(src, size, file, opts)?) {
            // A UTF-8 file is read as UTF-8 whatever the key says.
            Ok(text) => text,
            Err(err) => encoding.decode(err.as_bytes()).0.into_owned(),
        }
    } else if cr_line_ends(&prefix) {
        String::from_utf8(read_whole(src, size, file, opts)?).map_err(|_| not_utf8(file))?
    } else {
        let whole = prefix.len() as u64 >= size;
        return Ok((None, detect(&prefix, whole, file, opts, format)));
    };
    let mut bytes = text.into_bytes();
    if cr_line_ends(&bytes[..bytes.len().min(PREFIX)]) {
        lf_for_lone_cr(&mut bytes);
    }
    let head = &bytes[..bytes.len().min(PREFIX)];
    let dialect = detect(head, head.len() == bytes.len(), file, opts, format);
    Ok((Some(bytes), dialect))
}

/// The file error for bytes that are not UTF-8 when no encoding is configured.
pub fn not_utf8(file: &str) -> ManifestError {
    ManifestError::file(
        file,
        "is not valid UTF-8; export it as \"CSV UTF-8\" and save again, or set manifests.csv.encoding to the encoding it was saved in (e.g. windows-1252)",
    )
}

/// The encoding a UTF-16 byte order mark names.
fn utf16_bom(prefix: &[u8]) -> Option<&'static Encoding> {
    match prefix {
        [0xFF, 0xFE, ..] => Some(UTF_16LE),
        [0xFE, 0xFF, ..] => Some(UTF_16BE),
        _ => None,
    }
}

/// Whether the first line ends in a CR that no LF follows: the file's lines
/// end in CR alone.
pub fn cr_line_ends(prefix: &[u8]) -> bool {
    match memchr::memchr2(b'\r', b'\n', prefix) {
        Some(at) if prefix[at] == b'\r' => prefix.get(at + 1).is_some_and(|&b| b != b'\n'),
        _ => false,
    }
}

/// Every CR that no LF follows becomes an LF: one line break for another.
pub fn lf_for_lone_cr(bytes: &mut [u8]) {
    for i in 0..bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
            bytes[i] = b'\n';
        }
    }
}

/// The delimiter Excel's `sep=X` first line names.
pub fn sep_hint(prefix: &[u8]) -> Option<u8> {
    let text = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let line_end = memchr::memchr2(b'\r', b'\n', text).unwrap_or(text.len());
    match &text[..line_end] {
        [b's' | b'S', b'e' | b'E', b'p' | b'P', b'=', d] if d.is_ascii() && *d != b'"' => Some(*d),
        _ => None,
    }
}

/// The file's dialect from its first bytes (`whole` when that is all of it).
fn detect(prefix: &[u8], whole: bool, file: &str, opts: &ParseOptions, format: Format) -> Dialect {
    if let Some(delimiter) = sep_hint(prefix) {
        return Dialect {
            delimiter,
            sep_line: true,
        };
    }
    let fixed = match format {
        Format::Tsv => Some(b'\t'),
        _ => opts.delimiter,
    };
    if let Some(delimiter) = fixed {
        return Dialect {
            delimiter,
            sep_line: false,
        };
    }
    // Whole lines only: a record cut short reads as a quoting error.
    let cut = if whole {
        prefix
    } else {
        memchr::memrchr(b'\n', prefix).map_or(prefix, |at| &prefix[..=at])
    };
    let found = CANDIDATES.into_iter().find(|&delimiter| {
        let dialect = Dialect {
            delimiter,
            sep_line: false,
        };
        let mut csv = csvfile::reader_for(cut, dialect);
        csvfile::header(&mut csv, file, opts, dialect).is_ok()
    });
    // No header with any of them: the one that splits the first line most, so
    // that the error lists the columns as the file has them.
    let delimiter = found.unwrap_or_else(|| {
        let first = cut
            .split(|&b| b == b'\n')
            .find(|line| !line.trim_ascii().is_empty())
            .unwrap_or_default();
        CANDIDATES
            .into_iter()
            .rev()
            .max_by_key(|&d| memchr::memchr_iter(d, first).count())
            .filter(|&d| memchr::memchr(d, first).is_some())
            .unwrap_or(b',')
    });
    Dialect {
        delimiter,
        sep_line: false,
    }
}

/// Up to `max` bytes from the start of `src`.
fn read_at_most<S: Positional + ?Sized>(
    src: &S,
    max: usize,
    file: &str,
) -> Result<Vec<u8>, ManifestError> {
    let mut buf = vec![0u8; max];
    let mut filled = 0;
    while filled < max {
        match src.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(super::open::io_error(file, &err)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// All of `src`, refused past `manifests.max_file_size`.
fn read_whole<S: Positional + ?Sized>(
    src: &S,
    size: u64,
    file: &str,
    opts: &ParseOptions,
) -> Result<Vec<u8>, ManifestError> {
    let limit = usize::try_from(opts.max_file_size.saturating_add(1)).unwrap_or(usize::MAX);
    let bytes = read_at_most(
        src,
        limit.min(
            usize::try_from(size)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        ),
        file,
    )?;
    if bytes.len() as u64 > opts.max_file_size {
        return Err(ManifestError::file(file, super::open::TooLarge.to_string()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_that_ends_in_cr_alone_marks_a_macintosh_file() {
        assert!(cr_line_ends(b"a,b\rc,d\r"));
        assert!(!cr_line_ends(b"a,b\r\nc,d\r\n"));
        assert!(!cr_line_ends(b"a,b\nc,d\r"));
        assert!(
            !cr_line_ends(b"a,b\r"),
            "a CR at the end of what was read says nothing"
        );
        let mut bytes = b"a\rb\r\nc\r".to_vec();
        lf_for_lone_cr(&mut bytes);
        assert_eq!(bytes, b"a\nb\r\nc\n");
    }

    #[test]
    fn excels_sep_line_names_the_delimiter() {
        assert_eq!(sep_hint(b"sep=;\r\nAccount;First"), Some(b';'));
        assert_eq!(sep_hint(b"\xEF\xBB\xBFsep=,\n"), Some(b','));
        assert_eq!(sep_hint(b"sep=\t\n"), Some(b'\t'));
        assert_eq!(sep_hint(b"sep=;x\n"), None);
        assert_eq!(sep_hint(b"separator,a\n"), None);
    }
}
