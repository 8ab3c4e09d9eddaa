//! The input byte stream → CSV records. Built in one place (xsv's `Config`):
//! path or stdin, SHA-256 of the raw bytes, BOM handling and transcoding via
//! `encoding_rs_io`, the delimiter, and header resolution.
//!
//! Rows are read as `csv::ByteRecord`s into a caller-owned buffer, so the hot
//! loop allocates nothing; UTF-8 is checked per row by the validator, so a bad
//! byte makes one `invalid` row instead of ending the run.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use csv::ByteRecord;
use encoding_rs::Encoding;
use encoding_rs_io::DecodeReaderBytesBuilder;
use sha2::{Digest, Sha256};

use super::ERROR_COLUMNS;
use super::columns::{ColumnError, ColumnMap, ColumnSpec};

/// Where the CSV comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// A file.
    Path(PathBuf),
    /// Standard input (`-` on the command line).
    Stdin,
}

impl InputSource {
    /// `-` is stdin.
    pub(crate) fn from_arg(p: &Path) -> InputSource {
        if p.as_os_str() == "-" {
            InputSource::Stdin
        } else {
            InputSource::Path(p.to_path_buf())
        }
    }

    /// stdin, or a path that is a FIFO, a `/dev/fd/N` pipe, a socket or a
    /// device: read once, as the producer writes it. It cannot be hashed
    /// before the run nor read again on `--resume`, and its rows are
    /// validated as they come, not in batches. A regular file (or a path
    /// that does not exist, which fails to open) is not.
    pub(crate) fn is_stream(&self) -> bool {
        match self {
            InputSource::Path(p) => std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir()),
            InputSource::Stdin => true,
        }
    }

    /// How the source is named in messages and summary.json.
    pub(crate) fn display(&self) -> String {
        match self {
            InputSource::Path(p) => p.display().to_string(),
            InputSource::Stdin => "<stdin>".to_string(),
        }
    }
}

/// How to read the input.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// `None` is UTF-8 (with or without BOM, invalid bytes reported per row).
    pub encoding: Option<&'static Encoding>,
    /// Field separator (default `,`).
    pub delimiter: u8,
    /// Which column holds which payload field.
    pub columns: ColumnSpec,
    /// Read at most this many data rows.
    pub limit: Option<u64>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            encoding: None,
            delimiter: b',',
            columns: ColumnSpec::default(),
            limit: None,
        }
    }
}

/// Resolve a WHATWG encoding label (`windows-1252`, `latin1`, `utf-16le`, ...).
/// UTF-8 labels give `None`: UTF-8 is read without transcoding.
pub fn encoding_for_label(label: &str) -> Result<Option<&'static Encoding>, InputError> {
    let enc = Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| InputError::Encoding {
        label: label.to_string(),
    })?;
    Ok(if enc == encoding_rs::UTF_8 {
        None
    } else {
        Some(enc)
    })
}

/// Why the input cannot be read at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open input {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read input {path} (after data row {row})")]
    Read {
        path: String,
        row: u64,
        #[source]
        source: csv::Error,
    },
    #[error("input {path} is empty: a header row is required")]
    Empty { path: String },
    #[error(
        "input {path}: the header row is not valid UTF-8 (use --encoding for legacy exports, e.g. --encoding windows-1252)"
    )]
    HeaderEncoding { path: String },
    #[error("input {path}: {problem}")]
    Columns { path: String, problem: ColumnError },
    #[error(
        "unknown encoding '{label}' (use a WHATWG label such as utf-8, windows-1252, latin1, utf-16le)"
    )]
    Encoding { label: String },
}

/// Feeds every raw byte read into a shared SHA-256, so the input's hash is
/// known at EOF without a second pass (stdin can't be read twice).
struct HashingReader<R> {
    inner: R,
    hasher: Arc<Mutex<Sha256>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hasher.lock() {
            h.update(&buf[..n]);
        }
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Read up to `n` bytes to sniff, returning them and the rest of the stream.
fn peek_prefix<R: Read>(mut r: R, n: usize) -> io::Result<(Vec<u8>, R)> {
    let mut prefix = vec![0u8; n];
    let mut n = 0;
    while n < prefix.len() {
        match r.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    prefix.truncate(n);
    Ok((prefix, r))
}

/// Handle on the input's SHA-256 and bytes read, usable from another thread.
#[derive(Clone)]
pub(crate) struct InputDigest {
    hasher: Arc<Mutex<Sha256>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl InputDigest {
    fn new() -> InputDigest {
        InputDigest {
            hasher: Arc::new(Mutex::new(Sha256::new())),
            bytes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// `inner`, feeding every byte read into this digest.
    fn reader<R>(&self, inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: self.hasher.clone(),
            bytes: self.bytes.clone(),
        }
    }

    /// Hex SHA-256 of the bytes read so far (all of them once at EOF).
    pub(crate) fn sha256_hex(&self) -> String {
        match self.hasher.lock() {
            Ok(h) => hex::encode(h.clone().finalize()),
            Err(_) => String::new(),
        }
    }

    /// Raw bytes read so far.
    #[cfg(test)]
    fn bytes_read(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A CSV input positioned after its header row.
pub struct InputReader {
    rdr: csv::Reader<Box<dyn Read + Send>>,
    source: InputSource,
    headers: Vec<String>,
    header_record: ByteRecord,
    columns: ColumnMap,
    /// The input is a failures.csv: its last two columns are our error columns.
    strip_error_columns: bool,
    rows: u64,
    limit: Option<u64>,
    digest: InputDigest,
    /// Set at EOF when the file ended inside a quoted field.
    open_quote: Arc<std::sync::atomic::AtomicBool>,
    /// The row just read is the last, cut short by an unterminated quote.
    unterminated: bool,
}

/// Follows the CSV quoting of the decoded stream with csv-core's rules (a
/// quote opens a quoted field only at the start of a field; `""` inside is an
/// escaped quote), so that EOF inside a quoted field can be told apart: csv
/// closes such a field silently, and the last row would look fine.
struct QuoteTracker<R> {
    inner: R,
    delimiter: u8,
    at_field_start: bool,
    in_quotes: bool,
    /// A quote seen inside a quoted field: closing, or the first of `""`.
    quote_pending: bool,
    open_at_eof: Arc<std::sync::atomic::AtomicBool>,
}

impl<R> QuoteTracker<R> {
    fn new(inner: R, delimiter: u8, open_at_eof: Arc<std::sync::atomic::AtomicBool>) -> Self {
        QuoteTracker {
            inner,
            delimiter,
            at_field_start: true,
            in_quotes: false,
            quote_pending: false,
            open_at_eof,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_quotes {
                if self.quote_pending {
                    self.quote_pending = false;
                    if b == b'"' {
                        continue; // `""`: an escaped quote, still quoted
                    }
                    self.in_quotes = false; // closed; `b` is unquoted
                } else {
                    if b == b'"' {
                        self.quote_pending = true;
                    }
                    continue;
                }
            }
            if b == b'"' && self.at_field_start {
                self.in_quotes = true;
                self.at_field_start = false;
            } else {
                self.at_field_start = b == self.delimiter || b == b'\n' || b == b'\r';
            }
        }
    }
}

impl<R: Read> Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            let open = self.in_quotes && !self.quote_pending;
            self.open_at_eof
                .store(open, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.scan(&buf[..n]);
        }
        Ok(n)
    }
}

/// The raw bytes of `source`.
fn open_raw(source: &InputSource) -> io::Result<Box<dyn Read + Send>> {
    Ok(match source {
        InputSource::Path(p) => Box::new(File::open(p)?),
        InputSource::Stdin => Box::new(io::stdin()),
    })
}

/// How an input is compressed, told by its first bytes (not its name, so
/// stdin and a misnamed file are read right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Plain text.
    None,
    /// gzip (RFC 1952), one member or several concatenated.
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Compression {
    /// The format whose magic number starts `magic`.
    pub(crate) fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The decompressed bytes of the stream whose first bytes are `magic`. The
/// raw stream below is what the SHA-256 covers: the file as given.
fn decompress(
    magic: Vec<u8>,
    rest: impl Read + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    let kind = Compression::sniff(&magic);
    let raw = io::BufReader::with_capacity(64 * 1024, io::Cursor::new(magic).chain(rest));
    Ok(match kind {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(Damage::new(kind, flate2::bufread::MultiGzDecoder::new(raw))),
        Compression::Zstd => Box::new(Damage::new(
            kind,
            zstd::stream::read::Decoder::with_buffer(raw)?,
        )),
    })
}

/// Names a decompressor's error: a truncated or corrupt archive reads as
/// "the gzip input is damaged or truncated after N bytes of text", and ends
/// the rows there (the rows before it stand).
struct Damage<R> {
    kind: Compression,
    inner: R,
    out: u64,
}

impl<R> Damage<R> {
    fn new(kind: Compression, inner: R) -> Self {
        Damage {
            kind,
            inner,
            out: 0,
        }
    }
}

impl<R: Read> Read for Damage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.out += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the {} input is damaged or truncated after {} bytes of text: {e}",
                    self.kind.name(),
                    self.out
                ),
            )),
        }
    }
}

/// The text of the stream whose first bytes are `prefix`, as UTF-8.
///
/// A BOM wins over --encoding: failures.csv is written as UTF-8 with a
/// BOM, so rerunning it works even where the config says windows-1252.
/// UTF-8 passes through untouched so invalid bytes are reported per row.
/// (encoding_rs_io's bom_override ignores a UTF-8 BOM when utf8_passthru
/// is on, so the UTF-8 BOM is sniffed here.)
fn decode(prefix: Vec<u8>, rest: impl Read, encoding: Option<&'static Encoding>) -> impl Read {
    let encoding = if prefix.starts_with(b"\xEF\xBB\xBF") {
        None
    } else {
        encoding
    };
    DecodeReaderBytesBuilder::new()
        .encoding(encoding)
        .bom_override(true)
        .utf8_passthru(true)
        .strip_bom(true)
        .build(io::Cursor::new(prefix).chain(rest))
}

/// The decoded text without the BOMs left at its start: decoding strips
/// one, and an export saved twice by a BOM-writing editor has another,
/// which would otherwise glue itself to the first header. (The csv crate
/// strips one too, but only when its first read holds all of it.)
fn skip_boms<R: Read>(text: R) -> io::Result<io::Chain<io::Cursor<Vec<u8>>, R>> {
    let mut text = text;
    loop {
        let (head, rest) = peek_prefix(text, 3)?;
        if head != b"\xEF\xBB\xBF" {
            return Ok(io::Cursor::new(head).chain(rest));
        }
        text = rest;
    }
}

/// The CSV reader over the decoded text; `open_quote` is set at EOF when the
/// text ended inside a quoted field.
fn csv_reader(
    decoded: impl Read + Send + 'static,
    delimiter: u8,
    open_quote: Arc<std::sync::atomic::AtomicBool>,
) -> csv::Reader<Box<dyn Read + Send>> {
    let tracked = QuoteTracker::new(decoded, delimiter, open_quote);
    let boxed: Box<dyn Read + Send> = Box::new(io::BufReader::with_capacity(64 * 1024, tracked));
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024)
        .from_reader(boxed)
}

/// Read the header row: as bytes, as text, and whether it ended in a
/// failures file's error columns (then dropped from both).
fn read_header(
    rdr: &mut csv::Reader<Box<dyn Read + Send>>,
    name: &str,
) -> Result<(ByteRecord, Vec<String>, bool), InputError> {
    let mut header_record = ByteRecord::new();
    let got = rdr
        .read_byte_record(&mut header_record)
        .map_err(|e| InputError::Read {
            path: name.to_string(),
            row: 0,
            source: e,
        })?;
    if !got || (header_record.len() == 1 && header_record[0].iter().all(u8::is_ascii_whitespace)) {
        return Err(InputError::Empty {
            path: name.to_string(),
        });
    }
    let mut headers = Vec::with_capacity(header_record.len());
    for cell in header_record.iter() {
        let s = std::str::from_utf8(cell).map_err(|_| InputError::HeaderEncoding {
            path: name.to_string(),
        })?;
        headers.push(s.to_string());
    }
    let strip_error_columns = headers.len() > ERROR_COLUMNS.len()
        && headers[headers.len() - ERROR_COLUMNS.len()..]
            .iter()
            .zip(ERROR_COLUMNS)
            .all(|(h, want)| h.trim().eq_ignore_ascii_case(want));
    if strip_error_columns {
        headers.truncate(headers.len() - ERROR_COLUMNS.len());
        header_record.truncate(headers.len());
    }
    Ok((header_record, headers, strip_error_columns))
}

impl InputReader {
    /// Open `source`, read and resolve its header row.
    pub fn open(source: InputSource, opts: &ReadOptions) -> Result<InputReader, InputError> {
        let name = source.display();
        let open_error = |e| InputError::Open {
            path: name.clone(),
            source: e,
        };
        let raw = open_raw(&source).map_err(open_error)?;
        let digest = InputDigest::new();
        let hashing = digest.reader(raw);
        let (magic, hashing) = peek_prefix(hashing, 4).map_err(open_error)?;
        let text = decompress(magic, hashing).map_err(open_error)?;
        let (prefix, text) = peek_prefix(text, 3).map_err(open_error)?;
        let open_quote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let decoded = skip_boms(decode(prefix, text, opts.encoding)).map_err(open_error)?;
        let mut rdr = csv_reader(decoded, opts.delimiter, open_quote.clone());
        let (header_record, headers, strip_error_columns) = read_header(&mut rdr, &name)?;
        let columns =
            ColumnMap::resolve(&headers, &opts.columns).map_err(|e| InputError::Columns {
                path: name.clone(),
                problem: e,
            })?;
        Ok(InputReader {
            rdr,
            source,
            headers,
            header_record,
            columns,
            strip_error_columns,
            rows: 0,
            limit: opts.limit,
            digest,
            open_quote,
            unterminated: false,
        })
    }

    /// Read the next data row into `rec`; returns its 1-based row number.
    /// Rows with the wrong field count are returned as they are: validation
    /// turns them into `invalid` rows.
    pub(crate) fn read_row(&mut self, rec: &mut ByteRecord) -> Result<Option<u64>, InputError> {
        if self.limit.is_some_and(|l| self.rows >= l) {
            return Ok(None);
        }
        loop {
            let got = self
                .rdr
                .read_byte_record(rec)
                .map_err(|e| InputError::Read {
                    path: self.source.display(),
                    row: self.rows,
                    source: e,
                })?;
            if !got {
                return Ok(None);
            }
            // A blank line between records is not a data row (csv already
            // skips empty lines; this catches a lone delimiter-free space line).
            if rec.len() == 1 && rec[0].is_empty() {
                continue;
            }
            break;
        }
        if self.strip_error_columns && rec.len() >= ERROR_COLUMNS.len() {
            rec.truncate(rec.len() - ERROR_COLUMNS.len());
        }
        // EOF is only read while completing the last record, so the flag set
        // now belongs to this row.
        self.unterminated = self.open_quote.load(std::sync::atomic::Ordering::Relaxed);
        self.rows += 1;
        Ok(Some(self.rows))
    }

    /// Whether the row just read ended the file inside a quoted field (an
    /// unterminated quote): it must be `invalid`, however it parsed.
    pub(crate) fn row_unterminated(&self) -> bool {
        self.unterminated
    }

    /// Header cells (without a failures file's error columns).
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The header row as bytes (without a failures file's error columns).
    pub(crate) fn header_record(&self) -> &ByteRecord {
        &self.header_record
    }

    /// Field → column indexes.
    pub fn columns(&self) -> &ColumnMap {
        &self.columns
    }

    /// The source, for messages.
    pub(crate) fn source(&self) -> &InputSource {
        &self.source
    }

    /// Data rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// Handle on the SHA-256 and byte count of the raw input.
    pub(crate) fn digest(&self) -> InputDigest {
        self.digest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn open_bytes(
        bytes: &[u8],
        opts: &ReadOptions,
    ) -> Result<(InputReader, tempfile::NamedTempFile), InputError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let r = InputReader::open(InputSource::Path(f.path().to_path_buf()), opts)?;
        Ok((r, f))
    }

    fn all_rows(r: &mut InputReader) -> Vec<Vec<String>> {
        let mut rec = ByteRecord::new();
        let mut out = vec![];
        while r.read_row(&mut rec).unwrap().is_some() {
            out.push(
                rec.iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn bom_crlf_and_quoted_newlines() {
        let (mut r, _f) = open_bytes(
            b"\xEF\xBB\xBFuser_id,first_name\r\nu1,\"Ann\r\nMarie\"\r\nu2,Bob\r\n",
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(r.headers(), ["user_id", "first_name"]);
        assert_eq!(
            all_rows(&mut r),
            vec![vec!["u1", "Ann\r\nMarie"], vec!["u2", "Bob"]]
        );
    }

    #[test]
    fn windows_1252_is_transcoded() {
        let opts = ReadOptions {
            encoding: encoding_for_label("windows-1252").unwrap(),
            ..Default::default()
        };
        let (mut r, _f) = open_bytes(b"user_id,first_name\nu1,Jos\xE9\n", &opts).unwrap();
        assert_eq!(all_rows(&mut r), vec![vec!["u1", "José"]]);
    }

    #[test]
    fn utf8_bom_overrides_a_legacy_label() {
        let opts = ReadOptions {
            encoding: encoding_for_label("windows-1252").unwrap(),
            ..Default::default()
        };
        let (mut r, _f) =
            open_bytes("\u{FEFF}user_id,first_name\nu1,José\n".as_bytes(), &opts).unwrap();
        assert_eq!(all_rows(&mut r), vec![vec!["u1", "José"]]);
    }

    #[test]
    fn delimiter_and_limit() {
        let opts = ReadOptions {
            delimiter: b';',
            limit: Some(1),
            ..Default::default()
        };
        let (mut r, _f) = open_bytes(b"user_id;first_name\nu1;A\nu2;B\n", &opts).unwrap();
        assert_eq!(all_rows(&mut r), vec![vec!["u1", "A"]]);
    }

    #[test]
    fn failures_file_error_columns_are_stripped() {
        let (mut r, _f) = open_bytes(
            b"user_id,first_name,error_status,error_message\nu1,A,invalid,bad\n",
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(r.headers(), ["user_id", "first_name"]);
        assert_eq!(all_rows(&mut r), vec![vec!["u1", "A"]]);
    }

    #[test]
    fn whole_file_errors() {
        assert!(matches!(
            open_bytes(b"", &ReadOptions::default()).err(),
            Some(InputError::Empty { .. })
        ));
        assert!(matches!(
            open_bytes(b"id,name\n1,a\n", &ReadOptions::default()).err(),
            Some(InputError::Columns { .. })
        ));
        assert!(matches!(
            open_bytes(b"user_id,first_\xFFname\n", &ReadOptions::default()).err(),
            Some(InputError::HeaderEncoding { .. })
        ));
        assert!(matches!(
            encoding_for_label("klingon"),
            Err(InputError::Encoding { .. })
        ));
        assert!(matches!(
            InputReader::open(
                InputSource::Path("/nonexistent/x.csv".into()),
                &ReadOptions::default()
            )
            .err(),
            Some(InputError::Open { .. })
        ));
    }

    #[test]
    fn an_unterminated_quote_at_eof_is_flagged_on_the_last_row_only() {
        let cases: [(&[u8], Vec<bool>); 5] = [
            (b"user_id,first_name\nu1,Ann\nu2,\"Bob", vec![false, true]),
            (
                b"user_id,first_name\nu1,Ann\nu2,\"Bob\"",
                vec![false, false],
            ),
            (
                b"user_id,first_name\nu1,\"A \"\"x\"\" b\"\nu2,Bob",
                vec![false, false],
            ),
            // A quote inside an unquoted field is literal.
            (
                b"user_id,first_name\nu1,5\" tall\nu2,Bob",
                vec![false, false],
            ),
            (b"user_id,first_name\nu1,\"Ann\nu2,Bob\n", vec![true]),
        ];
        for (bytes, want) in cases {
            let (mut r, _f) = open_bytes(bytes, &ReadOptions::default()).unwrap();
            let mut rec = ByteRecord::new();
            let mut got = vec![];
            while r.read_row(&mut rec).unwrap().is_some() {
                got.push(r.row_unterminated());
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    const TEXT: &[u8] = b"\xEF\xBB\xBFuser_id,first_name\nu1,A\nu2,B\nu3,C\n";

    #[test]
    fn gzip_and_zstd_are_told_by_their_first_bytes() {
        let zst = zstd::encode_all(TEXT, 3).unwrap();
        // Two gzip members, as `cat a.gz b.gz` makes.
        let mut two = gzip(&TEXT[..TEXT.len() - 5]);
        two.extend(gzip(&TEXT[TEXT.len() - 5..]));
        for (name, bytes) in [("gzip", gzip(TEXT)), ("zstd", zst), ("two members", two)] {
            let (mut r, _f) = open_bytes(&bytes, &ReadOptions::default()).unwrap();
            assert_eq!(r.headers(), ["user_id", "first_name"], "{name}");
            assert_eq!(all_rows(&mut r).len(), 3, "{name}");
            // The hash is the file's as given, not the text's.
            assert_eq!(
                r.digest().sha256_hex(),
                hex::encode(Sha256::digest(&bytes)),
                "{name}"
            );
        }
        assert_eq!(Compression::sniff(b"\x1f\x8b\x08"), Compression::Gzip);
        assert_eq!(Compression::sniff(b"\x28\xb5\x2f\xfd"), Compression::Zstd);
        assert_eq!(Compression::sniff(b"\x1f"), Compression::None);
        assert_eq!(Compression::sniff(b"user"), Compression::None);
    }

    #[test]
    fn a_truncated_archive_keeps_the_rows_before_the_damage() {
        let mut text = b"user_id,first_name\n".to_vec();
        // Zstandard decodes a block (up to 128 KiB of text) at a time:
        // enough rows for several.
        for i in 0..40_000 {
            text.extend(format!("u{i},Name{i}\n").as_bytes());
        }
        for (name, mut bytes) in [
            ("gzip", gzip(&text)),
            ("zstd", zstd::encode_all(&text[..], 3).unwrap()),
        ] {
            bytes.truncate(bytes.len() * 2 / 3);
            let (mut r, _f) = open_bytes(&bytes, &ReadOptions::default()).unwrap();
            let mut rec = ByteRecord::new();
            let mut rows = 0;
            let err = loop {
                match r.read_row(&mut rec) {
                    Ok(Some(_)) => rows += 1,
                    Ok(None) => panic!("{name}: a truncated archive read to its end"),
                    Err(e) => break crate::error::chain(&e),
                }
            };
            assert!(rows > 1000 && rows < 40_000, "{name}: {rows} rows");
            assert!(err.contains("damaged or truncated"), "{name}: {err}");
            assert!(
                err.contains(&format!("after data row {rows}")),
                "{name}: {err}"
            );
        }
        // Damaged before the header: nothing to read.
        let bytes = gzip(&text);
        assert!(matches!(
            open_bytes(&bytes[..20], &ReadOptions::default()).err(),
            Some(InputError::Open { .. })
        ));
    }

    #[test]
    fn sha256_covers_the_raw_bytes() {
        let bytes = b"user_id,first_name\nu1,A\n";
        let (mut r, _f) = open_bytes(bytes, &ReadOptions::default()).unwrap();
        all_rows(&mut r);
        assert_eq!(r.digest().sha256_hex(), hex::encode(Sha256::digest(bytes)));
        assert_eq!(r.digest().bytes_read(), bytes.len() as u64);
    }
}
