//! Validation on one thread per core, rows kept in input order.
//!
//! The intake's thread reads a batch of records and hands it to validator
//! `k % n`; it takes batches back in the same turn, so rows come out in
//! input order with no reorder buffer. Batches are recycled, so the record
//! buffers are allocated once. Up to four batches per validator are in flight
//! while the intake works through the current one: with two in flight, a
//! 1M-row dry run was about 5 % slower than with four, since a validator
//! descheduled on a busy core left the others waiting.
//!
//! A batch is only handed over full (or at the end of the input), so this is
//! for inputs read as fast as they can be: a dry run, or a live run reading a
//! regular file. A live run reading stdin or a pipe validates each row as it
//! arrives instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use csv::ByteRecord;

use crate::input::{InputError, InputReader};
use crate::validate::{Validated, Validator};

/// Rows per batch.
const BATCH: usize = 1024;

/// Batches in flight per validator.
const DEPTH: usize = 4;

/// Consecutive rows on their way to a validator and back.
struct Batch {
    first_row: u64,
    len: usize,
    recs: Vec<ByteRecord>,
    validated: VecDeque<Validated>,
    /// Index of a row cut short by an unterminated quote at EOF.
    unterminated: Option<usize>,
    /// The read failed after these rows.
    error: Option<InputError>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            first_row: 0,
            len: 0,
            recs: (0..BATCH).map(|_| ByteRecord::new()).collect(),
            validated: VecDeque::with_capacity(BATCH),
            unterminated: None,
            error: None,
        }
    }

    /// Fill from `reader`; false when it read nothing and hit no error.
    fn fill(&mut self, reader: &mut InputReader) -> bool {
        self.len = 0;
        self.unterminated = None;
        while self.len < BATCH {
            match reader.read_row(&mut self.recs[self.len]) {
                Ok(Some(row)) => {
                    if self.len == 0 {
                        self.first_row = row;
                    }
                    if reader.row_unterminated() {
                        self.unterminated = Some(self.len);
                    }
                    self.len += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.len > 0 || self.error.is_some()
    }
}

/// One validated row, taken from the current batch.
pub(super) struct PoolRow {
    pub(super) row: u64,
    pub(super) validated: Validated,
    pub(super) unterminated: bool,
}

/// The validator threads and the batches in flight.
pub(super) struct Pool {
    to: Vec<SyncSender<Batch>>,
    from: Vec<Receiver<Batch>>,
    threads: Vec<JoinHandle<()>>,
    /// Batches handed out and taken back, in input order.
    sent: usize,
    taken: usize,
    eof: bool,
    current: Option<Batch>,
    spare: Vec<Batch>,
}

impl Pool {
    /// Start `workers` validator threads.
    pub(super) fn start(validator: Arc<Validator>, workers: usize) -> Pool {
        let workers = workers.max(1);
        let mut pool = Pool {
            to: Vec::with_capacity(workers),
            from: Vec::with_capacity(workers),
            threads: Vec::with_capacity(workers),
            sent: 0,
            taken: 0,
            eof: false,
            current: None,
            spare: Vec::new(),
        };
        for _ in 0..workers {
            let (in_tx, in_rx) = sync_channel::<Batch>(DEPTH);
            let (out_tx, out_rx) = sync_channel::<Batch>(DEPTH);
            let validator = validator.clone();
            pool.threads.push(std::thread::spawn(move || {
                for mut batch in in_rx {
                    batch.validated.clear();
                    for rec in &batch.recs[..batch.len] {
                        batch.validated.push_back(validator.validate(rec));
                    }
                    if out_tx.send(batch).is_err() {
                        break;
                    }
                }
            }));
            pool.to.push(in_tx);
            pool.from.push(out_rx);
        }
        pool
    }

    /// The record of the row [`Pool::next`] returned last.
    pub(super) fn record(&self) -> Option<&ByteRecord> {
        let b = self.current.as_ref()?;
        b.recs.get(b.len.checked_sub(b.validated.len() + 1)?)
    }

    /// The next row in input order; the read error after the rows before it.
    pub(super) fn next(&mut self, reader: &mut InputReader) -> Result<Option<PoolRow>, InputError> {
        loop {
            if let Some(b) = &mut self.current {
                if let Some(validated) = b.validated.pop_front() {
                    let i = b.len - b.validated.len() - 1;
                    return Ok(Some(PoolRow {
                        row: b.first_row + i as u64,
                        validated,
                        unterminated: b.unterminated == Some(i),
                    }));
                }
                if let Some(mut done) = self.current.take() {
                    let error = done.error.take();
                    self.spare.push(done);
                    if let Some(e) = error {
                        return Err(e);
                    }
                }
            }
            self.hand_out(reader);
            if self.taken == self.sent {
                return Ok(None);
            }
            self.current = Some(self.take_back());
        }
    }

    /// Read and hand out batches until the pipeline is full or the input ends.
    fn hand_out(&mut self, reader: &mut InputReader) {
        while !self.eof && self.sent - self.taken < DEPTH * self.to.len() {
            let mut batch = self.spare.pop().unwrap_or_else(Batch::new);
            if !batch.fill(reader) {
                self.eof = true;
                self.spare.push(batch);
                break;
            }
            self.eof = batch.len < BATCH || batch.error.is_some();
            let k = self.sent % self.to.len();
            if self.to[k].send(batch).is_err() {
                self.rethrow(k);
            }
            self.sent += 1;
        }
    }

    fn take_back(&mut self) -> Batch {
        let k = self.taken % self.from.len();
        match self.from[k].recv() {
            Ok(batch) => {
                self.taken += 1;
                batch
            }
            Err(_) => self.rethrow(k),
        }
    }

    /// A validator thread is gone, which only a panic (a bug) does: carry
    /// its panic to this thread, as a scoped thread would.
    fn rethrow(&mut self, k: usize) -> ! {
        self.to.clear();
        let thread = self.threads.swap_remove(k);
        match thread.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => panic!("validator thread {k} ended early"),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queues ends the threads.
        self.to.clear();
        self.from.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
