//! The sender: claim deliveries, send them concurrently (one reused SMTP connection per
//! worker), record every try, retry temporary failures on later runs, keep to a rate.
//!
//! Guarantee (docs/delivery.md): at-least-once with a bounded window. A semaphore of
//! `Options::window()` permits (16 x concurrency) bounds the letters claimed and not yet
//! recorded; a permit comes back only when its outcome is committed. When the process dies at
//! any line, at most that many letters can have reached the server without their outcome
//! being recorded; those (and only those) may be sent again once their lease lapses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::config::Config;
use crate::db::attempts::{self, Finished, Next};
use crate::db::deliveries::{self, Claimed, Target};
use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::mail::compose::{Recipient, Template};
use crate::mail::transport::{Endpoint, Outcome, Session, smtp_timeout};

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

fn env_seconds(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl Options {
    /// Letters that may be claimed but not yet recorded (sixteen times the concurrency): the
    /// most a crash can send twice. Results are committed in groups and each commit waits
    /// for the disk (and, on PostgreSQL, for the stats counters' row locks), so throughput
    /// is about window / (claim + send + commit latency): 4 x concurrency gave 7.7k (SQLite)
    /// and 3.3k (PostgreSQL) letters/s against smtp-sink, 16 x gives 12k and 4.8k.
    pub fn window(&self) -> usize {
        self.concurrency * 16
    }

    /// `MAILCTL_SEND_LEASE` (seconds, default the larger of 10 minutes and 10 SMTP timeouts)
    /// and `MAILCTL_RETRY_DELAY` (seconds, default 60) tune crash recovery and retries.
    pub fn new(concurrency: usize, rate: Option<u32>, limit: Option<u64>) -> Options {
        let lease = env_seconds("MAILCTL_SEND_LEASE")
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| (smtp_timeout() * 10).max(Duration::from_secs(600)));
        Options {
            concurrency: concurrency.clamp(1, 1024),
            rate: rate.filter(|r| *r > 0),
            limit,
            lease,
            retry_base: env_seconds("MAILCTL_RETRY_DELAY").unwrap_or(Duration::from_secs(60)),
            progress: false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub mailings: u64,
    pub sent: u64,
    pub failed: u64,
    pub deferred: u64,
    pub suppressed: u64,
    pub elapsed_seconds: f64,
    pub letters_per_second: f64,
    /// Why the run stopped early (SMTP server unreachable...), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut s = format!(
            "sent {}, failed {}, deferred {}, suppressed {} ({} mailing{}) in {:.2}s, {:.1} letters/s",
            self.sent,
            self.failed,
            self.deferred,
            self.suppressed,
            self.mailings,
            if self.mailings == 1 { "" } else { "s" },
            self.elapsed_seconds,
            self.letters_per_second
        );
        if let Some(why) = &self.stopped {
            s.push_str(&format!("; stopped early: {why}"));
        }
        s
    }
}

struct Job {
    claimed: Claimed,
    lease_until: DateTime<Utc>,
    claimed_at: Instant,
}

/// What the claimer, the workers and the writer share.
struct Shared {
    stop: AtomicBool,
    stopped: std::sync::Mutex<Option<String>>,
    sent: AtomicU64,
    failed: AtomicU64,
    deferred: AtomicU64,
    progress: Option<indicatif::ProgressBar>,
    /// One permit per letter that may be claimed but not yet recorded: the window.
    window: Arc<Semaphore>,
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
}

/// The state of one run, shared by the claimer and the workers.
struct Run {
    db: Db,
    shared: Arc<Shared>,
    endpoint: Endpoint,
    templates: HashMap<i64, (Arc<Template>, i64)>,
    writer: mpsc::Sender<Finished>,
    rate: Option<RateLimiter>,
    throttle: Throttle,
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
    let secret = db::suppressions::secret(db, "unsubscribe").await?;
    let mut templates = HashMap::new();
    let now = db::now();
    for t in &targets {
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
    let ids: Vec<i64> = targets.iter().map(|t| t.id).collect();
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

    // SQLite has one write lock per database: claims and result writes of this process go
    // through one connection, queued in the pool, instead of meeting in SQLite's busy handler
    // (which sleeps in steps of milliseconds).
    // PostgreSQL: one writer too. The stats triggers lock the mailing's counters and the
    // owner's version row until commit, so concurrent writers would wait on each other's WAL
    // flushes anyway; one writer commits larger groups (7.7k vs 6.0k letters/s with three).
    // The pool has a connection for the writer and one for the claimer.
    let writers = 1;
    let work_db = Db::connect(&config.database_url, writers + 1).await?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stopped: std::sync::Mutex::new(None),
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
        progress,
        window: Arc::new(Semaphore::new(opts.window())),
    });
    let (writer_tx, writer_rx) = mpsc::channel(opts.window());
    let writer_rx = Arc::new(Mutex::new(writer_rx));
    let writer: Vec<_> = (0..writers)
        .map(|_| {
            tokio::spawn(write_results(
                work_db.clone(),
                writer_rx.clone(),
                shared.clone(),
            ))
        })
        .collect();
    let rate = match opts.rate {
        Some(r) => Some(RateLimiter::new(r, config.redis_url.as_deref()).await),
        None => None,
    };
    let run = Arc::new(Run {
        db: work_db.clone(),
        endpoint: Endpoint::from_config(config)?,
        templates,
        writer: writer_tx,
        shared: shared.clone(),
        rate,
        throttle: Throttle::default(),
        unreachable_streak: AtomicU64::new(0),
        reached: AtomicBool::new(false),
        last_unreachable: std::sync::Mutex::new(None),
        lease: opts.lease,
        retry_base: opts.retry_base,
        concurrency: opts.concurrency,
    });

    // Jobs wait in a short queue: claims are made just ahead of sending.
    let (job_tx, job_rx) = mpsc::channel::<Job>(opts.concurrency);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| tokio::spawn(worker(run.clone(), job_rx.clone())))
        .collect();

    let claimed = claim_loop(&run, &ids, opts, job_tx).await;
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
    // The last sender of the writer channel goes with `run`: the writer drains and ends.
    drop(run);
    let mut written = Ok(());
    for w in writer {
        let result = w
            .await
            .map_err(|e| Error::runtime(format!("sender writer: {e}")))?;
        if written.is_ok() {
            written = result;
        }
    }
    let Shared {
        sent,
        failed,
        deferred,
        progress,
        stopped,
        ..
    } = Arc::into_inner(shared).expect("writer is done");
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    work_db.close().await;
    claimed?;
    written?;

    for t in &targets {
        deliveries::complete_if_done(db, t.id).await?;
    }
    summary.sent = sent.into_inner();
    summary.failed = failed.into_inner();
    summary.deferred = deferred.into_inner();
    summary.stopped = stopped.into_inner().expect("stop reason").or(down);
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    let letters = summary.sent + summary.failed + summary.deferred;
    if summary.elapsed_seconds > 0.0 {
        summary.letters_per_second = letters as f64 / summary.elapsed_seconds;
    }
    Ok(summary)
}

async fn claim_loop(run: &Run, ids: &[i64], opts: &Options, jobs: mpsc::Sender<Job>) -> Result<()> {
    let mut remaining = opts.limit.unwrap_or(u64::MAX);
    // Half the window: fewer, larger claims, while the other half is being sent and recorded.
    let batch = (opts.window() / 2).max(1);
    let window = run.shared.window.clone();
    let mut last_lapsed_check = None;
    while remaining > 0 && !run.shared.stopping() {
        // Claim only when the window has room for a whole batch.
        let n = (batch as u64).min(remaining) as usize;
        let permits = window
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .expect("the window is never closed");
        if run.shared.stopping() {
            break;
        }
        let now = db::now();
        let lease_until = now + chrono::Duration::from_std(run.lease).expect("lease fits");
        // Lapsed leases (a crashed worker's rows) are looked for at most once a second.
        let lapsed =
            last_lapsed_check.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1));
        if lapsed {
            last_lapsed_check = Some(Instant::now());
        }
        let rows = match deliveries::claim(&run.db, ids, n, now, lease_until, lapsed).await {
            Ok(rows) => rows,
            Err(e) => {
                run.shared.stop(format!("cannot claim deliveries: {e}"));
                return Err(e);
            }
        };
        // Each claimed row keeps its permit until its outcome is committed.
        permits.forget();
        window.add_permits(n - rows.len());
        if rows.is_empty() {
            break;
        }
        remaining -= rows.len() as u64;
        let claimed_at = Instant::now();
        for claimed in rows {
            let job = Job {
                claimed,
                lease_until,
                claimed_at,
            };
            if jobs.send(job).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn worker(run: Arc<Run>, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut session = run.endpoint.session();
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { break };
        let finished = if run.shared.stopping() {
            release(&run, &job, "run stopped before this letter was sent")
        } else {
            send_one(&run, &mut session, &job).await
        };
        if run.writer.send(finished).await.is_err() {
            run.shared.stop("the result writer stopped".into());
        }
    }
    session.close().await;
}

fn release(run: &Run, job: &Job, why: &str) -> Finished {
    let c = &job.claimed;
    Finished {
        delivery_id: c.id,
        mailing_id: c.mailing_id,
        client_id: c.client_id,
        owner_id: run.templates.get(&c.mailing_id).map(|t| t.1).unwrap_or(0),
        email: c.email.clone(),
        lease_until: job.lease_until,
        attempted_at: db::now(),
        next: Next::Release,
        reply: why.to_string(),
    }
}

async fn send_one(run: &Run, session: &mut Session, job: &Job) -> Finished {
    let c = &job.claimed;
    let Some((template, owner_id)) = run.templates.get(&c.mailing_id) else {
        return release(run, job, "unknown mailing");
    };
    // The outcome must be recorded while the claim still holds; a job that waited too long
    // goes back unsent rather than risk a second worker sending it too.
    let budget = run.lease.saturating_sub(job.claimed_at.elapsed());
    if budget < run.lease / 2 {
        return release(run, job, "claim too old");
    }
    run.throttle.wait().await;
    if let Some(rate) = &run.rate {
        rate.acquire().await;
    }
    let recipient = Recipient {
        client_id: c.client_id,
        email: &c.email,
        full_name: &c.full_name,
    };
    let outcome = match template.letter(&recipient) {
        Ok(letter) => {
            let budget = run.lease.saturating_sub(job.claimed_at.elapsed()) * 3 / 4;
            match tokio::time::timeout(budget, session.send(&letter)).await {
                Ok(o) => o,
                Err(_) => {
                    session.reset();
                    Outcome::Temporary(format!(
                        "timed out after {:.0}s (claim lease)",
                        budget.as_secs_f64()
                    ))
                }
            }
        }
        Err(e) => Outcome::Permanent(format!("not sent: {e}")),
    };
    let now = db::now();
    let next = match &outcome {
        Outcome::Accepted(_) => {
            run.throttle.relax();
            Next::Sent
        }
        Outcome::Permanent(_) => Next::Failed,
        o if o.is_throttling() => {
            let pause = run.throttle.tighten();
            Next::Throttled(now + chrono::Duration::from_std(pause).unwrap_or_default())
        }
        Outcome::Temporary(_) => {
            let shift = (c.tries.max(1) - 1).min(12) as u32;
            let delay = (run.retry_base * 2u32.pow(shift)).min(Duration::from_secs(6 * 3600));
            Next::Retry(now + chrono::Duration::from_std(delay).unwrap_or_default())
        }
    };
    if outcome.is_unreachable() {
        if outcome.reply().starts_with("cannot connect") {
            *run.last_unreachable.lock().expect("last unreachable") =
                Some(outcome.reply().to_string());
        }
        let streak = run.unreachable_streak.fetch_add(1, Ordering::SeqCst) + 1;
        if streak >= (run.concurrency as u64).max(3) {
            run.shared
                .stop(format!("SMTP server unreachable: {}", outcome.reply()));
        }
    } else {
        run.unreachable_streak.store(0, Ordering::SeqCst);
        run.reached.store(true, Ordering::SeqCst);
    }
    Finished {
        delivery_id: c.id,
        mailing_id: c.mailing_id,
        client_id: c.client_id,
        owner_id: *owner_id,
        email: c.email.clone(),
        lease_until: job.lease_until,
        attempted_at: now,
        next,
        reply: outcome.reply().to_string(),
    }
}

/// Commits results in groups: whatever arrived while the previous commit ran goes into the
/// next transaction. A letter's permit in the window comes back only once its outcome is
/// durable, and only then does it count in the summary.
async fn write_results(
    db: Db,
    rx: Arc<Mutex<mpsc::Receiver<Finished>>>,
    shared: Arc<Shared>,
) -> Result<()> {
    let mut failure = None;
    loop {
        let mut done = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { break };
            done.push(first);
            while done.len() < 1024 {
                match rx.try_recv() {
                    Ok(item) => done.push(item),
                    Err(_) => break,
                }
            }
        }
        if failure.is_none() {
            for pause in [0u64, 200, 1000, 3000] {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                match attempts::record(&db, &done).await {
                    Ok(()) => {
                        failure = None;
                        break;
                    }
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_none() {
                for f in &done {
                    let counter = match f.next {
                        Next::Sent => &shared.sent,
                        Next::Failed => &shared.failed,
                        Next::Retry(_) | Next::Throttled(_) => &shared.deferred,
                        Next::Release => continue,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(bar) = &shared.progress {
                        bar.inc(1);
                    }
                }
            } else {
                shared.stop("cannot record results in the database".into());
            }
        }
        shared.window.add_permits(done.len());
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Slows every worker down after a throttling reply, and speeds up again on success.
#[derive(Default)]
struct Throttle {
    delay_ms: AtomicU64,
}

impl Throttle {
    async fn wait(&self) {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Doubles the pause (from half a second up to 30 s) and returns it.
    fn tighten(&self) -> Duration {
        let old = self.delay_ms.load(Ordering::Relaxed);
        let new = (old * 2).clamp(500, 30_000);
        self.delay_ms.store(new, Ordering::Relaxed);
        Duration::from_millis(new)
    }

    fn relax(&self) {
        let old = self.delay_ms.load(Ordering::Relaxed);
        if old > 0 {
            let new = old * 7 / 8;
            self.delay_ms
                .store(if new < 20 { 0 } else { new }, Ordering::Relaxed);
        }
    }
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
        let conn = async {
            let client = redis::Client::open(url).ok()?;
            tokio::time::timeout(
                Duration::from_secs(3),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()?
            .ok()
        }
        .await;
        match conn {
            Some(conn) => RateLimiter::Redis {
                interval_us: interval.as_micros().max(1) as u64,
                conn,
                script: redis::Script::new(RATE_SCRIPT),
                local: Box::new(local),
            },
            None => {
                eprintln!("warning: Redis unreachable, --rate applies to this process only");
                local
            }
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
