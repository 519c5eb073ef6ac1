//! The delivery rows of a run's mailings, made before and while the run sends.
//!
//! Every recipient needs a delivery row before it can be claimed. On PostgreSQL making them is
//! the costliest statement of a run (two foreign-key checks per row), so a run makes the first
//! rows of each mailing before it starts and the rest in growing chunks on a connection of
//! their own, while the first letters go out. SQLite has a single writer: there all rows are
//! made up front.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::db::audience;
use crate::db::deliveries::{self, Cursor};
use crate::db::{self, Db};
use crate::error::Result;

/// Rows made before the run starts: enough for the first turns while the next chunk is
/// written. Chunks then double up to `LAST_CHUNK` (fewer, larger transactions).
const FIRST_CHUNK: i64 = 1024;
const LAST_CHUNK: i64 = 16384;

/// Mailings whose rows are still being made, and a signal each time more rows are committed.
#[derive(Default)]
pub struct Backlog {
    unfinished: Mutex<HashSet<i64>>,
    grew: Notify,
}

impl Backlog {
    /// Mailings that may still get rows. A mailing missing from this set had all its rows
    /// committed when it was read.
    pub fn unfinished(&self) -> HashSet<i64> {
        self.unfinished.lock().expect("backlog").clone()
    }

    /// Waits until more rows are committed (or nothing more will come).
    pub async fn grown(&self) {
        self.grew.notified().await
    }

    fn finish(&self, mailing: Option<i64>) {
        let mut unfinished = self.unfinished.lock().expect("backlog");
        match mailing {
            Some(m) => {
                unfinished.remove(&m);
            }
            None => unfinished.clear(),
        }
        // One stored permit: the database loop cannot miss a signal sent between its
        // turn and its wait.
        self.grew.notify_one();
    }
}

/// Makes the first rows of each mailing now, and starts making the rest in the background
/// (PostgreSQL). Await the handle before reading a mailing's completion.
pub async fn start(
    db: &Db,
    database_url: &str,
    mailings: &[i64],
) -> Result<(Arc<Backlog>, Option<JoinHandle<Result<()>>>)> {
    let backlog = Arc::new(Backlog::default());
    let chunk = db.makes_rows_while_sending().then_some(FIRST_CHUNK);
    let mut rest = Vec::new();
    for &mailing in mailings {
        // An audience (all clients, tags) first gains whoever joined it since the last run.
        audience::resolve(db, mailing).await?;
        if let Cursor::After(after) =
            deliveries::materialise(db, mailing, 0, chunk, db::now()).await?
        {
            rest.push((mailing, after));
        }
    }
    if rest.is_empty() {
        return Ok((backlog, None));
    }
    backlog
        .unfinished
        .lock()
        .expect("backlog")
        .extend(rest.iter().map(|(m, _)| *m));
    let own = Db::connect(database_url, 1).await?;
    let task = tokio::spawn(make_rest(own, backlog.clone(), rest));
    Ok((backlog, Some(task)))
}

async fn make_rest(db: Db, backlog: Arc<Backlog>, rest: Vec<(i64, i64)>) -> Result<()> {
    let mut chunk = FIRST_CHUNK;
    let mut made = Ok(());
    'mailings: for (mailing, mut after) in rest {
        loop {
            chunk = (chunk * 2).min(LAST_CHUNK);
            match deliveries::materialise(&db, mailing, after, Some(chunk), db::now()).await {
                Ok(Cursor::After(last)) => {
                    after = last;
                    backlog.grew.notify_one();
                }
                Ok(Cursor::Done) => break,
                Err(e) => {
                    made = Err(e);
                    break 'mailings;
                }
            }
        }
        backlog.finish(Some(mailing));
    }
    // Whatever happened, nothing more will come.
    backlog.finish(None);
    db.close().await;
    made
}
