//! Spreadsheet formula-injection neutralising, and report files created
//! private (mode 0600) because they hold customer ids and error details.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Prefix a cell we write with `'` when a spreadsheet would read it as a
/// formula (starts with `= + - @`, tab or CR). Only for cells the tool
/// writes; the input's own cells in failures.csv stay verbatim.
pub(crate) fn neutralize(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// Create (or truncate) `path` for writing with mode 0600, also when it
/// already existed with wider permissions.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let f = opts.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    {
        opts.open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_neutralised() {
        for s in ["=1+1", "+1555", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralize(s), format!("'{s}"), "{s:?}");
        }
        for s in ["abc", "1+1", "", " =x", "'=x"] {
            assert_eq!(neutralize(s), s);
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_are_created_0600_even_over_a_wider_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private(&p).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
