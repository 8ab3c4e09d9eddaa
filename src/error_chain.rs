//! One line for an error and its causes, for logs and reports. A leaf module,
//! so the API client can use it without reaching up to the top-level error.

/// `error: cause: cause` on one line, as anyhow's `{:#}` prints it.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}
