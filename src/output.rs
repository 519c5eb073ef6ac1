//! Rendering of records: a table for people, JSON or CSV for scripts.
//! Field names in JSON and CSV are a public contract (documented in the man pages).

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use comfy_table::{
    Attribute, Cell, ColumnConstraint, ContentArrangement, Row, Table, Width, presets,
};
use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A record that can be shown as a table row as well as serialised.
pub trait Record: Serialize {
    /// The serde field names, in order: the table's column titles and the CSV header.
    const HEADERS: &'static [&'static str];
    /// The cells of the table view, in the order of `HEADERS`.
    fn cells(&self) -> Vec<String>;
    /// The CSV row, when the serde form has lists or maps (which CSV cannot hold); in the
    /// order of `HEADERS`. None: the serde fields as they are.
    fn csv_cells(&self) -> Option<Vec<String>> {
        None
    }
}

/// A time in a table: local, with the zone (JSON and CSV keep RFC 3339 UTC through serde).
pub fn time(t: &DateTime<Utc>) -> String {
    crate::when::show(t)
}

/// RFC 3339 UTC to the second, for texts scripts may read.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_default()
}

/// How output looks beyond its format, set once from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// CSV starts with a UTF-8 byte order mark (`--bom`), so Excel reads it as UTF-8.
    pub bom: bool,
    /// `--format json`: the lines on stderr (warnings, a run's notes, the error at exit) are
    /// JSON objects too (see [`log`]).
    pub json_logs: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Sets the output style for the process (the first call wins).
pub fn configure(style: Style) {
    let _ = STYLE.set(style);
}

fn style() -> Style {
    STYLE.get().copied().unwrap_or_default()
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// Lines on stderr that are not records: a run's warnings and notes (send-due under cron) and
/// the error at exit. With `--format json` each is one JSON object on one line
/// (`{"level":"warning","message":"...","at":"RFC 3339"}`), so `send-due --format json >> log
/// 2>&1` keeps the log JSON lines; otherwise the text people read, unchanged.
pub mod log {
    use std::fmt::Display;

    use chrono::{SecondsFormat, Utc};

    fn emit(level: &str, message: &str, text: impl FnOnce() -> String, exit_code: Option<i32>) {
        if super::style().json_logs {
            let mut line = serde_json::json!({
                "level": level,
                "message": message,
                "at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            });
            if let Some(code) = exit_code {
                line["exit_code"] = code.into();
            }
            eprintln!("{line}");
        } else {
            eprintln!("{}", text());
        }
    }

    /// Something went wrong and the command carries on: "mailctl: warning: MESSAGE".
    pub fn warn(message: impl Display) {
        let m = message.to_string();
        emit("warning", &m, || format!("mailctl: warning: {m}"), None);
    }

    /// What a run did that is worth a line of its own: "mailctl: MESSAGE".
    pub fn note(message: impl Display) {
        let m = message.to_string();
        emit("info", &m, || format!("mailctl: {m}"), None);
    }

    /// A run's report line, shown as it is ("system letters: 1 sent, 0 waiting").
    pub fn info(message: impl Display) {
        let m = message.to_string();
        emit("info", &m, || m.clone(), None);
    }

    /// The error a command ends with: "mailctl: error: MESSAGE", or JSON with `exit_code`.
    pub fn error(message: impl Display, exit_code: i32) {
        let m = message.to_string();
        emit(
            "error",
            &m,
            || format!("mailctl: error: {m}"),
            Some(exit_code),
        );
    }
}

/// `NO_COLOR` (any non-empty value, https://no-color.org) turns every styling off.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// A cell as it can be shown on a terminal: control characters (CR, LF, TAB, ESC...) and
/// the invisible bidi overrides become visible escapes, so a value cannot break the table or
/// drive the terminal.
pub fn escape_cell(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The width a table must fit: `COLUMNS` when set, else the terminal's (none: a pipe).
fn target_width(table: &Table) -> Option<u16> {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok());
    let terminal = io::stdout().is_terminal().then(|| table.width()).flatten();
    // A pty without a size says 0: treat tiny widths as unknown.
    columns.or(terminal).filter(|w| *w >= 20)
}

/// Content widths that add up to at most `room`, narrowing the widest columns first
/// (max-min fair): a short column (an id, a status, a time) keeps its width as long as any
/// wider column can give way.
fn fair_widths(natural: &[u16], room: u16) -> Vec<u16> {
    let mut order: Vec<usize> = (0..natural.len()).collect();
    order.sort_by_key(|&i| natural[i]);
    let mut out = natural.to_vec();
    let mut left = room;
    for (k, &i) in order.iter().enumerate() {
        let share = (left / (order.len() - k) as u16).max(1);
        out[i] = natural[i].min(share);
        left = left.saturating_sub(out[i]);
    }
    out
}

/// Fits the finished table to the width: every row stays one line, cells too long for their
/// column end in "…" (nothing wraps mid-word), and the narrowing falls on the widest columns.
fn fit(table: &mut Table) {
    let Some(width) = target_width(table) else {
        return;
    };
    let natural = table.column_max_content_widths();
    // Each column has a space either side and one border; the table one more border.
    let frame = 3 * natural.len() as u16 + 1;
    let room = width.saturating_sub(frame).max(natural.len() as u16);
    if natural.iter().map(|w| u32::from(*w)).sum::<u32>() <= u32::from(room) {
        return;
    }
    table
        .set_width(width)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_truncation_indicator("…");
    for (i, w) in fair_widths(&natural, room).into_iter().enumerate() {
        if let Some(col) = table.column_mut(i) {
            // A fixed width counts the padding.
            col.set_constraint(ColumnConstraint::Absolute(Width::Fixed(w + 2)));
        }
    }
}

fn table_row(cells: Vec<String>) -> Row {
    let mut row = Row::from(cells.iter().map(|c| escape_cell(c)));
    row.max_height(1);
    row
}

/// A closed pipe (`mailctl ... | head`) becomes Error::PipeClosed: stop writing, exit 0.
fn io_result(r: io::Result<()>) -> Result<()> {
    r.map_err(Error::from)
}

fn new_table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    let styled = io::stdout().is_terminal() && !no_color();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if !styled {
        table.force_no_tty();
    }
    let mut header = if styled {
        Row::from(
            headers
                .iter()
                .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
        )
    } else {
        Row::from(headers.iter().copied())
    };
    header.max_height(1);
    table.set_header(header);
    table
}

/// Prints a list of records.
pub fn print_list<T: Record>(format: Format, items: &[T]) -> Result<()> {
    let mut w = ListWriter::<T>::new(format)?;
    for item in items {
        w.row(item)?;
    }
    w.finish()
}

/// Prints one record: a two-column table, a JSON object, or a CSV header and row.
pub fn print_one<T: Record>(format: Format, item: &T) -> Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Table => {
            let mut table = new_table(&["field", "value"]);
            for (h, v) in T::HEADERS.iter().zip(item.cells()) {
                table.add_row(table_row(vec![h.to_string(), v]));
            }
            fit(&mut table);
            io_result(writeln!(out, "{table}"))
        }
        Format::Json => {
            let text = serde_json::to_string_pretty(item)?;
            io_result(writeln!(out, "{text}"))
        }
        Format::Csv => {
            if style().bom {
                io_result(out.write_all(BOM))?;
            }
            let mut w = csv::Writer::from_writer(out);
            match item.csv_cells() {
                Some(cells) => {
                    w.write_record(T::HEADERS)?;
                    w.write_record(cells)?;
                }
                None => w.serialize(item)?,
            }
            io_result(w.flush())
        }
    }
}

/// Writes records one at a time, so JSON and CSV output of millions of rows stays streamed.
/// (A table has to see every row to size its columns, so it is buffered.)
pub struct ListWriter<T: Record> {
    format: Format,
    out: io::BufWriter<io::Stdout>,
    csv: Option<csv::Writer<io::BufWriter<io::Stdout>>>,
    table: Option<Table>,
    count: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Record> ListWriter<T> {
    pub fn new(format: Format) -> Result<Self> {
        let mut w = ListWriter {
            format,
            out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            csv: None,
            table: None,
            count: 0,
            _marker: std::marker::PhantomData,
        };
        match format {
            Format::Table => w.table = Some(new_table(T::HEADERS)),
            Format::Json => io_result(w.out.write_all(b"["))?,
            Format::Csv => {
                if style().bom {
                    io_result(w.out.write_all(BOM))?;
                    io_result(w.out.flush())?;
                }
                let mut c = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(io::BufWriter::with_capacity(64 * 1024, io::stdout()));
                // The header comes from the field list, so an empty list still has one.
                c.write_record(T::HEADERS)?;
                w.csv = Some(c);
            }
        }
        Ok(w)
    }

    pub fn row(&mut self, item: &T) -> Result<()> {
        self.count += 1;
        match self.format {
            Format::Table => {
                if let Some(t) = self.table.as_mut() {
                    t.add_row(table_row(item.cells()));
                }
                Ok(())
            }
            Format::Json => {
                let sep: &[u8] = if self.count == 1 { b"\n  " } else { b",\n  " };
                io_result(self.out.write_all(sep))?;
                serde_json::to_writer(&mut self.out, item)?;
                Ok(())
            }
            Format::Csv => {
                let c = self.csv.as_mut().expect("csv writer");
                match item.csv_cells() {
                    Some(cells) => c.write_record(cells)?,
                    None => c.serialize(item)?,
                }
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> Result<()> {
        match self.format {
            Format::Table => {
                let mut table = self.table.take().expect("table");
                if self.count == 0 {
                    eprintln!("(no records)");
                    return Ok(());
                }
                fit(&mut table);
                io_result(writeln!(self.out, "{table}"))?;
            }
            Format::Json => {
                let end: &[u8] = if self.count == 0 { b"]\n" } else { b"\n]\n" };
                io_result(self.out.write_all(end))?;
            }
            Format::Csv => {
                if let Some(mut c) = self.csv.take() {
                    io_result(c.flush())?;
                }
            }
        }
        io_result(self.out.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_columns_give_way_first() {
        // Fits already: unchanged.
        assert_eq!(fair_widths(&[2, 16, 80], 100), [2, 16, 80]);
        // The long comment takes what the short columns leave.
        assert_eq!(
            fair_widths(&[2, 16, 9, 80, 8, 20], 81),
            [2, 16, 9, 26, 8, 20]
        );
        // Too narrow for everything: the widest are cut to the same width.
        assert_eq!(fair_widths(&[2, 16, 80], 20), [2, 9, 9]);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_cell("a\rb\nc\td"), "a\\rb\\nc\\td");
        assert_eq!(escape_cell("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(escape_cell("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape_cell("Иван"), "Иван");
    }
}
