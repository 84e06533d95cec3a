//! The retention sweeper (issue 14 item 4): at start and every `[retention] sweep_interval_s`,
//! deletes what [`crate::store::retention`] says is expired, series by series in chunks
//! ([`crate::store::sweep_sql`]), then gives the freed pages back to the file system and
//! truncates the WAL. One log line and the `fumegrid_retention_*` counters per pass. Runs on its
//! own store connection, each chunk in a blocking task; the clock is the injected one, so a
//! paused-time test drives the passes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use metrics::{counter, gauge};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::store::StoreError;
use crate::store::retention::{Retention, Swept, level_name};
use crate::store::sweep_sql::Sweeper;
use crate::telemetry as m;

/// `[retention]` as the loop uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub policy: Retention,
    /// Time between the ends of two passes.
    pub interval: Duration,
    /// Most rows one `DELETE` (one transaction) removes.
    pub chunk_rows: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Retention::default(),
            interval: Duration::from_secs(3600),
            chunk_rows: 5000,
        }
    }
}

/// Pages freed per `incremental_vacuum` step (4 MiB at the default page size): the write lock
/// is held that long at most.
const RECLAIM_PAGES: u32 = 1024;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Passes completed so far (this one included).
    pub n: u64,
    pub swept: Swept,
    /// Bytes of free pages given back to the file system.
    pub reclaimed_bytes: u64,
    /// The store on disk (file and WAL) before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Runs passes until `cancel`; each completed pass is also published on `passes` (tests wait
/// on it).
pub async fn run(
    sweeper: Sweeper,
    settings: Settings,
    clock: Clock,
    cancel: CancellationToken,
    passes: Option<watch::Sender<Pass>>,
) {
    for kind in KINDS {
        counter!(m::RETENTION_DELETED, "kind" => kind).absolute(0);
    }
    counter!(m::RETENTION_PASSES).absolute(0);
    counter!(m::RETENTION_ERRORS).absolute(0);
    counter!(m::RETENTION_RECLAIMED).absolute(0);
    counter!(m::RETENTION_FROZEN).absolute(0);
    let sweeper = Arc::new(Mutex::new(sweeper));
    let mut n = 0;
    loop {
        let started = clock.instant();
        match pass(&sweeper, &settings, &clock, &cancel).await {
            Ok(Some(mut p)) => {
                n += 1;
                p.n = n;
                report(&p, (clock.instant() - started).as_millis() as u64);
                if let Some(tx) = &passes {
                    tx.send_replace(p);
                }
            }
            Ok(None) => break,
            Err(e) => {
                counter!(m::RETENTION_ERRORS).increment(1);
                error!(error = %e, "retention sweep failed; retrying at the next pass (nothing is deleted twice or lost)");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(settings.interval) => {}
        }
    }
    debug!("retention sweeper stopped");
}

const KINDS: [&str; 7] = [
    "raw",
    "minute_periods",
    "other_periods",
    "rollups_1m",
    "rollups_10m",
    "rollups_1h",
    "rollups_1d",
];

fn report(p: &Pass, ms: u64) {
    let s = &p.swept;
    let by_kind = [
        s.raw,
        s.minute_periods,
        s.other_periods,
        s.rollups[0],
        s.rollups[1],
        s.rollups[2],
        s.rollups[3],
    ];
    for (kind, n) in KINDS.iter().zip(by_kind) {
        counter!(m::RETENTION_DELETED, "kind" => *kind).increment(n);
    }
    counter!(m::RETENTION_PASSES).increment(1);
    counter!(m::RETENTION_RECLAIMED).increment(p.reclaimed_bytes);
    gauge!(m::STORE_FILE_BYTES).set(p.bytes_after as f64);
    info!(
        deleted = s.total(),
        raw = s.raw,
        minute_periods = s.minute_periods,
        other_periods = s.other_periods,
        rollups = format!(
            "{}={} {}={} {}={} {}={}",
            level_name(0),
            s.rollups[0],
            level_name(1),
            s.rollups[1],
            level_name(2),
            s.rollups[2],
            level_name(3),
            s.rollups[3]
        ),
        reclaimed_mib = p.reclaimed_bytes >> 20,
        store_mib_before = p.bytes_before >> 20,
        store_mib_after = p.bytes_after >> 20,
        ms,
        "retention pass"
    );
}

/// Runs `f` on the sweeper in a blocking task.
async fn blocking<T: Send + 'static>(
    sweeper: &Arc<Mutex<Sweeper>>,
    f: impl FnOnce(&mut Sweeper) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = sweeper.clone();
    tokio::task::spawn_blocking(move || {
        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    })
    .await
    .unwrap_or_else(|e| Err(StoreError::Malformed(format!("sweeper task failed: {e}"))))
}

/// One pass; `None` when cancelled midway (what was deleted stays deleted).
async fn pass(
    sweeper: &Arc<Mutex<Sweeper>>,
    settings: &Settings,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<Option<Pass>, StoreError> {
    let cut = settings.policy.cutoffs(clock.now_ms());
    let (series, bytes_before) = blocking(sweeper, |s| Ok((s.series()?, s.file_bytes()))).await?;
    let mut out = Pass {
        bytes_before,
        ..Pass::default()
    };
    let (policy, chunk) = (settings.policy, settings.chunk_rows.max(1));
    for ser in series {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let s = blocking(sweeper, move |sw| {
            sw.sweep_series(&ser, &policy, &cut, chunk)
        })
        .await?;
        let o = &mut out.swept;
        o.raw += s.raw;
        o.minute_periods += s.minute_periods;
        o.other_periods += s.other_periods;
        for (a, b) in o.rollups.iter_mut().zip(s.rollups) {
            *a += b;
        }
    }
    let (free, page) = blocking(sweeper, |s| Ok((s.free_pages()?, s.page_size()?))).await?;
    let mut left = free;
    while left > 0 {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let now_left = blocking(sweeper, |s| s.reclaim(RECLAIM_PAGES)).await?;
        if now_left >= left {
            // auto_vacuum is not incremental (an old store not converted): nothing to give back.
            break;
        }
        left = now_left;
    }
    out.reclaimed_bytes = free.saturating_sub(left) * page;
    out.bytes_after = blocking(sweeper, |s| {
        s.checkpoint()?;
        Ok(s.file_bytes())
    })
    .await?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite;
    use crate::store::sweep_sql::tests::{DAY, T0, commit, readings, tmp};
    use crate::store::{Synchronous, sweep_sql};

    /// Waits for pass `n` on the paused clock (auto-advanced while the loop sleeps; a stuck loop
    /// fails after two virtual intervals instead of hanging).
    async fn pass_n(rx: &mut watch::Receiver<Pass>, n: u64) -> Pass {
        let deadline = Duration::from_secs(2 * 3600);
        tokio::time::timeout(deadline, rx.wait_for(|p| p.n >= n))
            .await
            .expect("a pass within two intervals")
            .map(|p| *p)
            .expect("sweeper running")
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_runs_at_start_and_every_interval_on_the_injected_clock() {
        let p = tmp("loop.sqlite3");
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        // Two days of one reading a minute; "now" is 31 days after the first: the first day
        // is past raw retention (30 days).
        commit(&mut w, readings("rest-1", 1, T0, 60_000, 2 * 1440));
        let clock = Clock::following_tokio(T0 + 31 * DAY);
        let (tx, mut rx) = watch::channel(Pass::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            sweep_sql::open(&p).expect("sweeper"),
            Settings::default(),
            clock.clone(),
            cancel.clone(),
            Some(tx),
        ));
        let first = pass_n(&mut rx, 1).await;
        assert_eq!(first.swept.raw, 1440, "at start: the first day");
        assert!(first.bytes_after <= first.bytes_before, "{first:?}");
        // An hour later by the injected clock: the next hour's 60 readings.
        let second = pass_n(&mut rx, 2).await;
        assert_eq!(second.swept.raw, 60);
        assert!(clock.now_ms() >= T0 + 31 * DAY + 3_600_000);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stops on cancel")
            .expect("task");
    }
}
