//! clients import | export: streamed CSV/JSON, all-or-nothing (issue 4).
//!
//! Import is a two-stage pipeline: a reader thread parses and validates the CSV (one record in
//! memory at a time) and hands batches of valid rows through a small bounded channel to this
//! task, which writes them inside one transaction (db/import.rs). Memory stays bounded by a few
//! batches whatever the file size; the database's unique index settles duplicates.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use csv::ByteRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use is_terminal::IsTerminal;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Ctx, notice};
use crate::auth::policy::{Access, Actor, scope};
use crate::cli::{ImportArgs, OnConflict};
use crate::db::accounts::email_key;
use crate::db::fields::Fields;
use crate::db::import::{
    self as store, BATCH, ClientImport, Columns, Conflict, ExportRow, Importer, NewClient,
};
use crate::db::tags::Tags;
use crate::error::{Error, Result};
use crate::output::{Format, ListWriter, Record, print_one};
use crate::validate::{self, MAX_COMMENT, MAX_NAME};

/// How many problems an error message or notice lists.
const SHOWN_PROBLEMS: usize = 20;

/// What the summary reports (`--format json` for scripts). Field names are a public contract.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub dry_run: bool,
    pub elapsed_seconds: f64,
    pub rows_per_second: u64,
}

impl Record for Summary {
    const HEADERS: &'static [&'static str] = &[
        "read",
        "inserted",
        "updated",
        "skipped",
        "rejected",
        "dry_run",
        "elapsed_seconds",
        "rows_per_second",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.read.to_string(),
            self.inserted.to_string(),
            self.updated.to_string(),
            self.skipped.to_string(),
            self.rejected.to_string(),
            self.dry_run.to_string(),
            format!("{:.3}", self.elapsed_seconds),
            self.rows_per_second.to_string(),
        ]
    }
}

pub async fn import(ctx: &Ctx, actor: &Actor, args: ImportArgs) -> Result<()> {
    let started = Instant::now();
    // Imported clients always belong to the caller (whatever the caller may read).
    let owner_id = actor.id;
    let mode = match args.on_conflict {
        OnConflict::Skip => store::OnConflict::Skip,
        OnConflict::Update => store::OnConflict::Update,
        OnConflict::Error => store::OnConflict::Error,
    };

    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if args.file == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let f = File::open(&args.file)
            .map_err(|e| Error::invalid("file", format!("cannot open {}: {e}", args.file)))?;
        let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(f), size)
    };
    let rows = CsvRows::new(input)?;
    let rejects = match &args.rejects {
        Some(path) => Some(RejectsFile::create(path, rows.header())?),
        None => None,
    };
    let db = ctx.db().await?;
    let mut importer = Importer::begin(db, owner_id, mode, rows.columns()).await?;

    let progress = progress_bar(size);
    let (tx, mut rx) = mpsc::channel::<Vec<NewClient>>(2);
    let reader = {
        let progress = progress.clone();
        let skip_invalid = args.skip_invalid;
        std::thread::spawn(move || read_all(rows, tx, skip_invalid, rejects, progress))
    };

    let mut summary = Summary {
        read: 0,
        inserted: 0,
        updated: 0,
        skipped: 0,
        rejected: 0,
        dry_run: args.dry_run,
        elapsed_seconds: 0.0,
        rows_per_second: 0,
    };
    let mut conflicts: Vec<Conflict> = Vec::new();
    let mut more_conflicts = 0u64;
    let mut add = |summary: &mut Summary, done: store::BatchOutcome| {
        summary.inserted += done.inserted;
        summary.updated += done.updated;
        summary.skipped += done.skipped;
        conflicts.extend(done.conflicts);
        more_conflicts += done.more_conflicts;
        !conflicts.is_empty()
    };
    let mut failed = false;
    while let Some(batch) = rx.recv().await {
        if failed {
            continue; // the import will fail: only let the reader finish counting
        }
        failed = add(&mut summary, importer.write(batch).await?);
    }
    let read = reader
        .join()
        .map_err(|_| Error::runtime("the CSV reader thread panicked"))??;
    let invalid_fails = read.rejected > 0 && !args.skip_invalid;
    if !failed && !invalid_fails {
        add(&mut summary, importer.finish().await?);
    }
    progress.finish_and_clear();
    summary.read = read.read;
    summary.rejected = read.rejected;

    if invalid_fails || !conflicts.is_empty() {
        importer.rollback().await?;
        return Err(failure(read, conflicts, more_conflicts, args.skip_invalid));
    }
    if args.dry_run {
        importer.rollback().await?;
    } else {
        importer.commit().await?;
    }
    if read.rejected > 0 {
        let mut msg = format!("rejected {} invalid row(s)", read.rejected);
        if let Some(path) = &args.rejects {
            msg.push_str(&format!(" (written to {})", path.display()));
        }
        for (_, p) in &read.problems {
            msg.push_str(&format!("\n  {p}"));
        }
        if read.rejected as usize > read.problems.len() {
            msg.push_str(&format!(
                "\n  ... and {} more",
                read.rejected as usize - read.problems.len()
            ));
        }
        notice(msg);
    }
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    summary.elapsed_seconds = (elapsed.as_secs_f64() * 1000.0).round() / 1000.0;
    summary.rows_per_second = (summary.read as f64 / elapsed.as_secs_f64()).round() as u64;
    print_one(ctx.format(), &summary)
}

/// The exit-5 error of an import that wrote nothing: the first problems and their count.
fn failure(
    read: ReadOutcome,
    conflicts: Vec<Conflict>,
    more_conflicts: u64,
    skip_invalid: bool,
) -> Error {
    let rejected = if skip_invalid { 0 } else { read.rejected };
    let total = rejected as usize + conflicts.len() + more_conflicts as usize;
    let mut listed: Vec<(u64, String)> = if skip_invalid {
        Vec::new()
    } else {
        read.problems
    };
    listed.extend(conflicts.iter().map(|c| (c.line, c.to_string())));
    listed.sort_by_key(|(line, _)| *line);
    let mut hints = Vec::new();
    if rejected > 0 {
        hints.push("--skip-invalid imports the valid rows");
    }
    if !conflicts.is_empty() {
        hints.push("--on-conflict skip|update accepts emails that already exist");
    }
    let mut reason = format!(
        "{total} problem(s) in {} row(s); nothing was imported ({})",
        read.read,
        hints.join("; ")
    );
    for (_, p) in listed.iter().take(SHOWN_PROBLEMS) {
        reason.push_str(&format!("\n  {p}"));
    }
    if total > SHOWN_PROBLEMS {
        reason.push_str(&format!("\n  ... and {} more", total - SHOWN_PROBLEMS));
    }
    Error::invalid("import", reason)
}

fn progress_bar(size: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match size {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// What the reader thread saw.
#[derive(Debug, Default)]
struct ReadOutcome {
    read: u64,
    rejected: u64,
    /// The first problems, `(line, "line N: reason")`, in file order.
    problems: Vec<(u64, String)>,
}

/// Parses, validates and batches every row. Once an invalid row makes the import fail (no
/// `--skip-invalid`), rows are still validated and counted but no longer sent.
fn read_all<R: Read>(
    mut rows: CsvRows<R>,
    tx: mpsc::Sender<Vec<NewClient>>,
    skip_invalid: bool,
    mut rejects: Option<RejectsFile>,
    progress: ProgressBar,
) -> Result<ReadOutcome> {
    let mut out = ReadOutcome::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut sending = true;
    while let Some(row) = rows.next_row()? {
        out.read += 1;
        match row {
            Row::Valid(client) if sending => {
                batch.push(client);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if tx.blocking_send(full).is_err() {
                        // The writer gave up (its error is what the user sees).
                        return Ok(out);
                    }
                    progress.set_position(rows.byte_position());
                    progress.set_message(format!("{} rows", out.read));
                }
            }
            Row::Valid(_) => {}
            Row::Invalid(bad) => {
                out.rejected += 1;
                if out.problems.len() < SHOWN_PROBLEMS {
                    out.problems
                        .push((bad.line, format!("line {}: {}", bad.line, bad.reason)));
                }
                if let Some(file) = rejects.as_mut() {
                    file.write(&bad)?;
                }
                if !skip_invalid {
                    sending = false;
                    batch = Vec::new();
                }
            }
        }
    }
    if sending && !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    if let Some(file) = rejects {
        file.finish()?;
    }
    Ok(out)
}

/// `--rejects FILE`: `line,reason` then the row's original fields, under the original header.
struct RejectsFile {
    path: String,
    out: csv::Writer<File>,
}

impl RejectsFile {
    fn create(path: &Path, header: &ByteRecord) -> Result<RejectsFile> {
        let name = path.display().to_string();
        let file = File::create(path)
            .map_err(|e| Error::invalid("rejects", format!("cannot create {name}: {e}")))?;
        let mut out = csv::WriterBuilder::new().flexible(true).from_writer(file);
        let mut head = ByteRecord::new();
        head.push_field(b"line");
        head.push_field(b"reason");
        for f in header {
            head.push_field(f);
        }
        out.write_byte_record(&head)?;
        Ok(RejectsFile { path: name, out })
    }

    fn write(&mut self, bad: &Rejected) -> Result<()> {
        let mut rec = ByteRecord::new();
        rec.push_field(bad.line.to_string().as_bytes());
        rec.push_field(bad.reason.as_bytes());
        for f in &bad.raw {
            rec.push_field(f);
        }
        self.out
            .write_byte_record(&rec)
            .map_err(|e| Error::runtime(format!("cannot write {}: {e}", self.path)))
    }

    fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::runtime(format!("cannot write {}: {e}", self.path)))
    }
}

/// A row of the file: ready to insert, or rejected with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Valid(NewClient),
    Invalid(Rejected),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Physical line where the record starts.
    pub line: u64,
    pub reason: String,
    /// The fields as read, for the rejects file.
    pub raw: ByteRecord,
}

/// The import's CSV reader: header required (`email`, `full_name` or `name`, `comment`,
/// `tags`, any other column a custom field; any order, any case), UTF-8 with or without BOM,
/// `,` or `;` detected from the header line.
pub struct CsvRows<R: Read> {
    rdr: csv::Reader<io::Chain<io::Cursor<Vec<u8>>, BufReader<R>>>,
    header: ByteRecord,
    email: usize,
    full_name: Option<usize>,
    comment: Option<usize>,
    tags: Option<usize>,
    /// Custom field columns: index and key (lower-case).
    fields: Vec<(usize, String)>,
    /// The header line ends in CRLF: records end in `\r\n` (see `strip_cr`).
    crlf: bool,
    record: ByteRecord,
    scratch: Vec<u8>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn header_error(reason: impl std::fmt::Display) -> Error {
    Error::invalid("header", reason)
}

impl<R: Read> CsvRows<R> {
    /// Reads the header row; a missing or unusable header is an exit-5 error.
    pub fn new(input: R) -> Result<CsvRows<R>> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        // The first line (at most 64 KiB of it) decides the delimiter; it is then put back.
        let mut first = Vec::new();
        input
            .by_ref()
            .take(64 * 1024)
            .read_until(b'\n', &mut first)?;
        if first.starts_with(BOM) {
            first.drain(..BOM.len());
        }
        let delimiter = detect_delimiter(&first);
        let crlf = first.ends_with(b"\r\n");
        // Records end at `\n` only, so the reader's line numbers are physical line numbers
        // (with its default CRLF handling, a record after `\r\n` is reported one line early);
        // in a CRLF file the `\r` left at the end of each record is removed by `strip_cr`.
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(64 * 1024)
            .from_reader(io::Cursor::new(first).chain(input));
        let mut header = ByteRecord::new();
        let mut scratch = Vec::new();
        if !rdr.read_byte_record(&mut header)? {
            return Err(header_error(
                "the file is empty: a header row is required (email,full_name,comment)",
            ));
        }
        if crlf {
            strip_cr(&mut header, &mut scratch);
        }
        let (mut email, mut full_name, mut comment, mut tags) = (None, None, None, None);
        let mut fields: Vec<(usize, String)> = Vec::new();
        for (i, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|_| header_error("invalid UTF-8 in the header row"))?
                .trim()
                .to_lowercase();
            let slot = match name.as_str() {
                "email" => &mut email,
                "full_name" | "name" => &mut full_name,
                "comment" => &mut comment,
                "tags" => &mut tags,
                _ => {
                    // Any other column is a custom field of the client.
                    let key = validate::field_key(&format!("column {}", i + 1), &name)
                        .map_err(header_error)?;
                    if fields.iter().any(|(_, k)| *k == key) {
                        return Err(header_error(format!("column '{key}' appears twice")));
                    }
                    fields.push((i, key));
                    continue;
                }
            };
            if slot.replace(i).is_some() {
                return Err(header_error(format!("column '{name}' appears twice")));
            }
        }
        let email = email.ok_or_else(|| {
            header_error("no email column (a header row is required: email,full_name,comment)")
        })?;
        Ok(CsvRows {
            rdr,
            header,
            email,
            full_name,
            comment,
            tags,
            fields,
            crlf,
            record: ByteRecord::new(),
            scratch,
        })
    }

    pub fn header(&self) -> &ByteRecord {
        &self.header
    }

    /// The optional columns the file has.
    pub fn columns(&self) -> Columns {
        Columns {
            tags: self.tags.is_some(),
            fields: !self.fields.is_empty(),
        }
    }

    /// Bytes consumed so far (for the progress bar).
    pub fn byte_position(&self) -> u64 {
        self.rdr.position().byte()
    }

    /// The next row, or None at the end. Only I/O failures are errors; a bad row is a `Row`.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let line = loop {
            if !self
                .rdr
                .read_byte_record(&mut self.record)
                .map_err(|e| Error::runtime(format!("cannot read the CSV input: {e}")))?
            {
                return Ok(None);
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.crlf {
                strip_cr(&mut self.record, &mut self.scratch);
                // A blank line of a CRLF file (the reader skips those of an LF file itself).
                if self.record.len() == 1 && self.record[0].is_empty() {
                    continue;
                }
            }
            break line;
        };
        Ok(Some(match self.check(line) {
            Ok(client) => Row::Valid(client),
            Err(reason) => Row::Invalid(Rejected {
                line,
                reason,
                raw: self.record.clone(),
            }),
        }))
    }

    /// Validates the current record exactly as `clients add` validates its flags.
    fn check(&self, line: u64) -> std::result::Result<NewClient, String> {
        let rec = &self.record;
        if rec.len() > self.header.len() {
            return Err(format!(
                "too many columns ({}; the header has {})",
                rec.len(),
                self.header.len()
            ));
        }
        let field = |i: Option<usize>, name: &str| -> std::result::Result<&str, String> {
            match i.and_then(|i| rec.get(i)) {
                None => Ok(""),
                Some(b) => std::str::from_utf8(b).map_err(|_| format!("invalid UTF-8 in {name}")),
            }
        };
        let email = field(Some(self.email), "email")?;
        let full_name = field(self.full_name, "full_name")?;
        let comment = field(self.comment, "comment")?;
        if email.trim().is_empty() {
            return Err("missing email".into());
        }
        let email = validate::email("email", email).map_err(|e| e.to_string())?;
        let full_name =
            validate::line("full_name", full_name, MAX_NAME).map_err(|e| e.to_string())?;
        let comment = validate::text("comment", comment, MAX_COMMENT).map_err(|e| e.to_string())?;
        let tags = Tags::from_cell(field(self.tags, "tags")?).map_err(|r| format!("tags: {r}"))?;
        let mut fields = Fields::default();
        for (i, key) in &self.fields {
            let value = field(Some(*i), key)?;
            if !value.is_empty() {
                let value = validate::field_value(key, value).map_err(|e| e.to_string())?;
                fields.set(key.clone(), value);
            }
        }
        Ok(NewClient {
            line,
            key: email_key(&email),
            search: crate::db::search::key(&email, &full_name, &comment),
            email,
            full_name,
            comment,
            tags: tags.stored(),
            fields: fields.stored(),
        })
    }
}

/// Removes the `\r` of a `\r\n` record end from the record's last field.
fn strip_cr(rec: &mut ByteRecord, scratch: &mut Vec<u8>) {
    let n = rec.len();
    match rec.get(n.wrapping_sub(1)) {
        Some(last) if last.ends_with(b"\r") => {
            scratch.clear();
            scratch.extend_from_slice(&last[..last.len() - 1]);
            rec.truncate(n - 1);
            rec.push_field(scratch);
        }
        _ => {}
    }
}

/// `;` when the header line has more semicolons than commas outside quotes, else `,`.
fn detect_delimiter(line: &[u8]) -> u8 {
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas { b';' } else { b',' }
}

/// Every client the caller may read, streamed: CSV unless `--format json`. CSV has the
/// import's columns: email, full_name, comment, tags, then one column per custom field.
pub async fn export(ctx: &Ctx, actor: &Actor) -> Result<()> {
    let db = ctx.db().await?;
    let scope = scope(actor, Access::Read);
    if ctx.format() == Format::Json {
        let mut out = ListWriter::<ExportRow>::new(Format::Json)?;
        store::export(db, scope, |row| out.row(&row)).await?;
        return out.finish();
    }
    let keys = store::field_keys(db, scope).await?;
    let mut out = csv::WriterBuilder::new()
        .from_writer(io::BufWriter::with_capacity(64 * 1024, io::stdout()));
    let mut header: Vec<&str> = vec!["email", "full_name", "comment", "tags"];
    header.extend(keys.iter().map(String::as_str));
    out.write_record(&header)?;
    let mut record = Vec::with_capacity(header.len());
    store::export(db, scope, |row| {
        record.clear();
        record.extend([row.email, row.full_name, row.comment, row.tags.cell()]);
        record.extend(
            keys.iter()
                .map(|k| row.fields.get(k).unwrap_or_default().to_string()),
        );
        Ok(out.write_record(&record)?)
    })
    .await?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &str) -> Vec<Row> {
        let mut r = CsvRows::new(input.as_bytes()).expect("header");
        let mut out = Vec::new();
        while let Some(row) = r.next_row().expect("read") {
            out.push(row);
        }
        out
    }

    fn reasons(input: &str) -> Vec<String> {
        rows(input)
            .into_iter()
            .filter_map(|r| match r {
                Row::Invalid(b) => Some(format!("line {}: {}", b.line, b.reason)),
                Row::Valid(_) => None,
            })
            .collect()
    }

    #[test]
    fn header_any_order_case_bom_and_semicolons() {
        let r = rows("\u{feff}Comment;NAME;Email\r\nhi;Ann;ANN@example.com\r\n");
        let Row::Valid(c) = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(
            (c.email.as_str(), c.key.as_str(), c.full_name.as_str()),
            ("ANN@example.com", "ann@example.com", "Ann")
        );
        assert_eq!((c.comment.as_str(), c.line), ("hi", 2));
    }

    #[test]
    fn bad_headers_are_exit_5() {
        for bad in [
            "",
            "full_name\nAnn\n",
            "email,email\n",
            "email,city,City\n",
            "email,\n",
            "email,a|b\n",
        ] {
            let e = CsvRows::new(bad.as_bytes()).err().expect(bad);
            assert_eq!(e.exit_code(), 5, "{bad}: {e}");
        }
    }

    #[test]
    fn row_problems_name_physical_lines() {
        let input = "email,full_name,comment\n\
                     ok@example.com,\"Multi\",\"two\nlines\"\n\
                     ,No Email,\n\
                     bad,Bad,\n\
                     x@example.com,a,b,c\n";
        assert_eq!(
            reasons(input),
            vec![
                "line 4: missing email",
                "line 5: email: 'bad' is not a valid email address",
                "line 6: too many columns (4; the header has 3)",
            ]
        );
        let long = format!("email,full_name\nx@example.com,{}\n", "я".repeat(201));
        assert_eq!(
            reasons(&long),
            vec!["line 2: full_name: is longer than 200 characters"]
        );
    }

    #[test]
    fn crlf_files_number_lines_physically() {
        let input = "email,comment\r\na@example.com,x\r\n\r\n\"b@example.com\",\"two\r\nlines\r\"\r\nbad\r\n";
        let r = rows(input);
        let got: Vec<(u64, String)> = r
            .iter()
            .map(|row| match row {
                Row::Valid(c) => (c.line, c.comment.clone()),
                Row::Invalid(b) => (b.line, b.reason.clone()),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "x".to_string()),
                (4, "two\r\nlines\r".to_string()),
                (6, "email: 'bad' is not a valid email address".to_string()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_a_row_problem() {
        let mut r = CsvRows::new(&b"email,name\nx@example.com,\xff\xfe\n"[..]).unwrap();
        let Some(Row::Invalid(b)) = r.next_row().unwrap() else {
            panic!("accepted")
        };
        assert_eq!(
            (b.line, b.reason.as_str()),
            (2, "invalid UTF-8 in full_name")
        );
    }

    #[test]
    fn delimiter_detection_ignores_quoted_text() {
        assert_eq!(detect_delimiter(b"email;\"full,name\";comment\n"), b';');
        assert_eq!(detect_delimiter(b"email,full_name,comment\n"), b',');
        assert_eq!(detect_delimiter(b"email\n"), b',');
    }
}
