//! The source stage: finds manifest files and reads them into validated
//! [`ManifestRow`]s plus located [`ManifestError`]s. Nothing here knows about
//! the state database or Paystar.

mod build;
mod csvfile;
pub mod csvsplit;
pub mod discover;
mod error;
pub mod fields;
pub mod git;
pub mod open;
pub mod quotes;
mod row;
mod sort;
pub mod watch;
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
    pub delimiter: u8,
    /// `manifests.csv.columns`: a field and the normalised header that means it.
    pub columns: Vec<(Field, String)>,
    /// `manifests.max_file_size`: a bigger manifest is a file error.
    pub max_file_size: u64,
}

/// `manifests.max_file_size` unless configured: 256 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            default_business_unit: None,
            delimiter: b',',
            columns: Vec::new(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
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
        Format::Csv => {
            let handle = handle.into_inner();
            let size = handle
                .metadata()
                .map_err(|err| open::io_error(&file.rel, &err))?
                .len();
            csvsplit::parse(
                &handle,
                size,
                &file.rel,
                file_idx,
                opts,
                csvsplit::SPLIT_FROM,
            )
        }
        Format::Yaml => {
            let mut bytes = Vec::with_capacity(file.stat.size.min(opts.max_file_size) as usize);
            BufReader::new(handle)
                .read_to_end(&mut bytes)
                .map_err(|err| match err.get_ref() {
                    Some(inner) if inner.is::<open::TooLarge>() => {
                        ManifestError::file(&file.rel, open::TooLarge.to_string())
                    }
                    _ => open::io_error(&file.rel, &err),
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ManifestError::file(&file.rel, "is not valid UTF-8; save it as UTF-8")
            })?;
            yamlfile::parse(&text, &file.rel, file_idx, opts)
        }
    }
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
    yamlfile::parse_in_full(text, file, 0, opts)
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
        Format::Csv => csvfile::parse(bytes, file, 0, opts),
        Format::Yaml => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ManifestError::file(file, "is not valid UTF-8; save it as UTF-8"))?;
            yamlfile::parse(text, file, 0, opts)
        }
    }
}
