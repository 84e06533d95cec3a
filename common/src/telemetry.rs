//! Prometheus metrics of both daemons. Code counts through the `metrics` facade
//! (`metrics::counter!(NAME, "label" => v).increment(1)`) from the same call that logs the event;
//! this module holds what the two daemons share around that: the table type each daemon lists
//! its metrics in ([`Def`], the one place a name, its labels and its meaning are written), the
//! process-wide recorder ([`install`]), and [`capture`] for tests that check a call both counts
//! and logs.
//!
//! Names follow `fumegrid_<area>_<what>_total` for counters and `fumegrid_<area>_<what>` for
//! gauges; labels only carry bounded sets (configured devices, gateways and departments, reason
//! and kind enums), never anything a remote peer can make up.

use std::sync::{Arc, Mutex, OnceLock};

pub use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric a daemon emits.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Gives every metric of `defs` its `# HELP` line in the recorder installed now.
pub fn describe(defs: &[Def]) {
    for d in defs {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
        }
    }
}

/// The rows of [`markdown_rows`] that `doc` (docs/metrics.md) does not have, line for line:
/// what a daemon's "docs list every metric" test reports.
pub fn undocumented(defs: &[Def], doc: &str) -> Vec<String> {
    markdown_rows(defs)
        .into_iter()
        .filter(|row| !doc.lines().any(|l| l == row))
        .collect()
}

/// The Markdown table of `defs` as `docs/metrics.md` has it (name, type, labels, meaning), so a
/// test can check that the documentation lists every metric the code emits.
pub fn markdown_rows(defs: &[Def]) -> Vec<String> {
    defs.iter()
        .map(|d| {
            let labels = if d.labels.is_empty() {
                "—".to_string()
            } else {
                d.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "| `{}` | {} | {} | {} |",
                d.name,
                d.kind.name(),
                labels,
                d.help
            )
        })
        .collect()
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs `recorder` as the process-wide one and describes `defs`; returns the handle that
/// renders the scrape. Only the first call installs (a process has one global recorder; tests
/// and benchmarks may start a daemon twice): later calls return the first handle.
pub fn install(recorder: PrometheusRecorder, defs: &[Def]) -> PrometheusHandle {
    let handle = HANDLE.get_or_init(|| {
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
        }
        handle
    });
    describe(defs);
    handle.clone()
}

/// The handle of the recorder [`install`] installed, if any.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// Runs `f` with a Prometheus recorder and a log subscriber of its own (this thread only) and
/// returns what it returned, the rendered scrape and the log lines (text format, no colour). For
/// tests that check an event both counts and logs.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, String, String) {
    use tracing_subscriber::prelude::*;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let buf = LogBuf::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(buf.clone())
            .with_ansi(false),
    );
    let r = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, f)
    });
    let logs = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
    (
        r,
        handle.render(),
        String::from_utf8_lossy(&logs).into_owned(),
    )
}

/// The value of one series in a rendered scrape: `series` is the name with its labels as
/// rendered, e.g. `fumegrid_ingest_rejects_total{reason="bad_mac"}`. Labels are rendered in the
/// order given at the counting call.
pub fn scraped(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        // `name 3` or, for a series asked without labels, not `name{...} 3`.
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_sees_the_counts_and_logs_of_its_closure() {
        let ((), scrape, logs) = capture(|| {
            metrics::counter!("fumegrid_test_events_total", "kind" => "a").increment(2);
            tracing::warn!(kind = "a", "test event");
        });
        assert_eq!(
            scraped(&scrape, "fumegrid_test_events_total{kind=\"a\"}"),
            Some(2.0)
        );
        assert!(logs.contains("test event"), "{logs}");
    }

    #[test]
    fn markdown_row_lists_name_type_labels_and_meaning() {
        let rows = markdown_rows(&[Def {
            name: "fumegrid_x_total",
            kind: Kind::Counter,
            labels: &["device", "kind"],
            help: "Things.",
        }]);
        assert_eq!(
            rows,
            ["| `fumegrid_x_total` | counter | `device`, `kind` | Things. |"]
        );
    }
}
