//! Rendering of records: a table for people, JSON or CSV for scripts.
//! Field names in JSON and CSV are a public contract (documented in the man pages).

use std::io::{self, IsTerminal, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use comfy_table::{Attribute, Cell, ContentArrangement, Table, presets};
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

/// A closed pipe (`mailctl ... | head`) becomes Error::PipeClosed: stop writing, exit 0.
fn io_result(r: io::Result<()>) -> Result<()> {
    r.map_err(Error::from)
}

fn new_table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    let tty = io::stdout().is_terminal();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    // Wrap to the terminal only when it reports a usable width (a pty without a size says 0).
    if tty && table.width().is_some_and(|w| w >= 40) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    if tty {
        table.set_header(
            headers
                .iter()
                .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
        );
    } else {
        table.set_header(headers.iter().copied());
    }
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
                table.add_row(vec![h.to_string(), v]);
            }
            io_result(writeln!(out, "{table}"))
        }
        Format::Json => {
            let text = serde_json::to_string_pretty(item)?;
            io_result(writeln!(out, "{text}"))
        }
        Format::Csv => {
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
                    t.add_row(item.cells());
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
                let table = self.table.take().expect("table");
                if self.count == 0 {
                    eprintln!("(no records)");
                    return Ok(());
                }
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
