//! Opening a manifest safely: never blocking on a special file, refusing
//! anything that is not a regular file, and bounding how much is read.

use super::error::ManifestError;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What kind of thing sits at a path that should hold a manifest, for messages.
pub fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// The file error for a manifest path that is not a readable regular file.
pub fn not_a_file(rel: &str, what: &str) -> ManifestError {
    ManifestError::file(
        rel,
        format!(
            "is {what}, not a regular file; its customers keep their previous state (replace it with a file, or remove it to remove them)"
        ),
    )
}

/// The file error for an I/O failure while opening or reading a manifest.
pub fn io_error(rel: &str, err: &io::Error) -> ManifestError {
    let hint = match err.kind() {
        io::ErrorKind::PermissionDenied => "check its permissions",
        io::ErrorKind::NotFound => "it disappeared while being read; the next scan looks again",
        _ => "its customers keep their previous state",
    };
    if err.raw_os_error() == Some(libc::ELOOP) {
        return ManifestError::file(
            rel,
            "is a symbolic link loop; its customers keep their previous state (point the link at a file)",
        );
    }
    ManifestError::file(rel, format!("cannot be read: {err}; {hint}"))
}

/// Opens a manifest for reading without blocking (a FIFO would otherwise hang
/// the scan) and checks, on the open handle, that it is a regular file no
/// larger than `max_size`. The returned reader fails once more than `max_size`
/// bytes come out of it (a file that grows while read).
pub fn open(path: &Path, rel: &str, max_size: u64) -> Result<Limited<File>, ManifestError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| io_error(rel, &err))?;
    let meta = file.metadata().map_err(|err| io_error(rel, &err))?;
    if !meta.is_file() {
        return Err(not_a_file(rel, describe(meta.file_type())));
    }
    if meta.len() > max_size {
        return Err(too_large(rel, max_size));
    }
    Ok(Limited {
        inner: file,
        left: max_size,
    })
}

pub fn too_large(rel: &str, max_size: u64) -> ManifestError {
    ManifestError::file(
        rel,
        format!(
            "is larger than manifests.max_file_size ({max_size} bytes); split it, or raise the limit; its customers keep their previous state"
        ),
    )
}

/// A reader that refuses to yield more than a fixed number of bytes.
pub struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R> Limited<R> {
    /// Yields at most `left` bytes of `inner`.
    pub fn new(inner: R, left: u64) -> Self {
        Self { inner, left }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The error a [`Limited`] reader returns past its limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "grew past manifests.max_file_size while it was read; its customers keep their previous state"
)]
pub struct TooLarge;

/// Whether a csv error is a [`Limited`] reader's refusal.
pub fn too_large_error(err: &::csv::Error) -> bool {
    match err.kind() {
        ::csv::ErrorKind::Io(io) => io.get_ref().is_some_and(|e| e.is::<TooLarge>()),
        _ => false,
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, so that growth past the limit shows.
        let want = buf.len().min(self.left.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(io::Error::new(io::ErrorKind::InvalidData, TooLarge));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_reader_refuses_bytes_past_its_limit() {
        let mut ok = Limited {
            inner: &b"abc"[..],
            left: 3,
        };
        let mut out = Vec::new();
        ok.read_to_end(&mut out).expect("three bytes fit");
        assert_eq!(out, b"abc");
        let mut over = Limited {
            inner: &b"abcd"[..],
            left: 3,
        };
        let err = over.read_to_end(&mut Vec::new()).expect_err("four do not");
        assert!(err.get_ref().is_some_and(|e| e.is::<TooLarge>()));
    }
}
