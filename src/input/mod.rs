//! Reading the customer CSV: the byte stream (encoding, BOM, delimiter) in
//! `reader`, and the header → payload-field resolution in `columns`.

mod columns;
mod reader;

pub(crate) use columns::ColumnMap;
pub use columns::{ColumnSpec, Field};
pub(crate) use reader::{Compression, InputDigest, InputError};
pub use reader::{InputReader, InputSource, ReadOptions, encoding_for_label};

/// Payload fields, in the order of README "Input format", then the
/// address fields of the address endpoint (issue #20).
pub(crate) const FIELDS: [&str; 10] = [
    "user_id",
    "first_name",
    "last_name",
    "phone_number",
    "locale",
    "address_line_1",
    "address_line_2",
    "address_type",
    "postal_code",
    "city",
];

/// Extra columns that a failures.csv carries after the input's own columns.
pub(crate) const ERROR_COLUMNS: [&str; 2] = ["error_status", "error_message"];

/// `s` with control characters escaped (`\u{1b}`), for echoing cells of an
/// untrusted file in messages: an ESC sequence must not reach a terminal, and
/// a line break must not split a one-line error.
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_controls_only() {
        assert_eq!(super::printable("Zoë"), "Zoë");
        assert_eq!(
            super::printable("a\x1b]0;x\x07\nb"),
            "a\\u{1b}]0;x\\u{7}\\nb"
        );
    }
}
