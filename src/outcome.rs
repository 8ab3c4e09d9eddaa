//! The one record every stage ends in: each data row of the input produces
//! exactly one [`Outcome`], which the report recorder writes to results.csv.

use std::time::Duration;

use serde::Serialize;

/// Final status of a row (docs/reports.md "Reports").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// 200 from the API: the user was created by this run.
    Created,
    /// The API said the user_id is already taken: a success.
    Exists,
    /// Failed local validation; not sent.
    Invalid,
    /// An earlier row of the same input had this user_id; not sent.
    Duplicate,
    /// The API answered a final 4xx.
    Rejected,
    /// Transient errors outlasted the retries, or the run stopped first.
    Failed,
    /// Dry run: would be sent.
    Valid,
    /// State store: already provisioned with the same payload; not sent.
    Unchanged,
    /// State store: provisioned earlier with a different payload; not sent.
    Changed,
    /// State store: provisioned earlier with the same user fields but another
    /// address; sent again through the address endpoint (an upsert) and
    /// answered 200.
    Updated,
}

impl Status {
    /// Every status, in report order.
    pub(crate) const ALL: [Status; 10] = [
        Status::Created,
        Status::Exists,
        Status::Invalid,
        Status::Duplicate,
        Status::Rejected,
        Status::Failed,
        Status::Valid,
        Status::Unchanged,
        Status::Changed,
        Status::Updated,
    ];

    /// The word used in results.csv and summary.json.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Exists => "exists",
            Status::Invalid => "invalid",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Valid => "valid",
            Status::Unchanged => "unchanged",
            Status::Changed => "changed",
            Status::Updated => "updated",
        }
    }

    /// Parse the word written by [`Status::as_str`].
    pub(crate) fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Rows with this status go to failures.csv.
    pub(crate) fn is_failure(self) -> bool {
        matches!(self, Status::Invalid | Status::Rejected | Status::Failed)
    }

    /// A final success a resumed run keeps and does not do again.
    pub(crate) fn is_done(self) -> bool {
        matches!(
            self,
            Status::Created
                | Status::Exists
                | Status::Duplicate
                | Status::Unchanged
                | Status::Changed
                | Status::Updated
        )
    }

    /// Index into per-status counter arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the tool keeps of an address endpoint's 200 answer (read in
/// `api::model`): the validated address and the long-distance flag, each
/// `None` when the answer did not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatedAddress {
    /// `address_line_1` as the partner answered.
    pub address_line_1: Option<String>,
    /// `postal_code` as the partner answered.
    pub postal_code: Option<String>,
    /// `long_distance_delivery`.
    pub long_distance_delivery: Option<bool>,
}

/// What happened to one data row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// 1-based data-row number (the header is not counted).
    pub row: u64,
    /// The trimmed user_id, or the raw cell when it could not be read.
    pub user_id: String,
    /// The row's final status.
    pub status: Status,
    /// HTTP status of the last answer, if any.
    pub http_status: Option<u16>,
    /// Requests sent for this row (0 when not sent).
    pub attempts: u32,
    /// Why the row is not a plain success.
    pub error: Option<String>,
    /// Time from the row's first attempt to its final status.
    pub(crate) duration: Duration,
    /// The address as the partner validated it (address rows answered 200).
    /// Boxed: most outcomes have none, and outcomes travel in batches.
    pub address: Option<Box<ValidatedAddress>>,
}

impl Outcome {
    /// An outcome for a row that was never sent.
    pub(crate) fn local(
        row: u64,
        user_id: impl Into<String>,
        status: Status,
        error: Option<String>,
    ) -> Self {
        Outcome {
            row,
            user_id: user_id.into(),
            status,
            http_status: None,
            attempts: 0,
            error,
            duration: Duration::ZERO,
            address: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("nope"), None);
    }

    #[test]
    fn failures_are_invalid_rejected_failed() {
        let failing: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_failure()).collect();
        assert_eq!(failing, [Status::Invalid, Status::Rejected, Status::Failed]);
    }
}
