//! The run's journal: every letter the relay accepted, written down the moment its reply
//! arrives, before it waits for the next database turn. A `write` to a file survives the death
//! of the process, so when a run is killed, the next run on the same host records what the
//! journal holds instead of sending those letters again, and takes over the dead run's other
//! claims at once instead of waiting for their lease. A kill then costs at most the letters
//! that were on the wire (<= `--concurrency`).
//!
//! Files, in `$XDG_DATA_HOME/mailctl/journal/<hash of the database URL>/`:
//! - `<run>.lock`: locked (flock) for the life of the run; a lock that can be taken belongs
//!   to a dead run;
//! - `<run>.<n>.log`: accepted letters, one JSON line each, in segments that are deleted once
//!   all their letters are recorded in the database;
//! - `<run>.leases`: the lease (claim token) of each of the run's claims.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::data_dir;
use crate::db::attempts::{Finished, Next};
use crate::db::{Db, deliveries};
use crate::error::Result;

/// A segment is closed past this size (and deleted once its letters are recorded).
const SEGMENT_BYTES: u64 = 4 << 20;

pub struct Journal {
    dir: PathBuf,
    run: String,
    /// Held (locked) while the run lives.
    lock: File,
    segments: Mutex<Segments>,
    leases: Mutex<File>,
}

struct Segments {
    file: File,
    current: u32,
    bytes: u64,
    /// Letters written to each segment and not yet recorded in the database.
    pending: HashMap<u32, u64>,
}

/// One accepted letter, as the journal keeps it (times in microseconds since the epoch:
/// cheaper to write than RFC 3339, and exact).
#[derive(Deserialize)]
struct Entry {
    d: i64,
    m: i64,
    c: i64,
    o: i64,
    e: String,
    /// The recipient's name (absent in journals of versions before it was written down).
    #[serde(default)]
    n: String,
    l: i64,
    a: i64,
    r: String,
}

/// An [`Entry`] as written, borrowing from the outcome.
#[derive(Serialize)]
struct EntryRef<'a> {
    d: i64,
    m: i64,
    c: i64,
    o: i64,
    e: &'a str,
    n: &'a str,
    l: i64,
    a: i64,
    r: &'a str,
}

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The journal directory of this database on this host.
fn directory(database_url: &str) -> PathBuf {
    let hash = hex::encode(Sha256::digest(database_url.as_bytes()));
    data_dir().join("journal").join(&hash[..16])
}

impl Journal {
    /// Starts this run's journal; None (with a warning) when the directory is not writable:
    /// the run goes on, with the lease as its only crash recovery.
    pub fn start(database_url: &str) -> Option<Journal> {
        let dir = directory(database_url);
        match Journal::try_start(&dir) {
            Ok(journal) => Some(journal),
            Err(e) => {
                crate::output::log::warn(format!(
                    "no send journal in {} ({e}); after a crash, letters in flight wait for \
                     their lease",
                    dir.display()
                ));
                None
            }
        }
    }

    fn try_start(dir: &Path) -> std::io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let run = format!(
            "{}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_micros(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        // Locked under a temporary name, then renamed: a `.lock` file that can be locked is
        // always a dead run's, never one that is still starting.
        let starting = dir.join(format!(".{run}.starting"));
        let lock = create(&starting)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        std::fs::rename(&starting, dir.join(format!("{run}.lock")))?;
        let file = create(&dir.join(format!("{run}.0.log")))?;
        let leases = create(&dir.join(format!("{run}.leases")))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            run,
            lock,
            segments: Mutex::new(Segments {
                file,
                current: 0,
                bytes: 0,
                pending: HashMap::new(),
            }),
            leases: Mutex::new(leases),
        })
    }

    fn segment_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}.{n}.log", self.run))
    }

    /// Notes a claim's lease, before its letters go out.
    pub fn claimed(&self, lease_until: DateTime<Utc>) -> std::io::Result<()> {
        let line = format!("{}\n", lease_until.to_rfc3339());
        self.leases
            .lock()
            .expect("journal leases")
            .write_all(line.as_bytes())
    }

    /// Writes down an accepted letter; returns the segment that holds it.
    pub fn accepted(&self, f: &Finished) -> std::io::Result<u32> {
        let entry = EntryRef {
            d: f.delivery_id,
            m: f.mailing_id,
            c: f.client_id,
            o: f.owner_id,
            e: &f.email,
            n: &f.full_name,
            l: f.lease_until.timestamp_micros(),
            a: f.attempted_at.timestamp_micros(),
            r: &f.reply,
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut s = self.segments.lock().expect("journal");
        // One write(2): a line is never left half-written by a killed process.
        s.file.write_all(&line)?;
        s.bytes += line.len() as u64;
        let current = s.current;
        *s.pending.entry(current).or_default() += 1;
        Ok(current)
    }

    /// These letters are now recorded in the database: their segments may go.
    pub fn recorded(&self, segments: &[u32]) {
        if segments.is_empty() {
            return;
        }
        let mut s = self.segments.lock().expect("journal");
        for n in segments {
            if let Some(p) = s.pending.get_mut(n) {
                *p = p.saturating_sub(1);
            }
        }
        if s.bytes >= SEGMENT_BYTES {
            let next = s.current + 1;
            if let Ok(file) = create(&self.segment_path(next)) {
                s.file = file;
                s.current = next;
                s.bytes = 0;
            }
        }
        let current = s.current;
        let done: Vec<u32> = s
            .pending
            .iter()
            .filter(|(n, p)| **n != current && **p == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            s.pending.remove(&n);
            let _ = std::fs::remove_file(self.segment_path(n));
        }
    }

    /// The run ended. With every accepted letter recorded, its files go; otherwise they stay
    /// for the next run to record (the lock is released as the process ends either way).
    pub fn finish(self) {
        let s = self.segments.into_inner().expect("journal");
        if s.pending.values().any(|p| *p > 0) {
            return;
        }
        remove_run(&self.dir, &self.run);
        drop(self.lock);
    }
}

fn remove_run(dir: &Path, run: &str) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".log") && name.starts_with(&format!("{run}.")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(dir.join(format!("{run}.leases")));
    // Last: while the lock file exists, another run may still come to recover this one.
    let _ = std::fs::remove_file(dir.join(format!("{run}.lock")));
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    /// Dead runs found.
    pub runs: u64,
    /// Accepted letters of theirs recorded now.
    pub recorded: u64,
    /// Their other claims, released for sending now.
    pub released: u64,
}

/// Finishes the journals of dead runs of this database on this host: records the letters
/// they had sent, then releases their other claims (those may have been on the wire: the
/// only letters a kill can duplicate).
pub async fn recover(db: &Db, database_url: &str) -> Result<Recovered> {
    let dir = directory(database_url);
    let mut out = Recovered::default();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let runs: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".lock")
                .map(str::to_string)
        })
        .collect();
    for run in runs {
        let Ok(lock) = OpenOptions::new()
            .read(true)
            .open(dir.join(format!("{run}.lock")))
        else {
            continue;
        };
        // Alive (or being recovered by another run right now): not ours to touch.
        if lock.try_lock().is_err() {
            continue;
        }
        out.runs += 1;
        let done = read_entries(&dir, &run);
        out.recorded += deliveries::record_still_claimed(db, &done).await?;
        let leases: Vec<DateTime<Utc>> = std::fs::read_to_string(dir.join(format!("{run}.leases")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| DateTime::parse_from_rfc3339(l.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
            .collect();
        out.released += deliveries::release_leases(db, &leases).await?;
        remove_run(&dir, &run);
        drop(lock);
    }
    Ok(out)
}

/// The accepted letters of a run's journal, oldest segment first; a line that does not parse
/// (there should be none) is skipped.
fn read_entries(dir: &Path, run: &str) -> Vec<Finished> {
    let mut segments: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let n = name
                        .strip_prefix(&format!("{run}."))?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    segments.sort();
    let mut done = Vec::new();
    for (_, path) in segments {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(e) = serde_json::from_str::<Entry>(line)
                && let (Some(lease_until), Some(attempted_at)) = (
                    DateTime::from_timestamp_micros(e.l),
                    DateTime::from_timestamp_micros(e.a),
                )
            {
                done.push(Finished {
                    delivery_id: e.d,
                    mailing_id: e.m,
                    client_id: e.c,
                    owner_id: e.o,
                    email: e.e,
                    full_name: e.n,
                    lease_until,
                    attempted_at,
                    next: Next::Sent,
                    reply: e.r,
                });
            }
        }
    }
    done
}
