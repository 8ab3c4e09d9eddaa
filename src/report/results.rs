//! results.csv read back: one reader for resume and `state import`.
//!
//! The recorder appends results.csv a line at a time and fsyncs it in
//! batches, so after a crash its last line may be cut short. Reading stops
//! at such a torn last line (one without its `\n`): it was never fsynced,
//! and its row is sent again. Each complete line is parsed as one CSV record
//! of its own; a line that does not parse, or has the wrong number of
//! fields, is skipped.
//!
//! - `Lines`: the complete lines, as written.
//! - `ResultsReader`: the data lines as records (each with its line as
//!   written: resume copies the kept ones verbatim), after a header taken
//!   on trust (`ResultsReader::own`: the run's own file, for resume) or
//!   checked (`ResultsReader::checked`: any file, for `state import`).
//! - `Successes`: the rows a `--state` learns of, gathered by `state import`
//!   from any results.csv and by resume from the lines it keeps.

use std::io::{self, BufRead};

use csv::StringRecord;

use super::{RESULTS_HEADER, RESULTS_HEADER_V1};
use crate::outcome::Status;
use crate::rowset::RowSet;

/// The complete lines of results.csv, header included, up to the end of the
/// file or a torn last line.
pub(crate) struct Lines<R> {
    rdr: R,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `rdr`, from its current position.
    pub(crate) fn new(rdr: R) -> Self {
        Lines {
            rdr,
            line: Vec::new(),
        }
    }

    /// The next line with its `\n`; `None` at the end of the file or at a
    /// torn last line.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        if self.rdr.read_until(b'\n', &mut self.line)? == 0 || self.line.last() != Some(&b'\n') {
            return Ok(None);
        }
        Ok(Some(&self.line))
    }

    /// The line [`Lines::next_line`] last returned.
    fn current(&self) -> &[u8] {
        &self.line
    }
}

/// Why results.csv cannot be read as one ([`ResultsReader::checked`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResultsError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("it is not a results.csv of this tool (its header should start row,user_id,status)")]
    NotResults,
    /// No complete first line.
    #[error("it is empty")]
    Empty,
}

/// The data lines of results.csv as records, one at a time (one record
/// buffer, reused).
pub(crate) struct ResultsReader<R> {
    lines: Lines<R>,
    parser: LineParser,
    rec: StringRecord,
    /// Fields a data line must have to count.
    width: usize,
    /// Also counts: the recorder's fields before the address columns, in
    /// the run's own file from an older build (resume).
    old_width: Option<usize>,
}

impl<R: BufRead> ResultsReader<R> {
    /// The run's own results.csv (resume): the header line is skipped
    /// unread, and a data line counts only with the recorder's fields
    /// ([`RESULTS_HEADER`]), or those of a build before the address
    /// columns ([`RESULTS_HEADER_V1`]). A file without a complete header
    /// has no records.
    pub(crate) fn own(rdr: R) -> io::Result<Self> {
        let mut lines = Lines::new(rdr);
        lines.next_line()?;
        Ok(ResultsReader {
            lines,
            parser: LineParser::default(),
            rec: StringRecord::new(),
            width: RESULTS_HEADER.len(),
            old_width: Some(RESULTS_HEADER_V1),
        })
    }

    /// Any results.csv (`state import`): the header must start
    /// `row,user_id,status`, and a data line counts only with as many
    /// fields as the header.
    pub(crate) fn checked(rdr: R) -> Result<Self, ResultsError> {
        let mut lines = Lines::new(rdr);
        let mut parser = LineParser::default();
        let mut rec = StringRecord::new();
        let Some(header) = lines.next_line()? else {
            return Err(ResultsError::Empty);
        };
        if !parser.parse(header, &mut rec)
            || rec.len() < 3
            || &rec[0] != "row"
            || &rec[1] != "user_id"
            || &rec[2] != "status"
        {
            return Err(ResultsError::NotResults);
        }
        let width = rec.len();
        Ok(ResultsReader {
            lines,
            parser,
            rec,
            width,
            old_width: None,
        })
    }

    /// The next data line that parses with the expected width; `None` at
    /// the end of the file or at a torn last line.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<ResultRecord<'_>>> {
        loop {
            let Some(line) = self.lines.next_line()? else {
                return Ok(None);
            };
            if self.parser.parse(line, &mut self.rec)
                && (self.rec.len() == self.width || Some(self.rec.len()) == self.old_width)
            {
                break;
            }
        }
        Ok(Some(ResultRecord {
            rec: &self.rec,
            line: self.lines.current(),
        }))
    }
}

/// One CSV parser for every line (building one per line cost more than
/// the rest of a `state import`): each line parses as if read alone by a
/// `csv::Reader` with default options, no headers and flexible widths.
struct LineParser {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for LineParser {
    fn default() -> LineParser {
        LineParser {
            // `new`, not `default`: only the builder builds the DFA.
            core: csv_core::Reader::new(),
            out: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl LineParser {
    /// Parse `line` as one CSV record into `rec`; `false` when it is not
    /// one (no record, or a field that is not UTF-8).
    fn parse(&mut self, line: &[u8], rec: &mut StringRecord) -> bool {
        use csv_core::ReadRecordResult::{End, InputEmpty, OutputEndsFull, OutputFull, Record};
        self.core.reset();
        // A record's fields are never longer than its line, nor more than
        // its bytes + 1: neither buffer fills.
        self.out.resize(line.len().max(1), 0);
        self.ends.resize(line.len() + 1, 0);
        let (mut input, mut nout, mut nend) = (line, 0, 0);
        loop {
            let (res, i, o, e) =
                self.core
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            input = &input[i..];
            nout += o;
            nend += e;
            match res {
                // Empty input is the end of the line, which ends a record.
                InputEmpty => continue,
                Record => break,
                End | OutputFull | OutputEndsFull => return false,
            }
        }
        rec.clear();
        let mut start = 0;
        for &end in &self.ends[..nend] {
            match std::str::from_utf8(&self.out[start..end]) {
                Ok(field) => rec.push_field(field),
                Err(_) => return false,
            }
            start = end;
        }
        true
    }
}

/// One data line: `row,user_id,status,http_status,attempts,error,…`. Cells
/// that do not parse read as `None`; missing cells read as empty.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultRecord<'a> {
    rec: &'a StringRecord,
    line: &'a [u8],
}

impl<'a> ResultRecord<'a> {
    fn cell(&self, i: usize) -> &'a str {
        self.rec.get(i).unwrap_or("")
    }

    /// The input row number.
    pub(crate) fn row(&self) -> Option<u64> {
        self.cell(0).parse().ok()
    }

    /// The `user_id` cell, as written.
    pub(crate) fn user_id(&self) -> &'a str {
        self.cell(1)
    }

    /// The row's final status.
    pub(crate) fn status(&self) -> Option<Status> {
        Status::parse(self.cell(2))
    }

    /// The HTTP status of the last response.
    pub(crate) fn http_status(&self) -> Option<u16> {
        self.cell(3).parse().ok()
    }

    /// Requests sent for the row.
    pub(crate) fn attempts(&self) -> Option<u32> {
        self.cell(4).parse().ok()
    }

    /// The `error` cell, as written.
    pub(crate) fn error(&self) -> &'a str {
        self.cell(5)
    }

    /// `long_distance_delivery`: `None` when empty or absent (a row
    /// without an address, or a file from before the address columns).
    pub(crate) fn long_distance(&self) -> Option<bool> {
        match self.cell(9) {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// Fields on the line.
    pub(crate) fn width(&self) -> usize {
        self.rec.len()
    }

    /// The whole line as written, `\n` included.
    pub(crate) fn line(&self) -> &'a [u8] {
        self.line
    }
}

/// The rows results.csv calls `created`, or `exists`/`unchanged`, and the
/// figures `state import` reports of it.
#[derive(Debug, Default)]
pub(crate) struct Successes {
    pub(crate) created: RowSet,
    pub(crate) exists: RowSet,
    /// `changed` rows (the state is not told of them).
    pub(crate) changed: u64,
    /// Data lines read.
    pub(crate) lines: u64,
}

impl Successes {
    /// Read any results.csv (the header must be that of one); a torn last
    /// line (a crash mid-write) is dropped; a row listed twice keeps its
    /// first line.
    pub(crate) fn read<R: BufRead>(rdr: R) -> Result<Successes, ResultsError> {
        let mut s = Successes::default();
        let mut seen = RowSet::default();
        let mut results = ResultsReader::checked(rdr)?;
        while let Some(rec) = results.next_record()? {
            s.lines += 1;
            let (Some(row), Some(status)) = (rec.row(), rec.status()) else {
                continue;
            };
            if !seen.contains(row) {
                seen.insert(row);
                s.note(row, status);
            }
        }
        Ok(s)
    }

    /// The first data line of `row` says `status` (the line is counted by
    /// the caller).
    pub(crate) fn note(&mut self, row: u64, status: Status) {
        match status {
            Status::Created => self.created.insert(row),
            // `updated`: known before (and created then, if this tool
            // did); the address was attached again.
            Status::Exists | Status::Unchanged | Status::Updated => self.exists.insert(row),
            Status::Changed => self.changed += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "row,user_id,status,http_status,attempts,error,duration_ms\n";

    /// What a fresh `csv::Reader` makes of `line` alone (the reading before
    /// `LineParser`).
    fn alone(line: &[u8]) -> Option<Vec<String>> {
        let mut rec = StringRecord::new();
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(line)
            .read_record(&mut rec)
            .unwrap_or(false)
            .then(|| rec.iter().map(str::to_string).collect())
    }

    #[test]
    fn one_parser_reads_each_line_as_a_reader_of_its_own_would() {
        let lines: &[&[u8]] = &[
            b"1,u1,created,201,1,,3\n",
            b"2,\"u,2\",failed,,3,\"said \"\"no\"\"\nthen more\",9\n",
            b"3,u3,exists,200,1,,4",
            b"\n",
            b"",
            b"\r\n",
            b"4,u4\r5,u5\n",
            b"\"unterminated,quote\n",
            b"5,\xff\xfe,created\n",
            b"6,,,,,,\n",
            b"\xef\xbb\xbfrow,user_id,status\n",
            b"7,a\"b\"c,created\n",
        ];
        let mut parser = LineParser::default();
        let mut rec = StringRecord::new();
        // Twice, so a line never sees what the one before left.
        for line in lines.iter().chain(lines.iter()) {
            let got = parser
                .parse(line, &mut rec)
                .then(|| rec.iter().map(str::to_string).collect::<Vec<_>>());
            assert_eq!(got, alone(line), "{:?}", String::from_utf8_lossy(line));
        }
    }

    fn rows<R: BufRead>(mut r: ResultsReader<R>) -> Vec<(Option<u64>, String)> {
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push((rec.row(), rec.user_id().to_string()));
        }
        out
    }

    // Issue #20: every reader takes results.csv with or without the three
    // address columns (resume: `own`; state import and report DIR: `checked`).
    #[test]
    fn files_with_and_without_the_address_columns_read_alike() {
        let old = format!("{HEADER}1,u1,created,200,1,,5\n2,u2,exists,400,1,,5\n");
        let new = "row,user_id,status,http_status,attempts,error,duration_ms,\
                   validated_address_line_1,validated_postal_code,long_distance_delivery\n\
                   1,u1,created,200,1,,5,1 Ice Rd,99501,true\n\
                   2,u2,exists,400,1,,5,,,\n\
                   3,u3,updated,200,1,,5,3 Elm St,94105,false\n";
        for text in [old.as_str(), new] {
            let got = rows(ResultsReader::own(text.as_bytes()).unwrap());
            assert_eq!(
                got[..2],
                [(Some(1), "u1".to_string()), (Some(2), "u2".to_string())]
            );
            let checked = rows(ResultsReader::checked(text.as_bytes()).unwrap());
            assert_eq!(checked, got);
            let s = Successes::read(text.as_bytes()).unwrap();
            assert!(s.created.contains(1) && s.exists.contains(2));
        }
        let s = Successes::read(new.as_bytes()).unwrap();
        assert!(s.exists.contains(3), "updated: known, recorded exists");
        let mut r = ResultsReader::own(new.as_bytes()).unwrap();
        let first = r.next_record().unwrap().unwrap();
        assert_eq!((first.long_distance(), first.width()), (Some(true), 10));
        let mut r = ResultsReader::own(old.as_bytes()).unwrap();
        let first = r.next_record().unwrap().unwrap();
        assert_eq!((first.long_distance(), first.width()), (None, 7));
    }

    #[test]
    fn lines_stop_at_a_torn_last_line() {
        let mut l = Lines::new("a\nb\nc".as_bytes());
        assert_eq!(l.next_line().unwrap(), Some(&b"a\n"[..]));
        assert_eq!(l.next_line().unwrap(), Some(&b"b\n"[..]));
        assert_eq!(l.next_line().unwrap(), None);
        assert_eq!(l.next_line().unwrap(), None);
    }

    #[test]
    fn records_skip_malformed_lines_and_stop_at_a_torn_one() {
        let text = format!(
            "{HEADER}1,u1,created,200,1,,5\n\
             2,u2,created\n\
             \"3,u3,created,200,1,,5\n\
             x,u4,created,200,1,,5\n\
             \n\
             5,u5,whatever,200,1,,5\n\
             6,u6,created,200,1,,"
        );
        let got = rows(ResultsReader::own(text.as_bytes()).unwrap());
        assert_eq!(
            got,
            [
                (Some(1), "u1".to_string()),
                (None, "u4".to_string()),
                (Some(5), "u5".to_string())
            ]
        );
        let mut r = ResultsReader::own(text.as_bytes()).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.status(), Some(Status::Created));
        assert_eq!((rec.http_status(), rec.attempts()), (Some(200), Some(1)));
        assert_eq!(rec.error(), "");
    }

    #[test]
    fn own_takes_the_header_on_trust_and_checked_does_not() {
        let text = "a,b,c\n1,u1,created,200,1,,5\n1,u1,created\n";
        assert_eq!(
            rows(ResultsReader::own(text.as_bytes()).unwrap()),
            [(Some(1), "u1".to_string())]
        );
        assert!(matches!(
            ResultsReader::checked(text.as_bytes()),
            Err(ResultsError::NotResults)
        ));
        let three = "row,user_id,status\n1,u1,created,200,1,,5\n2,u2,exists\n";
        assert_eq!(
            rows(ResultsReader::checked(three.as_bytes()).unwrap()),
            [(Some(2), "u2".to_string())]
        );
        for empty in ["", "row,user_id,status"] {
            assert!(matches!(
                ResultsReader::checked(empty.as_bytes()),
                Err(ResultsError::Empty)
            ));
            assert!(rows(ResultsReader::own(empty.as_bytes()).unwrap()).is_empty());
        }
    }

    #[test]
    fn successes_keep_a_row_s_first_line_and_drop_a_torn_one() {
        let text = "row,user_id,status,http_status,attempts,error,duration_ms\n\
                    1,u1,created,200,1,,5\n\
                    2,u2,failed,503,6,HTTP 503,900\n\
                    3,u3,exists,400,1,,4\n\
                    4,u4,unchanged,,0,,0\n\
                    5,u5,changed,,0,differs,0\n\
                    1,u1,failed,503,1,,5\n\
                    6,u6,created,200,1,,";
        let Ok(s) = Successes::read(text.as_bytes()) else {
            panic!("parse")
        };
        assert!(s.created.contains(1) && !s.created.contains(6));
        assert!(s.exists.contains(3) && s.exists.contains(4));
        assert!(!s.exists.contains(2) && !s.exists.contains(5));
        assert_eq!(s.changed, 1);
        assert_eq!(s.lines, 6);
        assert!(matches!(
            Successes::read("a,b,c\n1,2,3\n".as_bytes()),
            Err(ResultsError::NotResults)
        ));
    }
}
