//! Reading the customer CSV: the byte stream (encoding, BOM, delimiter) in
//! `reader`, and the header → payload-field resolution in `columns`.

mod columns;
mod reader;

pub use columns::{ColumnMap, ColumnSpec, Field};
pub use reader::{
    InputDigest, InputError, InputReader, InputSource, ReadOptions, encoding_for_label,
};

/// Payload fields, in the order of SPEC "Input and mapping".
pub const FIELDS: [&str; 5] = [
    "user_id",
    "first_name",
    "last_name",
    "phone_number",
    "locale",
];

/// Extra columns that a failures.csv carries after the input's own columns.
pub const ERROR_COLUMNS: [&str; 2] = ["error_status", "error_message"];
