//! The source stage: finds manifest files and reads them into validated
//! [`ManifestRow`]s plus located [`ManifestError`]s. Nothing here knows about
//! the state database or Paystar.

mod build;
mod columns;
mod csvfile;
pub mod csvsplit;
mod dialect;
pub mod discover;
mod error;
pub mod fields;
pub mod git;
pub mod open;
pub mod quotes;
mod row;
mod sort;
pub mod watch;
mod xlsxfile;
mod yamldepth;
mod yamlfile;

pub use discover::{DiscoveredFile, FileStat, Format};
pub use error::{ErrorKind, ManifestError};
pub use row::{FileIdx, ManifestRow, RowValues};
pub use sort::{KeyPrefixes, KeyProbe, permute, sort_rows};

use crate::customer::CustomerKey;
use build::Rejected;
use fields::Field;
use std::io::{BufReader, Read};

/// Reader settings from `manifests.csv` and `paystar.default_business_unit`.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    pub default_business_unit: Option<String>,
    /// `manifests.csv.delimiter`; unset, each file's is found from its header
    /// (a `sep=` first line and `*.tsv` name their own).
    pub delimiter: Option<u8>,
    /// `manifests.csv.columns`: a field and the normalised header that means it.
    pub columns: Vec<(Field, String)>,
    /// `manifests.max_file_size`: a bigger manifest is a file error.
    pub max_file_size: u64,
    /// `manifests.csv.encoding` when it is not UTF-8: a CSV file without a
    /// byte order mark that is not valid UTF-8 is decoded with it.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// `manifests.xlsx.sheet`; unset, the workbook's first sheet.
    pub sheet: Option<String>,
}

/// `manifests.max_file_size` unless configured: 256 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            default_business_unit: None,
            delimiter: None,
            columns: Vec::new(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            encoding: None,
            sheet: None,
        }
    }
}

/// A file that could be read: its valid rows and its row errors.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedFile {
    pub rows: Vec<ManifestRow>,
    pub errors: Vec<ManifestError>,
    /// Keys of rejected rows: each keeps its previous desired state.
    pub rejected_keys: Vec<CustomerKey>,
    /// Rejected rows whose key could not be read. While there are any, nothing
    /// may count as removed from this file: the broken row might be that customer.
    pub keyless_rejects: u32,
    /// Non-fatal notes, such as ignored columns (one per file).
    pub warnings: Vec<String>,
}

impl ParsedFile {
    fn push(&mut self, outcome: Result<ManifestRow, Rejected>) {
        match outcome {
            Ok(row) => self.rows.push(row),
            Err(rejected) => {
                match rejected.key {
                    Some(key) => self.rejected_keys.push(key),
                    None => self.keyless_rejects += 1,
                }
                self.errors.extend(rejected.errors);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.rejected_keys.is_empty() && self.keyless_rejects == 0
    }
}

/// Reads one manifest. `Err` is a file error: the whole file is skipped and every
/// record it held before keeps its previous desired state.
pub fn parse_file(
    file: &DiscoveredFile,
    file_idx: FileIdx,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    let handle = open::open(&file.path, &file.rel, opts.max_file_size)?;
    match file.format {
        Format::Csv | Format::Tsv => {
            let handle = handle.into_inner();
            let size = handle
                .metadata()
                .map_err(|err| open::io_error(&file.rel, &err))?
                .len();
            dialect::parse(
                &handle,
                size,
                &file.rel,
                file_idx,
                opts,
                file.format,
                csvsplit::SPLIT_FROM,
            )
        }
        Format::Xlsx => xlsxfile::parse(
            read_all(handle, &file.rel, file.stat.size, opts)?,
            &file.rel,
            file_idx,
            opts,
        ),
        Format::Yaml => {
            let bytes = read_all(handle, &file.rel, file.stat.size, opts)?;
            yamlfile::parse_bytes(&bytes, &file.rel, file_idx, opts)
        }
    }
}

/// A whole manifest in memory, within `manifests.max_file_size`.
fn read_all(
    handle: open::Limited<std::fs::File>,
    rel: &str,
    size: u64,
    opts: &ParseOptions,
) -> Result<Vec<u8>, ManifestError> {
    let mut bytes = Vec::with_capacity(size.min(opts.max_file_size) as usize);
    BufReader::new(handle)
        .read_to_end(&mut bytes)
        .map_err(|err| match err.get_ref() {
            Some(inner) if inner.is::<open::TooLarge>() => {
                ManifestError::file(rel, open::TooLarge.to_string())
            }
            _ => open::io_error(rel, &err),
        })?;
    Ok(bytes)
}

/// Parses manifest text directly (tests and tools).
pub fn parse_str(
    text: &str,
    format: Format,
    file: &str,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    parse_bytes(text.as_bytes(), format, file, opts)
}

/// A YAML manifest read without the fast path for plain block documents, every
/// document through the full reader (fuzzing and tests compare the two).
pub fn parse_yaml_in_full(
    text: &str,
    file: &str,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    // As `parse_bytes` reads it: without a byte order mark, document by document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    yamlfile::parse_all_in_full(text, file, 0, opts)
}

/// A CSV or TSV file's records as the manifest reader splits them, each with
/// its line: the record layer alone, for comparing with other CSV readers
/// (tests and fuzzing).
pub fn csv_records(
    bytes: &[u8],
    format: Format,
    file: &str,
    opts: &ParseOptions,
) -> Result<Vec<(u32, Vec<String>)>, ManifestError> {
    dialect::records(bytes, file, opts, format)
}

/// A CSV manifest's bytes parsed as [`parse_file`] parses a file of at least
/// `split_from` bytes: in two parts on two threads (tests and fuzzing compare
/// this with the one-part read).
pub fn parse_csv_in_parts(
    bytes: &[u8],
    file: &str,
    opts: &ParseOptions,
    split_from: u64,
) -> Result<ParsedFile, ManifestError> {
    dialect::parse(
        bytes,
        bytes.len() as u64,
        file,
        0,
        opts,
        Format::Csv,
        split_from,
    )
}

/// Parses a manifest's bytes as [`parse_file`] would (tests, fuzzing, tools).
pub fn parse_bytes(
    bytes: &[u8],
    format: Format,
    file: &str,
    opts: &ParseOptions,
) -> Result<ParsedFile, ManifestError> {
    if bytes.len() as u64 > opts.max_file_size {
        return Err(open::too_large(file, opts.max_file_size));
    }
    match format {
        Format::Csv | Format::Tsv => {
            dialect::parse(bytes, bytes.len() as u64, file, 0, opts, format, u64::MAX)
        }
        Format::Xlsx => xlsxfile::parse(bytes.to_vec(), file, 0, opts),
        Format::Yaml => yamlfile::parse_bytes(bytes, file, 0, opts),
    }
}
