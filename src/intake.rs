//! Intake: the stage before any network — read a record, validate and map
//! it, and catch in-file duplicate user_ids. Each data row comes out as a
//! [`Step`]: either already final (`invalid`, `duplicate`) or a payload to send.
//!
//! Duplicates are found with a set of 64-bit fingerprints of the user_ids
//! that were accepted (`crate::fpset`: about 7 bytes an id at 10M rows, no
//! whole-set resize), so memory stays small at millions of rows. The
//! fingerprint is SipHash-1-3 under a key drawn at random for each run, so
//! no input can be built to collide: two distinct ids share a fingerprint
//! with probability at most n²/2⁶⁵ (~3·10⁻⁶ at 10M rows; README
//! "Performance").

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use csv::ByteRecord;

use crate::api::model::Payload;
use crate::fpset::FpSet;
use crate::input::{InputError, InputReader};
use crate::outcome::{Outcome, Status};
use crate::rowset::RowSet;
use crate::settings::{InputSettings, RunSettings};
use crate::shard::Shard;
use crate::validate::{Validated, Validator};

mod pool;

/// The in-file duplicate filter: fingerprints of the user_ids accepted so far.
#[derive(Default)]
struct Dedup {
    seen: FpSet,
    /// The fingerprint's key, random for each run.
    key: RandomState,
}

impl Dedup {
    /// Record `user_id`; false when an earlier row had it.
    fn claim(&mut self, user_id: &str) -> bool {
        self.seen.insert(self.key.hash_one(user_id))
    }

    /// Turn a validated row into its step: invalid, duplicate, or to send.
    fn decide(&mut self, row: u64, v: Validated) -> Result<(u64, Payload), Outcome> {
        match v.result {
            Err(invalid) => Err(Outcome::local(
                row,
                v.user_id,
                Status::Invalid,
                Some(invalid.to_string()),
            )),
            Ok(payload) if self.claim(&payload.user().user_id) => Ok((row, payload)),
            Ok(_) => Err(Outcome::local(
                row,
                v.user_id,
                Status::Duplicate,
                Some("user_id already appeared in an earlier row; not sent".into()),
            )),
        }
    }
}

/// One data row after intake. Borrows the reader's record buffer; clone the
/// record only when it must outlive the next call.
pub enum Step<'a> {
    /// Final without sending (invalid or duplicate).
    Local(Outcome, &'a ByteRecord),
    /// Valid and first of its user_id: to be sent.
    Send {
        /// 1-based data-row number.
        row: u64,
        /// The payload to send, and so the endpoint.
        payload: Payload,
        /// The row as read.
        raw: &'a ByteRecord,
    },
}

/// What an earlier part of a resumed run finished, as intake needs it.
#[derive(Debug, Default)]
pub(crate) struct Earlier {
    /// Rows final and successful: skipped.
    pub(crate) done: RowSet,
    /// Rows the API rejected: not sent again, replayed with their raw record.
    pub(crate) rejected: HashMap<u64, Rejected>,
}

/// A `rejected` row of the earlier run, replayed into failures.csv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub(crate) user_id: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) attempts: u32,
    pub(crate) error: String,
}

/// Reader + validator + duplicate filter.
pub struct Intake {
    reader: InputReader,
    validator: Arc<Validator>,
    seen: Dedup,
    rec: ByteRecord,
    /// On `--resume`: what the earlier part of the run finished.
    resume: Option<Earlier>,
    /// Validation on one thread per core (see [`Intake::validate_in_parallel`]).
    pool: Option<pool::Pool>,
    /// `--shard`: rows of other shards are passed over.
    shard: Option<Shard>,
    /// Rows passed over as another shard's.
    other_shards: u64,
}

/// What becomes of a validated row that is not skipped.
enum Decision {
    Local(Outcome),
    Send { row: u64, payload: Payload },
}

impl Intake {
    /// Open the run's input and build the intake stage for its columns.
    pub(crate) fn open(settings: &RunSettings) -> Result<Intake, InputError> {
        let mut intake = Intake::open_input(&InputSettings {
            input: settings.input.clone(),
            read: settings.read.clone(),
            validate: settings.validate.clone(),
        })?;
        intake.shard = settings.shard;
        Ok(intake)
    }

    /// Data rows read that are this run's: all of them, or its shard's.
    pub(crate) fn rows_read(&self) -> u64 {
        self.reader.rows_read() - self.other_shards
    }

    /// Open an input as `run` reads it (`state import` reads its input so)
    /// and build the intake stage for its columns.
    pub(crate) fn open_input(input: &InputSettings) -> Result<Intake, InputError> {
        let reader = InputReader::open(input.input.clone(), &input.read)?;
        let validator = Validator::new(
            input.validate.clone(),
            reader.columns().clone(),
            reader.headers().to_vec(),
        );
        Ok(Intake::new(reader, validator))
    }

    /// Wrap an opened reader and the validator for its columns.
    pub fn new(reader: InputReader, validator: Validator) -> Intake {
        Intake {
            reader,
            validator: Arc::new(validator),
            seen: Dedup::default(),
            rec: ByteRecord::new(),
            resume: None,
            pool: None,
            shard: None,
            other_shards: 0,
        }
    }

    /// Size the duplicate filter for about `rows` data rows (the input's
    /// newlines), this shard's share of them with `--shard`, so that it is
    /// allocated once ([`FpSet::with_capacity`]).
    pub(crate) fn expect_rows(&mut self, rows: u64) {
        let rows = match self.shard {
            Some(shard) => rows / u64::from(shard.count()),
            None => rows,
        };
        self.seen.seen = FpSet::with_capacity(rows);
    }

    /// Skip the rows an earlier part of the run finished: successes produce
    /// no step (their results.csv lines are kept), rejected rows come back as
    /// their recorded outcome (failures.csv is rebuilt from the input).
    pub(crate) fn resume_from(&mut self, state: Earlier) {
        let nothing = state.done.is_empty() && state.rejected.is_empty();
        self.resume = (!nothing).then_some(state);
    }

    /// Validate on `workers` threads from here on, in batches: for inputs
    /// read as fast as they come (a dry run, or a regular file), not a slow
    /// stdin or pipe, whose rows would wait for a batch to fill.
    pub(crate) fn validate_in_parallel(&mut self, workers: usize) {
        self.pool = Some(pool::Pool::start(self.validator.clone(), workers));
    }

    /// The next data row, or `None` at the end of the input.
    pub fn next_step(&mut self) -> Result<Option<Step<'_>>, InputError> {
        let decision = loop {
            let (row, v, unterminated) = match &mut self.pool {
                Some(pool) => match pool.next(&mut self.reader)? {
                    Some(r) => (r.row, r.validated, r.unterminated),
                    None => return Ok(None),
                },
                None => match self.reader.read_row(&mut self.rec)? {
                    Some(row) => {
                        let v = self.validator.validate(&self.rec);
                        (row, v, self.reader.row_unterminated())
                    }
                    None => return Ok(None),
                },
            };
            // None: finished by an earlier part of the run, no step.
            if let Some(d) = self.decide(row, v, unterminated) {
                break d;
            }
        };
        let raw = match &self.pool {
            Some(pool) => pool.record().unwrap_or(&self.rec),
            None => &self.rec,
        };
        Ok(Some(match decision {
            Decision::Local(o) => Step::Local(o, raw),
            Decision::Send { row, payload } => Step::Send { row, payload, raw },
        }))
    }

    /// The shard's filter, resume's skips, the unterminated-quote override
    /// and the duplicate filter, in input order.
    fn decide(&mut self, row: u64, mut v: Validated, unterminated: bool) -> Option<Decision> {
        if let Some(shard) = self.shard
            && !shard.owns(&v.user_id)
        {
            self.other_shards += 1;
            return None;
        }
        if let Some(resume) = &mut self.resume {
            if resume.done.contains(row) {
                // A success of the earlier part still claims its user_id.
                if let Ok(payload) = v.result {
                    self.seen.claim(&payload.user().user_id);
                }
                return None;
            }
            if let Some(r) = resume.rejected.remove(&row) {
                if let Ok(payload) = v.result {
                    self.seen.claim(&payload.user().user_id);
                }
                return Some(Decision::Local(Outcome {
                    row,
                    user_id: r.user_id,
                    status: Status::Rejected,
                    http_status: r.http_status,
                    attempts: r.attempts,
                    error: Some(r.error),
                    duration: std::time::Duration::ZERO,
                    address: None,
                }));
            }
        }
        if unterminated {
            v.result = Err(crate::validate::Invalid::unterminated());
        }
        Some(match self.seen.decide(row, v) {
            Ok((row, payload)) => Decision::Send { row, payload },
            Err(outcome) => Decision::Local(outcome),
        })
    }

    /// The underlying reader (headers, digest, rows read).
    pub fn reader(&self) -> &InputReader {
        &self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputSource, ReadOptions};
    use crate::validate::ValidateOptions;
    use std::io::Write;

    #[test]
    fn duplicates_invalids_and_sends() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"user_id,first_name\nu1,Ann\nu2,\nu1,Bob\nu2,Cy\n")
            .unwrap();
        let reader =
            InputReader::open(InputSource::Path(f.path().into()), &ReadOptions::default()).unwrap();
        let validator = Validator::new(
            ValidateOptions::default(),
            reader.columns().clone(),
            reader.headers().to_vec(),
        );
        let mut intake = Intake::new(reader, validator);
        let mut got = vec![];
        while let Some(step) = intake.next_step().unwrap() {
            got.push(match step {
                Step::Local(o, _) => (o.row, o.status),
                Step::Send { row, .. } => (row, Status::Valid),
            });
        }
        // An invalid row does not claim its user_id: row 4 is sent.
        assert_eq!(
            got,
            [
                (1, Status::Valid),
                (2, Status::Invalid),
                (3, Status::Duplicate),
                (4, Status::Valid)
            ]
        );
    }
}
