//! One CSV record → the Connect payload, or the reason it cannot be sent.
//!
//! The payload is chosen here, once: a row with an address (`address_line_1`
//! and `postal_code`) is a [`Payload::WithAddress`] for the address endpoint,
//! a row with neither a [`Payload::User`] for create-user. Later stages only
//! carry the endpoint and the bytes. An input without address columns never
//! looks at them.
//!
//! Pure and per-row: a bad row is data (`Invalid`), never an `Err` that ends
//! the run. Phone numbers go through libphonenumber (rlibphonenumber) and are
//! always sent in E.164; locales through ICU4X's `icu_locale_core`, which
//! also canonicalises their case (`EN-us` → `en-US`).

use std::borrow::Cow;

use csv::ByteRecord;
use icu_locale_core::Locale;
use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, enums::Region};

use crate::api::model::{
    Address, CreateUser, FORBIDDEN_NAME_CHARS, Payload, canonical_postal_code,
};
use crate::input::{ColumnMap, Field};

/// Options of validation that come from the command line.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// Region for numbers written without `+country`.
    phone_region: Region,
    /// Canonical tag sent when a row's locale is blank.
    default_locale: Option<String>,
    /// `--require-address`: a row without an address is invalid.
    require_address: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            phone_region: Region::US,
            default_locale: None,
            require_address: false,
        }
    }
}

/// Why `--phone-region` or `--default-locale` is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// `--phone-region`, as given.
    #[error("--phone-region '{0}' is not a two-letter region code (e.g. US, GB, CA)")]
    Region(String),
    /// `--default-locale`, as given.
    #[error("--default-locale '{0}' is not a well-formed language tag (e.g. en-US)")]
    Locale(String),
}

impl ValidateOptions {
    /// Build from the raw option values, checking both.
    pub fn new(phone_region: &str, default_locale: Option<&str>) -> Result<Self, OptionError> {
        let region = Region::from_code(&phone_region.trim().to_ascii_uppercase())
            .map_err(|_| OptionError::Region(phone_region.to_string()))?;
        // A region code the metadata knows nothing of would make every number invalid.
        if PHONE_NUMBER_UTIL
            .get_country_code_for_region(region)
            .is_none()
        {
            return Err(OptionError::Region(phone_region.to_string()));
        }
        let default_locale = match default_locale.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(tag) => {
                Some(normalize_locale(tag).map_err(|_| OptionError::Locale(tag.to_string()))?)
            }
        };
        Ok(ValidateOptions {
            phone_region: region,
            default_locale,
            require_address: false,
        })
    }

    /// `--require-address`: a row without an address is invalid.
    pub(crate) fn require_address(mut self, yes: bool) -> Self {
        self.require_address = yes;
        self
    }
}

/// Why a row was not sent: the field (if one is to blame) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    field: Option<Field>,
    reason: Cow<'static, str>,
}

impl Invalid {
    fn field(field: Field, reason: impl Into<Cow<'static, str>>) -> Self {
        Invalid {
            field: Some(field),
            reason: reason.into(),
        }
    }

    /// The last row of a file that ends inside a quoted field.
    pub(crate) fn unterminated() -> Self {
        Invalid::row("unterminated quote: the file ends inside a quoted field (check the quoting)")
    }

    fn row(reason: impl Into<Cow<'static, str>>) -> Self {
        Invalid {
            field: None,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The result of validating one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Validated {
    /// The trimmed user_id (lossy for bytes that are not UTF-8), for reports.
    pub(crate) user_id: String,
    pub(crate) result: Result<Payload, Invalid>,
}

/// Validates records of one input: options plus the resolved columns.
#[derive(Clone, Debug)]
pub struct Validator {
    opts: ValidateOptions,
    columns: ColumnMap,
    headers: Vec<String>,
    /// The input has an address column: resolved once, so a file without
    /// one pays nothing per row.
    has_address: bool,
}

impl Validator {
    /// A validator for records whose header is `headers`.
    pub fn new(opts: ValidateOptions, columns: ColumnMap, headers: Vec<String>) -> Self {
        let has_address = columns.has_address();
        Validator {
            opts,
            columns,
            headers,
            has_address,
        }
    }

    /// Validate and map one record.
    pub(crate) fn validate(&self, rec: &ByteRecord) -> Validated {
        let user_id = match self.columns.index(Field::UserId).and_then(|i| rec.get(i)) {
            Some(b) => String::from_utf8_lossy(b).trim().to_string(),
            None => String::new(),
        };
        let result = self.check(rec);
        Validated { user_id, result }
    }

    fn check(&self, rec: &ByteRecord) -> Result<Payload, Invalid> {
        self.check_shape(rec)?;
        let get = |field: Field| -> &str {
            self.columns
                .index(field)
                .and_then(|i| rec.get(i))
                .and_then(|b| std::str::from_utf8(b).ok())
                .map_or("", str::trim)
        };

        let user_id = get(Field::UserId);
        check_user_id(user_id)?;

        let first_name = get(Field::FirstName);
        if first_name.is_empty() {
            return Err(Invalid::field(Field::FirstName, "required"));
        }
        check_name(Field::FirstName, first_name)?;
        let last_name = non_blank(get(Field::LastName));
        if let Some(n) = last_name {
            check_name(Field::LastName, n)?;
        }

        let phone_number = match non_blank(get(Field::PhoneNumber)) {
            None => None,
            Some(p) => Some(self.phone(p)?),
        };
        let locale = self.locale(get(Field::Locale))?;
        let address = if self.has_address {
            self.address(get)?
        } else {
            None
        };
        if address.is_none() && self.opts.require_address {
            return Err(Invalid::field(
                Field::AddressLine1,
                "required (--require-address): the row has no address",
            ));
        }

        let user = CreateUser {
            user_id: user_id.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.map(str::to_string),
            phone_number,
            locale,
        };
        Ok(match address {
            None => Payload::User(user),
            Some(a) => Payload::WithAddress(user, Box::new(a)),
        })
    }

    /// The row's address: `None` when it has neither `address_line_1` nor
    /// `postal_code`; the two are required together, and the postal code
    /// must be a US ZIP or a Canadian postal code (sent in canonical form).
    /// Deliverability (a P.O. box, say) is the partner's to judge.
    fn address<'r>(&self, get: impl Fn(Field) -> &'r str) -> Result<Option<Address>, Invalid> {
        let line_1 = get(Field::AddressLine1);
        let postal = get(Field::PostalCode);
        match (line_1.is_empty(), postal.is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => {
                return Err(Invalid::field(
                    Field::AddressLine1,
                    "required with postal_code",
                ));
            }
            (false, true) => {
                return Err(Invalid::field(
                    Field::PostalCode,
                    "required with address_line_1",
                ));
            }
            (false, false) => {}
        }
        for field in Field::ADDRESS {
            check_controls(field, get(field))?;
        }
        let postal_code = canonical_postal_code(postal).ok_or_else(|| {
            Invalid::field(
                Field::PostalCode,
                format!(
                    "'{}' is not a US ZIP code (94105, 94105-1234) or a Canadian postal code (K1A 0B1)",
                    crate::input::printable(postal)
                ),
            )
        })?;
        let optional = |f: Field| non_blank(get(f)).map(str::to_string);
        Ok(Some(Address {
            address_line_1: line_1.to_string(),
            address_line_2: optional(Field::AddressLine2),
            address_type: optional(Field::AddressType),
            postal_code,
            city: optional(Field::City),
        }))
    }

    /// The record as a whole: as many fields as the header, all UTF-8.
    fn check_shape(&self, rec: &ByteRecord) -> Result<(), Invalid> {
        if rec.len() != self.headers.len() {
            return Err(Invalid::row(format!(
                "expected {} fields, found {} (check quoting and the delimiter)",
                self.headers.len(),
                rec.len()
            )));
        }
        if std::str::from_utf8(rec.as_slice()).is_err() {
            let (i, _) = rec
                .iter()
                .enumerate()
                .find(|(_, c)| std::str::from_utf8(c).is_err())
                .unwrap_or((0, b""));
            let column = self.headers.get(i).map_or("?", String::as_str);
            return Err(Invalid::row(format!(
                "invalid UTF-8 in column '{}' (use --encoding for legacy exports)",
                crate::input::printable(column)
            )));
        }
        Ok(())
    }

    /// The locale to send: the row's, canonicalised, or the default when blank.
    fn locale(&self, tag: &str) -> Result<Option<String>, Invalid> {
        match non_blank(tag) {
            None => Ok(self.opts.default_locale.clone()),
            Some(tag) => normalize_locale(tag).map(Some).map_err(|hint| {
                Invalid::field(
                    Field::Locale,
                    format!("'{tag}' is not a well-formed language tag{hint}"),
                )
            }),
        }
    }

    fn phone(&self, p: &str) -> Result<String, Invalid> {
        let region = self.opts.phone_region;
        let bad = || {
            Invalid::field(
                Field::PhoneNumber,
                format!("not a valid phone number for region {region}"),
            )
        };
        let number = PHONE_NUMBER_UTIL
            .parse(p, Some(region))
            .map_err(|_| bad())?;
        if !number.is_valid() {
            return Err(bad());
        }
        Ok(number.format_as(PhoneNumberFormat::E164).to_string())
    }
}

fn non_blank(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn check_user_id(user_id: &str) -> Result<(), Invalid> {
    if user_id.is_empty() {
        return Err(Invalid::field(Field::UserId, "required"));
    }
    check_controls(Field::UserId, user_id)?;
    // Bidi overrides and isolates make an id display as another one in
    // reports and consoles (Trojan-Source style); names may keep them.
    if let Some(c) = user_id
        .chars()
        .find(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(Invalid::field(
            Field::UserId,
            format!(
                "contains a bidirectional control character (U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

fn check_name(field: Field, name: &str) -> Result<(), Invalid> {
    if let Some(c) = name.chars().find(|c| FORBIDDEN_NAME_CHARS.contains(c)) {
        return Err(Invalid::field(
            field,
            format!("contains '{c}' (not allowed: / : < > $ % ?)"),
        ));
    }
    check_controls(field, name)
}

/// Control characters are refused; a line break gets its likely cause named,
/// since an unterminated quote swallows the following rows into one cell.
fn check_controls(field: Field, value: &str) -> Result<(), Invalid> {
    if value.contains(['\n', '\r']) {
        return Err(Invalid::field(
            field,
            "contains a line break (an unterminated quote takes in the rows after it: check the quoting)",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::field(field, "contains a control character"));
    }
    Ok(())
}

/// Canonical form of a language tag, or a hint for the error message.
fn normalize_locale(tag: &str) -> Result<String, String> {
    match Locale::normalize(tag) {
        Ok(s) => Ok(s.into_owned()),
        Err(_) => {
            let hyphenated = tag.replace('_', "-");
            Err(match Locale::normalize(&hyphenated) {
                Ok(s) if hyphenated != tag => format!(" (did you mean {s}?)"),
                _ => " (e.g. en-US)".to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ColumnSpec;

    fn validator(opts: ValidateOptions) -> Validator {
        let headers: Vec<String> = crate::input::FIELDS[..5]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let columns = ColumnMap::resolve(&headers, &ColumnSpec::default()).unwrap();
        Validator::new(opts, columns, headers)
    }

    fn check(fields: &[&str]) -> Result<CreateUser, String> {
        let rec = ByteRecord::from(fields.to_vec());
        validator(ValidateOptions::default())
            .validate(&rec)
            .result
            .map(Payload::into_user)
            .map_err(|e| e.to_string())
    }

    const ADDRESS_HEADER: [&str; 7] = [
        "user_id",
        "first_name",
        "Street",
        "address_line_2",
        "address_type",
        "Zip",
        "Town",
    ];

    fn check_address(opts: ValidateOptions, fields: &[&str]) -> Result<Payload, String> {
        let headers: Vec<String> = ADDRESS_HEADER.iter().map(|s| s.to_string()).collect();
        let columns = ColumnMap::resolve(&headers, &ColumnSpec::default()).unwrap();
        let rec = ByteRecord::from(fields.to_vec());
        Validator::new(opts, columns, headers)
            .validate(&rec)
            .result
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_row_with_an_address_goes_to_the_address_endpoint() {
        let p = check_address(
            ValidateOptions::default(),
            &[
                "u1",
                "Ann",
                " 1 Main St ",
                "",
                "residential",
                "k1a0b1",
                "Ottawa",
            ],
        )
        .unwrap();
        let Payload::WithAddress(user, address) = p else {
            panic!("expected an address payload")
        };
        assert_eq!(user.first_name, "Ann");
        assert_eq!(
            *address,
            Address {
                address_line_1: "1 Main St".into(),
                address_line_2: None,
                address_type: Some("residential".into()),
                postal_code: "K1A 0B1".into(),
                city: Some("Ottawa".into()),
            }
        );
        // Neither line 1 nor postal code: create-user, whatever else is set.
        let p = check_address(
            ValidateOptions::default(),
            &["u1", "Ann", "", "Apt 2", "", "", "X"],
        );
        assert!(matches!(p, Ok(Payload::User(_))), "{p:?}");
    }

    #[test]
    fn address_rules() {
        let opts = ValidateOptions::default;
        assert_eq!(
            check_address(opts(), &["u1", "Ann", "1 Main St", "", "", "", ""]).unwrap_err(),
            "postal_code: required with address_line_1"
        );
        assert_eq!(
            check_address(opts(), &["u1", "Ann", "", "", "", "94105", ""]).unwrap_err(),
            "address_line_1: required with postal_code"
        );
        for bad in ["9410", "941051", "ABC 123", "SW1A 1AA", "94105-12"] {
            assert_eq!(
                check_address(opts(), &["u1", "Ann", "1 Main St", "", "", bad, ""]).unwrap_err(),
                format!(
                    "postal_code: '{bad}' is not a US ZIP code (94105, 94105-1234) or a Canadian postal code (K1A 0B1)"
                )
            );
        }
        for good in ["94105", "94105-1234", "K1A 0B1", "h2x1y4"] {
            assert!(
                check_address(opts(), &["u1", "Ann", "1 Main St", "", "", good, ""]).is_ok(),
                "{good}"
            );
        }
        assert_eq!(
            check_address(opts(), &["u1", "Ann", "1 Main\u{7}St", "", "", "94105", ""])
                .unwrap_err(),
            "address_line_1: contains a control character"
        );
        assert!(
            check_address(
                opts(),
                &["u1", "Ann", "1 Main St", "", "", "94105", "Ott\nawa"]
            )
            .unwrap_err()
            .starts_with("city: contains a line break")
        );
    }

    #[test]
    fn require_address_makes_a_row_without_one_invalid() {
        let need = || ValidateOptions::default().require_address(true);
        assert_eq!(
            check_address(need(), &["u1", "Ann", "", "", "", "", ""]).unwrap_err(),
            "address_line_1: required (--require-address): the row has no address"
        );
        assert!(check_address(need(), &["u1", "Ann", "1 A St", "", "", "94105", ""]).is_ok());
        // Without address columns at all, too.
        let rec = ByteRecord::from(vec!["u1", "Ann", "", "", ""]);
        assert!(validator(need()).validate(&rec).result.is_err());
        assert!(
            validator(ValidateOptions::default())
                .validate(&rec)
                .result
                .is_ok()
        );
    }

    #[test]
    fn a_full_row_maps_to_the_payload() {
        let u = check(&[" js6000 ", " john ", "smith", "800-555-0100", "EN-us"]).unwrap();
        assert_eq!(
            u,
            CreateUser {
                user_id: "js6000".into(),
                first_name: "john".into(),
                last_name: Some("smith".into()),
                phone_number: Some("+18005550100".into()),
                locale: Some("en-US".into()),
            }
        );
    }

    #[test]
    fn blank_optionals_are_none() {
        let u = check(&["u1", "Ann", " ", "", ""]).unwrap();
        assert_eq!(u.last_name, None);
        assert_eq!(u.phone_number, None);
        assert_eq!(u.locale, None);
    }

    #[test]
    fn user_id_rules() {
        assert_eq!(
            check(&["  ", "Ann", "", "", ""]).unwrap_err(),
            "user_id: required"
        );
        assert_eq!(
            check(&["u\u{7}1", "Ann", "", "", ""]).unwrap_err(),
            "user_id: contains a control character"
        );
    }

    #[test]
    fn bidi_controls_are_refused_in_user_ids_only() {
        assert_eq!(
            check(&["u\u{202E}7", "Ann", "", "", ""]).unwrap_err(),
            "user_id: contains a bidirectional control character (U+202E)"
        );
        assert!(check(&["u7", "\u{2067}Ann", "", "", ""]).is_ok());
    }

    #[test]
    fn first_name_rules() {
        assert_eq!(
            check(&["u1", "", "", "", ""]).unwrap_err(),
            "first_name: required"
        );
        for c in ['/', ':', '<', '>', '$', '%', '?'] {
            let name = format!("An{c}n");
            assert_eq!(
                check(&["u1", &name, "", "", ""]).unwrap_err(),
                format!("first_name: contains '{c}' (not allowed: / : < > $ % ?)")
            );
        }
    }

    #[test]
    fn last_name_rules() {
        assert_eq!(
            check(&["u1", "Ann", "O:Neil", "", ""]).unwrap_err(),
            "last_name: contains ':' (not allowed: / : < > $ % ?)"
        );
        assert!(check(&["u1", "Ann", "O'Neil-Smith", "", ""]).is_ok());
    }

    #[test]
    fn phone_numbers_in_common_forms_become_e164() {
        for p in [
            "(415) 555-2671",
            "415.555.2671",
            "415-555-2671",
            "4155552671",
            "+1 415 555 2671",
            "1-415-555-2671",
            "+14155552671",
        ] {
            let u = check(&["u1", "Ann", "", p, ""]).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(u.phone_number.as_deref(), Some("+14155552671"), "{p}");
        }
        let gb = check(&["u1", "Ann", "", "+44 20 7946 0958", ""]).unwrap();
        assert_eq!(gb.phone_number.as_deref(), Some("+442079460958"));
    }

    #[test]
    fn invalid_phone_numbers_are_rejected() {
        for p in ["555", "12345678901234567", "abc", "+1 000 000 0000"] {
            assert_eq!(
                check(&["u1", "Ann", "", p, ""]).unwrap_err(),
                "phone_number: not a valid phone number for region US",
                "{p}"
            );
        }
    }

    #[test]
    fn phone_region_changes_national_numbers() {
        let v = validator(ValidateOptions::new("gb", None).unwrap());
        let rec = ByteRecord::from(vec!["u1", "Ann", "", "020 7946 0958", ""]);
        assert_eq!(
            v.validate(&rec)
                .result
                .unwrap()
                .user()
                .phone_number
                .as_deref(),
            Some("+442079460958")
        );
        assert!(ValidateOptions::new("XX", None).is_err());
        assert!(ValidateOptions::new("USA", None).is_err());
    }

    #[test]
    fn locale_rules() {
        assert_eq!(
            check(&["u1", "Ann", "", "", "fr-ca"])
                .unwrap()
                .locale
                .as_deref(),
            Some("fr-CA")
        );
        assert_eq!(
            check(&["u1", "Ann", "", "", "en_US"]).unwrap_err(),
            "locale: 'en_US' is not a well-formed language tag (did you mean en-US?)"
        );
        assert_eq!(
            check(&["u1", "Ann", "", "", "english"]).unwrap_err(),
            "locale: 'english' is not a well-formed language tag (e.g. en-US)"
        );
    }

    #[test]
    fn default_locale_fills_blanks_only() {
        let v = validator(ValidateOptions::new("US", Some("en-us")).unwrap());
        let blank = ByteRecord::from(vec!["u1", "Ann", "", "", ""]);
        assert_eq!(
            v.validate(&blank).result.unwrap().user().locale.as_deref(),
            Some("en-US")
        );
        let set = ByteRecord::from(vec!["u1", "Ann", "", "", "es-MX"]);
        assert_eq!(
            v.validate(&set).result.unwrap().user().locale.as_deref(),
            Some("es-MX")
        );
        assert!(ValidateOptions::new("US", Some("not a tag")).is_err());
    }

    #[test]
    fn ragged_and_non_utf8_rows_are_invalid() {
        assert_eq!(
            check(&["u1", "Ann"]).unwrap_err(),
            "expected 5 fields, found 2 (check quoting and the delimiter)"
        );
        let rec = ByteRecord::from(vec![&b"u1"[..], b"J\xE9r", b"", b"", b""]);
        let v = validator(ValidateOptions::default()).validate(&rec);
        assert_eq!(v.user_id, "u1");
        assert_eq!(
            v.result.unwrap_err().to_string(),
            "invalid UTF-8 in column 'first_name' (use --encoding for legacy exports)"
        );
    }
}
