//! Which input column feeds which payload field, resolved once against the
//! header row so each data row is only indexed (xsv's `Selection`).
//!
//! A field left at its default name also matches the usual export names of
//! it (aliases: `Street`, `Zip`, `Town`, …) when no column has the default
//! name; a field mapped explicitly (`--map`, `[columns]`) matches only its
//! mapped name.

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
    /// `address_line_1`, the street address.
    AddressLine1,
    /// `address_line_2`.
    AddressLine2,
    /// `address_type`, e.g. `residential`.
    AddressType,
    /// `postal_code`: a US ZIP or a Canadian postal code.
    PostalCode,
    /// `city`.
    City,
}

/// Number of fields.
const N_FIELDS: usize = 10;

impl Field {
    /// All fields, in payload order.
    const ALL: [Field; N_FIELDS] = [
        Field::UserId,
        Field::FirstName,
        Field::LastName,
        Field::PhoneNumber,
        Field::Locale,
        Field::AddressLine1,
        Field::AddressLine2,
        Field::AddressType,
        Field::PostalCode,
        Field::City,
    ];

    /// The address fields.
    pub(crate) const ADDRESS: [Field; 5] = [
        Field::AddressLine1,
        Field::AddressLine2,
        Field::AddressType,
        Field::PostalCode,
        Field::City,
    ];

    /// Usual export names of the field, matched (like the default name)
    /// only while the field is not mapped explicitly.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::AddressLine1 => &["street", "address 1", "address line 1", "address1"],
            Field::AddressLine2 => &["address 2", "address line 2", "address2"],
            Field::PostalCode => &["zip", "zip code", "zipcode", "postcode", "postal code"],
            Field::City => &["town"],
            _ => &[],
        }
    }

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
    idx: [Option<usize>; N_FIELDS],
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
    #[error(
        "columns '{first}' and '{second}' could both be {field}; map one with --map {field}=HEADER"
    )]
    TwoAliases {
        field: Field,
        first: String,
        second: String,
    },
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The one column named `name` (trimmed, case-insensitive); an error when
/// two are.
fn find(headers: &[String], name: &str) -> Result<Option<usize>, ColumnError> {
    let want = norm(name);
    let mut found = None;
    for (i, h) in headers.iter().enumerate() {
        if norm(h) == want {
            if let Some(first) = found {
                return Err(ColumnError::Ambiguous {
                    column: super::printable(name).into_owned(),
                    first: first + 1,
                    second: i + 1,
                });
            }
            found = Some(i);
        }
    }
    Ok(found)
}

impl ColumnMap {
    /// Match header cells (trimmed, case-insensitive) to the spec's names;
    /// a field at its default name falls back to its aliases.
    pub(crate) fn resolve(headers: &[String], spec: &ColumnSpec) -> Result<ColumnMap, ColumnError> {
        let mut idx = [None; N_FIELDS];
        for field in Field::ALL {
            let name = spec.header_for(field);
            let mut found = find(headers, name)?;
            if found.is_none() && name == field.name() {
                for alias in field.aliases() {
                    let Some(i) = find(headers, alias)? else {
                        continue;
                    };
                    if let Some(first) = found {
                        return Err(ColumnError::TwoAliases {
                            field,
                            first: super::printable(&headers[first]).into_owned(),
                            second: super::printable(&headers[i]).into_owned(),
                        });
                    }
                    found = Some(i);
                }
            }
            if found.is_none() && field.is_required() {
                return Err(ColumnError::Missing {
                    field,
                    column: super::printable(name).into_owned(),
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

    /// True when the input has a column for any address field.
    pub(crate) fn has_address(&self) -> bool {
        Field::ADDRESS.iter().any(|f| self.index(*f).is_some())
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
    fn address_columns_by_name_or_alias() {
        let map = ColumnMap::resolve(
            &headers(&[
                "user_id",
                "first_name",
                "Street",
                "ZIP Code",
                "Town",
                "Address 2",
            ]),
            &ColumnSpec::default(),
        )
        .unwrap();
        assert_eq!(map.index(Field::AddressLine1), Some(2));
        assert_eq!(map.index(Field::PostalCode), Some(3));
        assert_eq!(map.index(Field::City), Some(4));
        assert_eq!(map.index(Field::AddressLine2), Some(5));
        assert!(map.has_address());
        for (alias, field) in [
            ("address 1", Field::AddressLine1),
            ("zip", Field::PostalCode),
            ("Postcode", Field::PostalCode),
        ] {
            let map = ColumnMap::resolve(
                &headers(&["user_id", "first_name", alias]),
                &ColumnSpec::default(),
            )
            .unwrap();
            assert_eq!(map.index(field), Some(2), "{alias}");
        }
        // The canonical name wins over an alias.
        let map = ColumnMap::resolve(
            &headers(&["user_id", "first_name", "zip", "postal_code"]),
            &ColumnSpec::default(),
        )
        .unwrap();
        assert_eq!(map.index(Field::PostalCode), Some(3));
        // No address column: none.
        let map = ColumnMap::resolve(&headers(&["user_id", "first_name"]), &ColumnSpec::default())
            .unwrap();
        assert!(!map.has_address());
    }

    #[test]
    fn two_aliases_or_a_mapped_field_do_not_guess() {
        let err = ColumnMap::resolve(
            &headers(&["user_id", "first_name", "Zip", "Postcode"]),
            &ColumnSpec::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "columns 'Zip' and 'Postcode' could both be postal_code; map one with --map postal_code=HEADER"
        );
        let mut spec = ColumnSpec::default();
        spec.map(Field::PostalCode, "Post");
        let map = ColumnMap::resolve(&headers(&["user_id", "first_name", "Zip"]), &spec).unwrap();
        assert_eq!(map.index(Field::PostalCode), None);
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
