//! Which input column feeds which payload field, resolved once against the
//! header row so each data row is only indexed (xsv's `Selection`).

use std::collections::BTreeMap;

use super::FIELDS;

/// A payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `user_id`.
    UserId,
    /// `first_name`.
    FirstName,
    /// `last_name`.
    LastName,
    /// `phone_number`.
    PhoneNumber,
    /// `locale`.
    Locale,
}

impl Field {
    /// All fields, in payload order.
    const ALL: [Field; 5] = [
        Field::UserId,
        Field::FirstName,
        Field::LastName,
        Field::PhoneNumber,
        Field::Locale,
    ];

    /// The payload (and default column) name.
    fn name(self) -> &'static str {
        FIELDS[self as usize]
    }

    /// Look a field up by its payload name.
    pub(crate) fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// user_id and first_name must have a column.
    fn is_required(self) -> bool {
        matches!(self, Field::UserId | Field::FirstName)
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The column name expected for each field: the default names, overridden by
/// `--map` / the config file's `[columns]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    names: BTreeMap<Field, String>,
}

impl Default for ColumnSpec {
    fn default() -> Self {
        ColumnSpec {
            names: Field::ALL
                .into_iter()
                .map(|f| (f, f.name().to_string()))
                .collect(),
        }
    }
}

impl ColumnSpec {
    /// Use `header` for `field`.
    pub fn map(&mut self, field: Field, header: impl Into<String>) {
        self.names.insert(field, header.into());
    }

    /// The header name expected for `field`.
    pub(crate) fn header_for(&self, field: Field) -> &str {
        self.names.get(&field).map_or(field.name(), String::as_str)
    }
}

/// Field → column index, resolved against one header row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    idx: [Option<usize>; 5],
}

/// Why a header row cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    #[error("missing required column '{column}' for {field} (found: {found})")]
    Missing {
        field: Field,
        column: String,
        found: String,
    },
    #[error("column '{column}' appears more than once (columns {first} and {second})")]
    Ambiguous {
        column: String,
        first: usize,
        second: usize,
    },
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

impl ColumnMap {
    /// Match header cells (trimmed, case-insensitive) to the spec's names.
    pub(crate) fn resolve(headers: &[String], spec: &ColumnSpec) -> Result<ColumnMap, ColumnError> {
        let mut idx = [None; 5];
        for field in Field::ALL {
            let want = norm(spec.header_for(field));
            let mut found = None;
            for (i, h) in headers.iter().enumerate() {
                if norm(h) == want {
                    if let Some(first) = found {
                        return Err(ColumnError::Ambiguous {
                            column: super::printable(spec.header_for(field)).into_owned(),
                            first: first + 1,
                            second: i + 1,
                        });
                    }
                    found = Some(i);
                }
            }
            if found.is_none() && field.is_required() {
                return Err(ColumnError::Missing {
                    field,
                    column: super::printable(spec.header_for(field)).into_owned(),
                    found: headers
                        .iter()
                        .map(|h| super::printable(h))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            idx[field as usize] = found;
        }
        Ok(ColumnMap { idx })
    }

    /// Column index of `field`, if the input has it.
    pub(crate) fn index(&self, field: Field) -> Option<usize> {
        self.idx[field as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_names_match_case_insensitively_and_trimmed() {
        let map = ColumnMap::resolve(
            &headers(&[" First_Name ", "USER_ID", "extra", "Locale"]),
            &ColumnSpec::default(),
        )
        .unwrap();
        assert_eq!(map.index(Field::UserId), Some(1));
        assert_eq!(map.index(Field::FirstName), Some(0));
        assert_eq!(map.index(Field::LastName), None);
        assert_eq!(map.index(Field::Locale), Some(3));
    }

    #[test]
    fn mapping_overrides_default_names() {
        let mut spec = ColumnSpec::default();
        spec.map(Field::UserId, "Customer ID");
        spec.map(Field::FirstName, "Given Name");
        let map =
            ColumnMap::resolve(&headers(&["customer id", "given name", "user_id"]), &spec).unwrap();
        assert_eq!(map.index(Field::UserId), Some(0));
        assert_eq!(map.index(Field::FirstName), Some(1));
    }

    #[test]
    fn missing_required_column_names_it() {
        let err = ColumnMap::resolve(&headers(&["user_id", "last_name"]), &ColumnSpec::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required column 'first_name' for first_name (found: user_id, last_name)"
        );
    }

    #[test]
    fn duplicate_header_is_ambiguous() {
        let err = ColumnMap::resolve(
            &headers(&["user_id", "first_name", "User_Id"]),
            &ColumnSpec::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ColumnError::Ambiguous {
                first: 1,
                second: 3,
                ..
            }
        ));
    }
}
