//! Payload rules of `POST /v2/fulfillment/users` and of the address endpoint
//! (`POST /v2/fulfillment/users/{user_id}/addresses`), as the Connect docs state
//! them, and the title-casing Connect applies to names in its answer. Pure
//! functions, so the handlers stay thin and the rules are unit-tested here.

use serde::Deserialize;

use crate::api::model::{
    AddressAnswer, ApiError, CreateUser, ErrorDetail, ErrorMeta, FORBIDDEN_NAME_CHARS,
    canonical_postal_code, codes,
};

/// The create-user body as received: every field optional, so a missing field
/// becomes a "can't be blank" error with its `meta.key` instead of a serde error.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserInput {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// One field error in the documented shape: code 1001 "invalid parameter",
/// with `meta.key` naming the field.
pub(crate) fn field_error(key: &str, code: u32, message: impl Into<String>) -> ApiError {
    ApiError {
        error: ErrorDetail {
            message: message.into(),
            code,
        },
        meta: Some(ErrorMeta {
            key: key.to_owned(),
        }),
    }
}

/// Checks every rule and returns the user as Connect would echo it (names
/// title-cased), or *all* field errors at once, in field order.
pub(crate) fn validate(input: UserInput) -> Result<CreateUser, Vec<ApiError>> {
    let mut errors = Vec::new();

    let user_id = input.user_id.unwrap_or_default();
    if user_id.trim().is_empty() {
        errors.push(blank("user_id"));
    }

    let first_name = input.first_name.unwrap_or_default();
    if first_name.trim().is_empty() {
        errors.push(blank("first_name"));
    }
    let names = NameFields {
        first_name: &first_name,
        last_name: input.last_name.as_deref(),
        phone_number: input.phone_number.as_deref(),
        locale: input.locale.as_deref(),
    };
    names.check(&mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CreateUser {
        user_id,
        first_name: title_case(&first_name),
        last_name: input.last_name.as_deref().map(title_case),
        phone_number: input.phone_number,
        locale: input.locale,
    })
}

/// The user's optional fields, checked by the same rules on both endpoints.
struct NameFields<'a> {
    first_name: &'a str,
    last_name: Option<&'a str>,
    phone_number: Option<&'a str>,
    locale: Option<&'a str>,
}

impl NameFields<'_> {
    /// Push the errors of the fields that are set (a blank first name is
    /// the caller's rule: required on create-user only).
    fn check(&self, errors: &mut Vec<ApiError>) {
        if let Some(e) = forbidden_chars("first_name", self.first_name) {
            errors.push(e);
        }
        if let Some(last) = self.last_name
            && let Some(e) = forbidden_chars("last_name", last)
        {
            errors.push(e);
        }
        if let Some(phone) = self.phone_number
            && !is_e164(phone)
        {
            errors.push(field_error(
                "phone_number",
                codes::INVALID_PARAMETER,
                "is invalid: must be in E.164 format, e.g. +18005550100",
            ));
        }
        if let Some(e) = self.locale.and_then(locale_error) {
            errors.push(e);
        }
    }
}

/// The address endpoint's body as received: every field optional, so a
/// missing one becomes a "can't be blank" error with its `meta.key`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AddressInput {
    #[serde(default)]
    address_line_1: Option<String>,
    #[serde(default)]
    address_line_2: Option<String>,
    #[serde(default)]
    address_type: Option<String>,
    #[serde(default)]
    postal_code: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// Why the address endpoint refuses a body.
#[derive(Debug)]
pub(crate) enum AddressRefusal {
    /// Field errors, all at once, in field order.
    Invalid(Vec<ApiError>),
    /// A well-formed address Connect does not deliver to (a P.O. box).
    Undeliverable(ApiError),
}

/// The user to create if the `user_id` is new (names title-cased, the
/// first name possibly blank: it is optional here) and the validated
/// address as answered, or why not.
pub(crate) struct CheckedAddress {
    pub(crate) user: CreateUser,
    pub(crate) answer: AddressAnswer,
}

/// Checks an address request for `user_id` (from the path). Format errors
/// first, all together; then deliverability. `long_distance` holds
/// postal-code prefixes (upper case, no spaces) flagged long-distance.
pub(crate) fn validate_address(
    user_id: &str,
    input: AddressInput,
    long_distance: &[String],
) -> Result<CheckedAddress, AddressRefusal> {
    let mut errors = Vec::new();
    if user_id.trim().is_empty() {
        errors.push(blank("user_id"));
    }
    let first_name = input.first_name.unwrap_or_default();
    NameFields {
        first_name: &first_name,
        last_name: input.last_name.as_deref(),
        phone_number: input.phone_number.as_deref(),
        locale: input.locale.as_deref(),
    }
    .check(&mut errors);
    let line_1 = input.address_line_1.unwrap_or_default();
    if line_1.trim().is_empty() {
        errors.push(blank("address_line_1"));
    }
    let postal = input.postal_code.unwrap_or_default();
    let canonical = if postal.trim().is_empty() {
        errors.push(blank("postal_code"));
        None
    } else {
        let c = canonical_postal_code(&postal);
        if c.is_none() {
            errors.push(field_error(
                "postal_code",
                codes::INVALID_PARAMETER,
                "is invalid: must be a US ZIP code or a Canadian postal code",
            ));
        }
        c
    };
    let Some(postal_code) = canonical.filter(|_| errors.is_empty()) else {
        return Err(AddressRefusal::Invalid(errors));
    };
    for (key, line) in [
        ("address_line_1", Some(line_1.as_str())),
        ("address_line_2", input.address_line_2.as_deref()),
    ] {
        if line.is_some_and(is_po_box) {
            return Err(AddressRefusal::Undeliverable(field_error(
                key,
                codes::INVALID_PARAMETER,
                "is undeliverable: P.O. boxes are not delivered to",
            )));
        }
    }
    let compact: String = postal_code.chars().filter(|c| *c != ' ').collect();
    let long_distance_delivery = long_distance
        .iter()
        .any(|p| compact.starts_with(p.as_str()));
    let tidy = |s: &str| title_case(&s.split_whitespace().collect::<Vec<_>>().join(" "));
    let optional = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Ok(CheckedAddress {
        user: CreateUser {
            user_id: user_id.to_owned(),
            first_name: title_case(&first_name),
            last_name: input.last_name.as_deref().map(title_case),
            phone_number: input.phone_number,
            locale: input.locale,
        },
        answer: AddressAnswer {
            user_id: user_id.to_owned(),
            address_line_1: tidy(&line_1),
            address_line_2: optional(input.address_line_2).map(|s| tidy(&s)),
            postal_code,
            city: optional(input.city).map(|s| tidy(&s)),
            address_type: optional(input.address_type),
            long_distance_delivery,
        },
    })
}

/// A P.O. box, as written in exports: `PO Box 12`, `P.O. Box`, `P O Box`,
/// `POBox`, `Post Office Box` (any case), as whole words.
fn is_po_box(line: &str) -> bool {
    let lower = line.to_lowercase().replace('.', " ");
    let words: Vec<&str> = lower.split_whitespace().collect();
    words.contains(&"pobox")
        || words.windows(2).any(|w| w == ["po", "box"])
        || words
            .windows(3)
            .any(|w| w == ["p", "o", "box"] || w == ["post", "office", "box"])
}

/// Normalise `--long-distance-prefixes` entries: upper case, no spaces.
pub(crate) fn long_distance_prefixes(prefixes: &[String]) -> Vec<String> {
    prefixes
        .iter()
        .map(|p| {
            p.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The error of a required field left blank.
fn blank(key: &str) -> ApiError {
    field_error(key, codes::INVALID_PARAMETER, "can't be blank")
}

/// The error of a `locale` that is not a tag of a known language, if it is not.
fn locale_error(locale: &str) -> Option<ApiError> {
    match icu_locale_core::Locale::try_from_str(locale) {
        Err(_) => Some(field_error(
            "locale",
            codes::INVALID_PARAMETER,
            "is invalid: must be an IETF language tag, e.g. en-US",
        )),
        // Well-formed is not enough for a server: the language must exist
        // (`US` parses as a language subtag, but there is no such language).
        Ok(tag) if !ISO_639_1.contains(&tag.id.language.as_str()) => Some(field_error(
            "locale",
            codes::INVALID_PARAMETER,
            format!("is not supported: unknown language '{}'", tag.id.language),
        )),
        Ok(_) => None,
    }
}

/// The two-letter ISO 639-1 language codes the sandbox accepts in `locale`.
const ISO_639_1: &[&str] = &[
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bh",
    "bi", "bm", "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da",
    "de", "dv", "dz", "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr",
    "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz",
    "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka", "kg", "ki", "kj",
    "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln",
    "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb",
    "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi",
    "pl", "ps", "pt", "qu", "rm", "rn", "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "si", "sk",
    "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "ti",
    "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk", "ur", "uz", "ve", "vi", "vo",
    "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
];

/// The "must not contain" rule for names; the message lists the offending
/// characters so a failures report tells the operator what to fix.
fn forbidden_chars(key: &str, value: &str) -> Option<ApiError> {
    let mut found = String::new();
    for c in value.chars().filter(|c| FORBIDDEN_NAME_CHARS.contains(c)) {
        if !found.contains(c) {
            found.push(c);
        }
    }
    if found.is_empty() {
        return None;
    }
    let all: String = FORBIDDEN_NAME_CHARS.iter().collect();
    Some(field_error(
        key,
        codes::INVALID_PARAMETER,
        format!("contains forbidden characters '{found}' (none of '{all}' are allowed)"),
    ))
}

/// A light E.164 check: `+`, then 8–15 digits, the first not zero. Deliberately
/// not a numbering-plan check: the sandbox only has to reject what Connect
/// rejects for format, and the client does the thorough validation.
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Title-cases a name the way Connect's example does (`john` → `John`): the first
/// letter of each word is upper-cased, where words are separated by whitespace,
/// `-` or `'` (`mary-ann o'neil` → `Mary-Ann O'Neil`). Other letters are kept
/// as given, so `McDonald` is not flattened to `Mcdonald`.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        if at_word_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = c.is_whitespace() || c == '-' || c == '\'';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(user_id: &str, first: &str) -> UserInput {
        UserInput {
            user_id: Some(user_id.into()),
            first_name: Some(first.into()),
            ..Default::default()
        }
    }

    fn keys(errors: &[ApiError]) -> Vec<(&str, u32)> {
        errors
            .iter()
            .map(|e| (e.meta.as_ref().map_or("", |m| m.key.as_str()), e.error.code))
            .collect()
    }

    #[test]
    fn unknown_languages_are_not_supported() {
        let mut i = input("u1", "ann");
        i.locale = Some("US".into());
        let errs = validate(i).unwrap_err();
        assert_eq!(keys(&errs), [("locale", codes::INVALID_PARAMETER)]);
        assert!(errs[0].error.message.contains("unknown language 'us'"));
        let mut i = input("u1", "ann");
        i.locale = Some("fr-CA".into());
        assert!(validate(i).is_ok());
    }

    fn address(line_1: &str, postal: &str) -> AddressInput {
        AddressInput {
            address_line_1: Some(line_1.into()),
            postal_code: Some(postal.into()),
            ..Default::default()
        }
    }

    fn prefixes() -> Vec<String> {
        long_distance_prefixes(&["995".into(), "x0 a".into()])
    }

    #[test]
    fn address_is_validated_and_answered_flat() {
        let mut i = address("  123  main st ", "k1a0b1");
        i.first_name = Some("ann".into());
        i.city = Some("ottawa".into());
        let ok = validate_address("u1", i, &prefixes()).unwrap();
        assert_eq!(ok.user.first_name, "Ann");
        assert_eq!(ok.answer.address_line_1, "123 Main St");
        assert_eq!(ok.answer.postal_code, "K1A 0B1");
        assert_eq!(ok.answer.city.as_deref(), Some("Ottawa"));
        assert!(!ok.answer.long_distance_delivery);
        // First name is optional on this endpoint.
        assert!(validate_address("u1", address("1 A St", "94105"), &prefixes()).is_ok());
    }

    #[test]
    fn long_distance_follows_the_prefixes() {
        let far = validate_address("u1", address("1 Tundra Rd", "99501"), &prefixes()).unwrap();
        assert!(far.answer.long_distance_delivery);
        let far = validate_address("u1", address("1 Ice Rd", "x0a 0h0"), &prefixes()).unwrap();
        assert!(far.answer.long_distance_delivery);
        let near = validate_address("u1", address("1 Main St", "94105"), &prefixes()).unwrap();
        assert!(!near.answer.long_distance_delivery);
        let none = validate_address("u1", address("1 Tundra Rd", "99501"), &[]).unwrap();
        assert!(!none.answer.long_distance_delivery);
    }

    #[test]
    fn address_field_errors_come_together() {
        let i = AddressInput {
            first_name: Some("a:b".into()),
            phone_number: Some("555".into()),
            postal_code: Some("SW1A 1AA".into()),
            ..Default::default()
        };
        let Err(AddressRefusal::Invalid(errs)) = validate_address("u1", i, &[]) else {
            panic!("expected field errors")
        };
        assert_eq!(
            keys(&errs),
            [
                ("first_name", codes::INVALID_PARAMETER),
                ("phone_number", codes::INVALID_PARAMETER),
                ("address_line_1", codes::INVALID_PARAMETER),
                ("postal_code", codes::INVALID_PARAMETER),
            ]
        );
        let Err(AddressRefusal::Invalid(errs)) =
            validate_address("u1", AddressInput::default(), &[])
        else {
            panic!("expected field errors")
        };
        assert_eq!(errs[1].error.message, "can't be blank");
        assert_eq!(
            errs[1].meta.as_ref().map(|m| m.key.as_str()),
            Some("postal_code")
        );
    }

    #[test]
    fn po_boxes_are_undeliverable() {
        for line in [
            "PO Box 12",
            "p.o. box 7",
            "P O BOX 3",
            "POBox 9",
            "Post Office Box 1",
        ] {
            let r = validate_address("u1", address(line, "94105"), &[]);
            let Err(AddressRefusal::Undeliverable(e)) = r else {
                panic!("{line}: expected undeliverable")
            };
            assert_eq!(
                e.to_string(),
                "address_line_1: is undeliverable: P.O. boxes are not delivered to (1001)"
            );
        }
        let mut i = address("1 Main St", "94105");
        i.address_line_2 = Some("PO Box 4".into());
        assert!(matches!(
            validate_address("u1", i, &[]),
            Err(AddressRefusal::Undeliverable(_))
        ));
        for fine in ["12 Tempo Box Lane", "1 Post Office Sq", "Box Hill Rd"] {
            assert!(
                validate_address("u1", address(fine, "94105"), &[]).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn title_case_examples() {
        assert_eq!(title_case("john"), "John");
        assert_eq!(title_case("smith"), "Smith");
        assert_eq!(title_case("mary-ann o'neil"), "Mary-Ann O'Neil");
        assert_eq!(title_case("McDonald"), "McDonald");
        assert_eq!(title_case("élodie  de la cruz"), "Élodie  De La Cruz");
        assert_eq!(title_case(""), "");
    }

    #[test]
    fn e164() {
        assert!(is_e164("+18005550100"));
        assert!(is_e164("+4915112345678"));
        assert!(!is_e164("18005550100"));
        assert!(!is_e164("+08005550100"));
        assert!(!is_e164("+1 800 555 0100"));
        assert!(!is_e164("+1234567"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164(""));
    }

    #[test]
    fn valid_user_is_title_cased_and_echoed() {
        let mut i = input("u1", "john");
        i.last_name = Some("smith".into());
        i.phone_number = Some("+18005550100".into());
        i.locale = Some("en-US".into());
        let u = validate(i).unwrap();
        assert_eq!(u.first_name, "John");
        assert_eq!(u.last_name.as_deref(), Some("Smith"));
        assert_eq!(u.phone_number.as_deref(), Some("+18005550100"));
        assert_eq!(u.locale.as_deref(), Some("en-US"));
    }

    #[test]
    fn every_forbidden_char_is_rejected_in_both_names() {
        for c in FORBIDDEN_NAME_CHARS {
            let mut i = input("u1", &format!("jo{c}hn"));
            i.last_name = Some(format!("sm{c}ith"));
            let errs = validate(i).unwrap_err();
            assert_eq!(
                keys(&errs),
                [
                    ("first_name", codes::INVALID_PARAMETER),
                    ("last_name", codes::INVALID_PARAMETER)
                ],
                "char {c}"
            );
            assert!(errs[0].error.message.contains(*c));
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let i = UserInput {
            user_id: Some("  ".into()),
            first_name: None,
            last_name: Some("a<b".into()),
            phone_number: Some("555-0100".into()),
            locale: Some("en_US".into()),
        };
        let errs = validate(i).unwrap_err();
        assert_eq!(
            keys(&errs),
            [
                ("user_id", codes::INVALID_PARAMETER),
                ("first_name", codes::INVALID_PARAMETER),
                ("last_name", codes::INVALID_PARAMETER),
                ("phone_number", codes::INVALID_PARAMETER),
                ("locale", codes::INVALID_PARAMETER),
            ]
        );
    }

    #[test]
    fn locales() {
        for ok in ["en", "en-US", "fr-CA", "zh-Hant-TW", "es-419"] {
            let mut i = input("u1", "a");
            i.locale = Some(ok.into());
            assert!(validate(i).is_ok(), "{ok}");
        }
        for bad in ["", "english", "en_US", "en-USA-", "-en"] {
            let mut i = input("u1", "a");
            i.locale = Some(bad.into());
            assert!(validate(i).is_err(), "{bad}");
        }
    }
}
