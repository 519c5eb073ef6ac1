//! The sender: claim deliveries, send them concurrently (one reused SMTP connection per
//! worker), record every try, retry temporary failures on later runs, keep to a rate.
//!
//! Guarantee (docs/delivery.md): at-least-once with a window of letters on the wire. One
//! database task claims and records; it claims only what the run can send in about the next
//! second at its measured pace (between 2 and 64 x concurrency letters claimed and not yet
//! recorded), so workers on several hosts share a mailing and a dead run strands little.
//! Every letter the relay accepts is written to the run's journal (`journal.rs`) before it
//! waits for its turn to be recorded; when the process dies at any line, the next run on the
//! host records what the journal holds and takes the other claims over at once. Only the
//! letters on the wire at the moment of death (<= concurrency) can reach a recipient twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::config::Config;
use crate::db::attempts::{Finished, Next};
use crate::db::deliveries::{self, Claim, Claimed, Taken, Target, Turns};
use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::mail::compose::{Recipient, Template};
use crate::mail::journal::{self, Journal};
use crate::mail::pace::{Meter, Pace};
use crate::mail::transport::{Endpoint, Session, Wire};
use crate::smtp::{FailureKind, Outcome, Verdict};

pub struct Options {
    /// Letters in flight at once (and SMTP connections in the pool).
    pub concurrency: usize,
    /// Letters per second, across all workers sharing `MAILCTL_REDIS_URL`.
    pub rate: Option<u32>,
    /// At most this many letters in this run.
    pub limit: Option<u64>,
    /// How long a claim holds before another worker may take the delivery over.
    pub lease: Duration,
    /// First retry delay after a temporary failure; doubles per try, up to six hours.
    pub retry_base: Duration,
    pub progress: bool,
}

impl Options {
    /// The most letters claimed and not yet recorded (64 times the concurrency): enough for
    /// the workers never to wait on the database against an instant relay. Each database turn
    /// records what finished during the previous one and claims as much again (at most half
    /// the window), so the window must cover the letters sent during a couple of turns:
    /// against smtp-sink, 16 x gave 19k letters/s on SQLite, 32 x 22k, 64 x 24k.
    ///
    /// Under `--rate N` no more than two seconds' worth (at least one letter per worker):
    /// claims must not run far ahead of the pace, or letters would wait out their lease.
    pub fn window(&self) -> usize {
        let window = self.concurrency * 64;
        match self.rate {
            Some(rate) => window.min((rate as usize * 2).max(self.concurrency)),
            None => window,
        }
    }

    /// The fewest letters claimed at a time: two per worker, so none waits for a turn.
    fn min_window(&self) -> usize {
        (self.concurrency * 2).min(self.window())
    }

    /// What the run can send in about a second at `rate` letters/s, within the bounds: claims
    /// follow the pace, so several workers share a mailing and a dead one strands little.
    fn window_at(&self, rate: Option<f64>) -> usize {
        let Some(rate) = rate else {
            return self.min_window();
        };
        (rate.ceil() as usize).clamp(self.min_window(), self.window())
    }

    /// `MAILCTL_SEND_LEASE` and `MAILCTL_RETRY_DELAY` (in `Config`) tune crash recovery and
    /// retries.
    pub fn new(
        config: &Config,
        concurrency: usize,
        rate: Option<u32>,
        limit: Option<u64>,
    ) -> Options {
        Options {
            concurrency: concurrency.clamp(1, 1024),
            rate: rate.filter(|r| *r > 0),
            limit,
            lease: config.send_lease,
            retry_base: config.retry_delay,
            progress: false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub mailings: u64,
    pub sent: u64,
    pub failed: u64,
    /// Temporary failures (4xx, no answer), tried again on a later run.
    pub deferred: u64,
    /// Letters the relay asked to send later (421, 4.7.x); they cost no try.
    pub throttled: u64,
    pub suppressed: u64,
    /// Letters a killed run had sent, recorded from its journal at the start of this one.
    pub recovered: u64,
    pub elapsed_seconds: f64,
    pub letters_per_second: f64,
    /// Why the run stopped early (SMTP server unreachable...), if it did: exit 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Why the run ended with letters left for the next run although nothing failed (a
    /// relay that keeps throttling): exit 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_for_next_run: Option<String>,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut s = format!(
            "sent {}, failed {}, deferred {}, throttled {}, suppressed {} ({} mailing{}) in {:.2}s, {:.1} letters/s",
            self.sent,
            self.failed,
            self.deferred,
            self.throttled,
            self.suppressed,
            self.mailings,
            plural(self.mailings),
            self.elapsed_seconds,
            self.letters_per_second
        );
        if self.recovered > 0 {
            s.push_str(&format!(
                "; {} letters of a killed run recorded from its journal",
                self.recovered
            ));
        }
        if let Some(why) = &self.stopped {
            s.push_str(&format!("; stopped early: {why}"));
        }
        if let Some(why) = &self.left_for_next_run {
            s.push_str(&format!("; left for the next run: {why}"));
        }
        s
    }
}

struct Job {
    claimed: Claimed,
    lease_until: DateTime<Utc>,
    claimed_at: Instant,
    /// The letter, when it was built early (its envelope went out ahead: see `worker`).
    letter: Option<Wire>,
}

/// What the database task and the workers share.
struct Shared {
    stop: AtomicBool,
    /// Set when the relay kept throttling: letters not yet sent go back for the next run.
    give_way: AtomicBool,
    stopped: std::sync::Mutex<Option<String>>,
    sent: AtomicU64,
    failed: AtomicU64,
    deferred: AtomicU64,
    throttled: AtomicU64,
    suppressed: AtomicU64,
    progress: Option<indicatif::ProgressBar>,
}

impl Shared {
    fn stop(&self, why: String) {
        let mut s = self.stopped.lock().expect("stop reason");
        if s.is_none() {
            *s = Some(why);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The run ends without sending more: stopped, or giving way to a throttling relay.
    fn halted(&self) -> bool {
        self.stopping() || self.give_way.load(Ordering::SeqCst)
    }
}

/// The state of one run, shared by the database task and the workers.
struct Run {
    db: Db,
    shared: Arc<Shared>,
    endpoint: Endpoint,
    templates: HashMap<i64, (Arc<Template>, i64)>,
    /// Each outcome, with the journal segment that holds it if the relay accepted it.
    results: mpsc::Sender<(Finished, Option<u32>)>,
    rate: Option<RateLimiter>,
    pace: Pace,
    journal: Option<Journal>,
    /// When the relay last accepted a letter, and when it last asked to slow down.
    last_accepted: std::sync::Mutex<Instant>,
    last_throttled: std::sync::Mutex<Option<Instant>>,
    unreachable_streak: AtomicU64,
    /// Some server reply was read in this run (the server is reachable).
    reached: AtomicBool,
    last_unreachable: std::sync::Mutex<Option<String>>,
    lease: Duration,
    retry_base: Duration,
    concurrency: usize,
}

/// Sends the due letters of these mailings. Returns the summary even when the run stopped
/// early (the reason is in `stopped`); an error means the database failed.
pub async fn run(
    db: &Db,
    config: &Config,
    endpoint: Endpoint,
    targets: Vec<Target>,
    opts: &Options,
) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary {
        mailings: targets.len() as u64,
        ..Summary::default()
    };
    if targets.is_empty() {
        return Ok(summary);
    }
    // A killed run's letters first: record what it sent, release the rest of its claims.
    let recovered = journal::recover(db, &config.database_url).await?;
    summary.recovered = recovered.recorded;
    if recovered.runs > 0 {
        crate::output::log::note(format!(
            "recovered {} killed run{}: {} sent letter{} recorded from the journal, {} claim{} released",
            recovered.runs,
            plural(recovered.runs),
            recovered.recorded,
            plural(recovered.recorded),
            recovered.released,
            plural(recovered.released)
        ));
    }
    let secret = db::suppressions::secret(db, "unsubscribe").await?;
    let mut templates = HashMap::new();
    let ids: Vec<i64> = targets.iter().map(|t| t.id).collect();
    let now = db::now();
    for t in &targets {
        if !db.claims_make_rows() {
            deliveries::materialise(db, t.id, now).await?;
        }
        summary.suppressed += deliveries::prepare(db, t.id, now).await?;
        let template = Template::new(
            config,
            secret.clone(),
            t.id,
            &t.subject,
            &t.body,
            t.html.as_deref(),
        )?;
        templates.insert(t.id, (Arc::new(template), t.owner_id));
    }
    let progress = if opts.progress {
        let mut total = deliveries::claimable(db, &ids, db::now()).await?;
        if let Some(limit) = opts.limit {
            total = total.min(limit);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} letters, {per_sec}, eta {eta}",
            )
            .expect("progress template"),
        );
        Some(bar)
    } else {
        None
    };

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        give_way: AtomicBool::new(false),
        stopped: std::sync::Mutex::new(None),
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        suppressed: AtomicU64::new(0),
        progress,
    });
    // Neither queue ever holds more than the window, so sending on them never waits.
    let (result_tx, result_rx) = mpsc::channel::<(Finished, Option<u32>)>(opts.window());
    let (job_tx, job_rx) = mpsc::channel::<Job>(opts.window());
    let rate = match opts.rate {
        Some(r) => Some(RateLimiter::new(r, config.redis_url.as_deref()).await),
        None => None,
    };
    let run = Arc::new(Run {
        db: db.clone(),
        endpoint,
        templates,
        results: result_tx,
        shared: shared.clone(),
        rate,
        pace: Pace::default(),
        journal: Journal::start(&config.database_url),
        last_accepted: std::sync::Mutex::new(Instant::now()),
        last_throttled: std::sync::Mutex::new(None),
        unreachable_streak: AtomicU64::new(0),
        reached: AtomicBool::new(false),
        last_unreachable: std::sync::Mutex::new(None),
        lease: opts.lease,
        retry_base: opts.retry_base,
        concurrency: opts.concurrency,
    });

    let job_rx = Arc::new(Mutex::new(job_rx));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| tokio::spawn(worker(run.clone(), job_rx.clone())))
        .collect();
    let database = db_loop(&run, &ids, opts, result_rx, job_tx).await;
    let left_for_next_run = database.as_ref().ok().cloned().flatten();
    for w in workers {
        w.await
            .map_err(|e| Error::runtime(format!("sender worker: {e}")))?;
    }
    // No reply at all and connections refused (or AUTH/TLS failed): the server is down
    // (exit 1), even when too few letters were due to trip the streak.
    let down = if run.reached.load(Ordering::SeqCst) {
        None
    } else {
        run.last_unreachable
            .lock()
            .expect("last unreachable")
            .take()
            .map(|why| format!("SMTP server unreachable: {why}"))
    };
    let Run { journal, .. } = Arc::into_inner(run).expect("the workers are done");
    if let Some(journal) = journal {
        journal.finish();
    }
    let Shared {
        sent,
        failed,
        deferred,
        throttled,
        suppressed,
        progress,
        stopped,
        ..
    } = Arc::into_inner(shared).expect("the workers are done");
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    database?;

    for t in &targets {
        deliveries::complete_if_done(db, t.id).await?;
    }
    summary.sent = sent.into_inner();
    summary.failed = failed.into_inner();
    summary.deferred = deferred.into_inner();
    summary.throttled = throttled.into_inner();
    summary.suppressed += suppressed.into_inner();
    summary.stopped = stopped.into_inner().expect("stop reason").or(down);
    if summary.stopped.is_none() {
        summary.left_for_next_run = left_for_next_run;
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    let letters = summary.sent + summary.failed + summary.deferred + summary.throttled;
    if summary.elapsed_seconds > 0.0 {
        summary.letters_per_second = letters as f64 / summary.elapsed_seconds;
    }
    Ok(summary)
}

/// How long a run goes on while the relay only ever asks to slow down (no letter accepted):
/// five retry delays, between 5 s and a minute. Then the rest waits for the next run.
fn throttle_patience(run: &Run) -> Duration {
    (run.retry_base * 5).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Throttled letters come back this soon (the pace, not this delay, spaces them out).
const THROTTLED_AGAIN: Duration = Duration::from_millis(500);

/// The run's only user of the database once it has started: each turn, in one transaction,
/// records the outcomes that came in and claims as many deliveries as the window has room
/// for. While a turn runs the workers send what the previous turn claimed, and whatever
/// finishes meanwhile goes into the next turn, so turns grow with the load (group commit).
///
/// The window (claimed and not yet recorded) follows the measured pace: what the run can
/// send in about a second, from 2 to 64 x concurrency. Returns why letters were left for the
/// next run although nothing failed, if they were.
async fn db_loop(
    run: &Run,
    ids: &[i64],
    opts: &Options,
    mut results: mpsc::Receiver<(Finished, Option<u32>)>,
    jobs: mpsc::Sender<Job>,
) -> Result<Option<String>> {
    let max_window = opts.window();
    // One connection does all of the run's claims and writes, in turns: SQLite has a single
    // write lock anyway, and on PostgreSQL the stats triggers lock the mailing's counters
    // until commit, so concurrent writers would queue behind each other.
    let mut turns = Turns::new(&run.db);
    // Claimed and not yet recorded.
    let mut outstanding = 0usize;
    let mut remaining = opts.limit.unwrap_or(u64::MAX);
    // Letters finished per second (sent or not): the pace the window follows.
    let mut pace = Meter::default();
    // Mailings that may still have rows never tried; a sweep also looks for lapsed leases
    // and due retries, in every mailing of the run. The run has claimed all it can once no
    // mailing is active and a sweep found nothing.
    let mut active: Vec<i64> = ids.to_vec();
    let mut last_sweep: Option<Instant> = None;
    let mut swept_empty = false;
    let mut claim_error = None;
    let mut write_error = None;
    let mut gave_way = None;
    let mut jobs = Some(jobs);
    // Claimed rows the owner may no longer write to: recorded as suppressed in the next turn.
    let mut carried: Vec<Finished> = Vec::new();
    // PostgreSQL: how far each mailing's recipients have been looked at for rows to make.
    let mut made_through: HashMap<i64, i64> = HashMap::new();
    // Throttled letters of this run come back at this time at the latest.
    let mut throttled_until: Option<DateTime<Utc>> = None;
    loop {
        // The relay has only asked to slow down for a long while: leave the rest.
        if gave_way.is_none()
            && let Some(since) = *run.last_throttled.lock().expect("throttled")
        {
            let accepted = *run.last_accepted.lock().expect("accepted");
            let patience = throttle_patience(run);
            if since > accepted && accepted.elapsed() >= patience {
                gave_way = Some(format!(
                    "the relay accepted nothing for {}s and kept asking to slow down",
                    patience.as_secs()
                ));
                run.shared.give_way.store(true, Ordering::SeqCst);
            }
        }
        // Nothing left to claim as of the last sweep; but letters still in flight may come
        // back unsent (released), so the run goes on sweeping until they are all recorded.
        let mut idle = active.is_empty() && swept_empty;
        let claiming_possible = remaining > 0
            && claim_error.is_none()
            && write_error.is_none()
            && gave_way.is_none()
            && !run.shared.stopping();
        // Throttled letters due again soon: wait for them rather than end the run.
        if idle
            && outstanding == 0
            && claiming_possible
            && carried.is_empty()
            && let Some(until) = throttled_until.take()
        {
            let wait = (until - db::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            swept_empty = false;
            idle = false;
        }
        let claiming = !(idle && outstanding == 0) && claiming_possible;
        if !claiming {
            // The workers end once the job queue is closed and empty.
            jobs = None;
        }
        let mut window = opts.window_at(pace.rate(Instant::now())).min(max_window);
        // Under a throttling relay's pace, no more than a second's worth, however few.
        if let Some(limit) = run.pace.limit() {
            window = window.min((limit.ceil() as usize).max(1));
        }
        let mut done = std::mem::take(&mut carried);
        let mut segments = Vec::new();
        // Wait for an outcome, unless a worthwhile claim can be made right away.
        let eager = claiming && !idle && window.saturating_sub(outstanding) >= (window / 4).max(1);
        if done.is_empty() && !eager {
            if outstanding == 0 {
                break;
            }
            match results.recv().await {
                Some((f, segment)) => {
                    done.push(f);
                    segments.extend(segment);
                }
                None => break,
            }
        }
        drain(&mut results, &mut done, &mut segments, max_window);
        // Group commit: while the workers still have half the window queued or on the wire,
        // let more outcomes gather before the turn. Each turn is a transaction (a commit, a
        // round trip per statement, the batch's pages written to the WAL); gathering a few
        // milliseconds' worth cut the turns of 20,000 letters from ~840 to ~130.
        if !done.is_empty()
            && done.len() < window / 4
            && outstanding - done.len() > window / 2
            && !run.shared.stopping()
        {
            tokio::time::sleep(GATHER).await;
            drain(&mut results, &mut done, &mut segments, max_window);
        }
        pace.add(
            Instant::now(),
            done.iter().filter(|f| f.tried()).count() as u64,
        );
        if write_error.is_some() {
            // Nothing can be recorded: count the letters out and let the leases lapse (the
            // journal keeps the accepted ones for the next run).
            outstanding -= done.len();
            continue;
        }
        let room = (window + done.len()).saturating_sub(outstanding);
        // At most half the window per turn: the other half keeps the workers busy meanwhile.
        let n = if claiming && room > 0 {
            (room.min(window / 2).max(1) as u64).min(remaining) as usize
        } else {
            0
        };
        let now = db::now();
        let lease_until = now + chrono::Duration::from_std(run.lease).expect("lease fits");
        // Sweeps: at the start, once a second, and whenever no mailing has fresh rows left;
        // the turns in between take rows never tried.
        let sweep = n > 0
            && (active.is_empty()
                || last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)));
        let claim = Claim {
            // Every mailing of the run in a sweep, else those not drained.
            mailing_ids: if sweep { ids } else { &active },
            n,
            now,
            lease_until,
            sweep,
            made_through: &made_through,
        };
        // The claim's lease goes into the journal before the claim is committed: a run that
        // finds this one dead releases every claim it made at once.
        if n > 0
            && let Some(journal) = &run.journal
            && let Err(e) = journal.claimed(lease_until)
        {
            crate::output::log::warn(format!("send journal: {e}"));
        }
        let taken = match turns.turn((n > 0).then_some(&claim), &done).await {
            Ok(taken) => taken,
            Err(e) if n > 0 => {
                // Try the outcomes alone before giving up on the run.
                run.shared.stop(format!("cannot claim deliveries: {e}"));
                claim_error = Some(e);
                match record_with_retries(&mut turns, &done).await {
                    Ok(()) => Taken::default(),
                    Err(e) => {
                        write_error = Some(e);
                        outstanding -= done.len();
                        continue;
                    }
                }
            }
            Err(_) => match record_with_retries(&mut turns, &done).await {
                Ok(()) => Taken::default(),
                Err(e) => {
                    run.shared
                        .stop("cannot record results in the database".into());
                    write_error = Some(e);
                    outstanding -= done.len();
                    continue;
                }
            },
        };
        if let Some(journal) = &run.journal {
            journal.recorded(&segments);
        }
        outstanding -= done.len();
        count(&run.shared, &done);
        for f in &done {
            if let Next::Throttled(at) = f.next {
                throttled_until = Some(throttled_until.map_or(at, |t| t.max(at)));
            }
        }
        let released = done.iter().any(|f| f.next == Next::Release);
        if sweep {
            last_sweep = Some(Instant::now());
            // Letters released back in this very turn can be claimed again in the next.
            swept_empty = taken.rows.is_empty() && !released;
            active = ids.to_vec();
        }
        // Where the claims make the rows, released rows wait for a sweep while rows are still
        // being made for their mailing: sweep next, so they go out again at once.
        if released {
            last_sweep = None;
        }
        active.retain(|m| !taken.drained.contains(m));
        made_through.extend(taken.made_through);
        let rows = taken.rows;
        if rows.is_empty() {
            continue;
        }
        remaining -= rows.len() as u64;
        outstanding += rows.len();
        let claimed_at = Instant::now();
        for claimed in rows {
            if claimed.suppressed {
                carried.push(finished(
                    run,
                    &claimed,
                    lease_until,
                    db::now(),
                    Next::Suppressed,
                    deliveries::SUPPRESSED_REPLY,
                ));
                continue;
            }
            let job = Job {
                claimed,
                lease_until,
                claimed_at,
                letter: None,
            };
            if let Some(tx) = &jobs {
                // The queue holds the whole window: this never waits.
                if tx.send(job).await.is_err() {
                    outstanding -= 1;
                }
            }
        }
    }
    match (claim_error, write_error) {
        (_, Some(e)) | (Some(e), None) => Err(e),
        (None, None) => Ok(gave_way),
    }
}

/// How long a turn waits for more outcomes while the workers are busy (see `db_loop`).
const GATHER: Duration = Duration::from_millis(4);

/// Takes the outcomes already in, up to `max` in all.
fn drain(
    results: &mut mpsc::Receiver<(Finished, Option<u32>)>,
    done: &mut Vec<Finished>,
    segments: &mut Vec<u32>,
    max: usize,
) {
    while done.len() < max {
        match results.try_recv() {
            Ok((f, segment)) => {
                done.push(f);
                segments.extend(segment);
            }
            Err(_) => break,
        }
    }
}

/// Records outcomes alone (no claim), retrying a few times over about four seconds.
async fn record_with_retries(turns: &mut Turns, done: &[Finished]) -> Result<()> {
    let mut failure = None;
    for pause in [200u64, 1000, 3000] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match turns.turn(None, done).await {
            Ok(_) => return Ok(()),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure.expect("tried at least once"))
}

/// Outcomes count in the summary once they are durable.
fn count(shared: &Shared, done: &[Finished]) {
    for f in done {
        let counter = match f.next {
            Next::Sent => &shared.sent,
            Next::Failed => &shared.failed,
            Next::Retry(_) => &shared.deferred,
            Next::Throttled(_) => &shared.throttled,
            Next::Suppressed => {
                shared.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Next::Release => continue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &shared.progress {
            bar.inc(1);
        }
    }
}

async fn worker(run: Arc<Run>, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut session = run.endpoint.session();
    // The job taken while the last letter went out, its envelope written behind that body.
    let mut upcoming: Option<Job> = None;
    loop {
        let job = match upcoming.take() {
            Some(job) => Some(job),
            None => jobs.lock().await.recv().await,
        };
        let Some(job) = job else { break };
        let finished = if run.shared.halted() {
            release(&run, &job, "run stopped before this letter was sent")
        } else {
            send_one(&run, &mut session, &job, &jobs, &mut upcoming).await
        };
        // An accepted letter is written down before it waits for its turn to be recorded.
        let segment = match (&run.journal, finished.next) {
            (Some(journal), Next::Sent) => match journal.accepted(&finished) {
                Ok(segment) => Some(segment),
                Err(e) => {
                    crate::output::log::warn(format!("send journal: {e}"));
                    None
                }
            },
            _ => None,
        };
        if run.results.send((finished, segment)).await.is_err() {
            run.shared.stop("the database task stopped".into());
        }
    }
    session.close().await;
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn release(run: &Run, job: &Job, why: &str) -> Finished {
    finished(
        run,
        &job.claimed,
        job.lease_until,
        db::now(),
        Next::Release,
        why,
    )
}

/// The outcome of a claimed delivery, sent or not, as the next turn records it.
fn finished(
    run: &Run,
    c: &Claimed,
    lease_until: DateTime<Utc>,
    attempted_at: DateTime<Utc>,
    next: Next,
    reply: &str,
) -> Finished {
    Finished {
        delivery_id: c.id,
        mailing_id: c.mailing_id,
        client_id: c.client_id,
        owner_id: run.templates.get(&c.mailing_id).map(|t| t.1).unwrap_or(0),
        email: c.email.clone(),
        full_name: c.full_name.clone(),
        lease_until,
        attempted_at,
        next,
        reply: reply.to_string(),
    }
}

/// The next job of the queue if more are waiting than there are workers, with its letter
/// built, so its envelope can go out behind this letter's body (one round trip per letter
/// instead of two). Only while nothing paces the letters (`--rate`, a throttling relay): a
/// letter's slot must come before its envelope.
fn take_ahead(run: &Run, jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    if run.rate.is_some() || run.pace.limit().is_some() || run.shared.halted() {
        return None;
    }
    let mut job = {
        let mut queue = jobs.try_lock().ok()?;
        // Not while the other workers could want it: against a slow relay a job held here
        // for a second would wait while a connection sits idle (and the run's tail grows).
        if queue.len() <= run.concurrency {
            return None;
        }
        queue.try_recv().ok()?
    };
    // Once taken, the job is this worker's: without a letter here, `send_one` decides.
    let c = &job.claimed;
    if let Some((template, _)) = run.templates.get(&c.mailing_id) {
        let recipient = Recipient {
            client_id: c.client_id,
            email: &c.email,
            full_name: &c.full_name,
            fields: &c.fields,
        };
        job.letter = template.letter(&recipient).ok().map(|m| Wire::from(&m));
    }
    Some(job)
}

async fn send_one(
    run: &Run,
    session: &mut Session,
    job: &Job,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    upcoming: &mut Option<Job>,
) -> Finished {
    let c = &job.claimed;
    let Some((template, _)) = run.templates.get(&c.mailing_id) else {
        return release(run, job, "unknown mailing");
    };
    // The outcome must be recorded while the claim still holds; a job that waited too long
    // goes back unsent rather than risk a second worker sending it too.
    let budget = run.lease.saturating_sub(job.claimed_at.elapsed());
    if budget < run.lease / 2 {
        return release(run, job, "claim too old");
    }
    if !run.pace.wait(|| run.shared.halted()).await {
        return release(run, job, "run stopped before this letter was sent");
    }
    if let Some(rate) = &run.rate {
        rate.acquire().await;
    }
    let recipient = Recipient {
        client_id: c.client_id,
        email: &c.email,
        full_name: &c.full_name,
        fields: &c.fields,
    };
    let built;
    let letter = match &job.letter {
        Some(letter) => letter,
        None => match template.letter(&recipient) {
            Ok(m) => {
                built = Wire::from(&m);
                &built
            }
            Err(e) => {
                let text = format!("not sent: {e}");
                return finished(run, c, job.lease_until, db::now(), Next::Failed, &text);
            }
        },
    };
    if upcoming.is_none() {
        *upcoming = take_ahead(run, jobs);
    }
    let next = upcoming.as_ref().and_then(|j| j.letter.as_ref());
    let budget = run.lease.saturating_sub(job.claimed_at.elapsed()) * 3 / 4;
    let outcome = match tokio::time::timeout(budget, session.send_wire(letter, next)).await {
        Ok(o) => o,
        Err(_) => {
            session.reset();
            Outcome::lost(format!(
                "timed out after {:.0}s (claim lease)",
                budget.as_secs_f64()
            ))
        }
    };
    let now = db::now();
    let next = match outcome.verdict() {
        Verdict::Positive => {
            run.pace.accepted();
            *run.last_accepted.lock().expect("accepted") = Instant::now();
            Next::Sent
        }
        Verdict::Permanent => Next::Failed,
        Verdict::Throttled => {
            run.pace.throttled();
            *run.last_throttled.lock().expect("throttled") = Some(Instant::now());
            Next::Throttled(now + chrono::Duration::from_std(THROTTLED_AGAIN).expect("short"))
        }
        Verdict::Temporary => {
            let shift = (c.tries.max(1) - 1).min(12) as u32;
            let delay = (run.retry_base * 2u32.pow(shift)).min(Duration::from_secs(6 * 3600));
            Next::Retry(now + chrono::Duration::from_std(delay).unwrap_or_default())
        }
    };
    if outcome.is_unreachable() {
        if let Outcome::NoReply(f) = &outcome
            && f.kind == FailureKind::Connect
        {
            *run.last_unreachable.lock().expect("last unreachable") = Some(f.text.clone());
        }
        let streak = run.unreachable_streak.fetch_add(1, Ordering::SeqCst) + 1;
        if streak >= (run.concurrency as u64).max(3) {
            run.shared
                .stop(format!("SMTP server unreachable: {}", outcome.text()));
        }
    } else {
        run.unreachable_streak.store(0, Ordering::SeqCst);
        run.reached.store(true, Ordering::SeqCst);
    }
    finished(run, c, job.lease_until, now, next, outcome.text())
}

/// `--rate N`: letters are spaced 1/N s apart. With Redis the schedule is shared by every
/// worker (a GCRA "theoretical arrival time" kept in one key); without it, per process.
enum RateLimiter {
    Local {
        interval: Duration,
        next: std::sync::Mutex<Instant>,
    },
    Redis {
        interval_us: u64,
        conn: redis::aio::MultiplexedConnection,
        script: redis::Script,
        local: Box<RateLimiter>,
    },
}

const RATE_KEY: &str = "mailctl:send:rate";
const RATE_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ttl = math.floor((tat + interval - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', ttl)
return math.floor(tat - now)
"#;

impl RateLimiter {
    async fn new(rate: u32, redis_url: Option<&str>) -> RateLimiter {
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let local = RateLimiter::Local {
            interval,
            next: std::sync::Mutex::new(Instant::now()),
        };
        let Some(url) = redis_url else { return local };
        let conn = match crate::cache::connect(url).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                crate::cache::warn_unavailable(url, e, "--rate applies to this process only");
                None
            }
        };
        match conn {
            Some(conn) => RateLimiter::Redis {
                interval_us: interval.as_micros().max(1) as u64,
                conn,
                script: redis::Script::new(RATE_SCRIPT),
                local: Box::new(local),
            },
            None => local,
        }
    }

    async fn acquire(&self) {
        let wait = match self {
            RateLimiter::Local { interval, next } => {
                let mut next = next.lock().expect("rate limiter");
                let now = Instant::now();
                let slot = (*next).max(now);
                *next = slot + *interval;
                slot - now
            }
            RateLimiter::Redis {
                interval_us,
                conn,
                script,
                local,
            } => {
                let mut conn = conn.clone();
                let reply: redis::RedisResult<i64> = script
                    .key(RATE_KEY)
                    .arg(*interval_us)
                    .invoke_async(&mut conn)
                    .await;
                match reply {
                    Ok(us) => Duration::from_micros(us.max(0) as u64),
                    Err(_) => return Box::pin(local.acquire()).await,
                }
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
