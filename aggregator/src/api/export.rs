//! `GET /api/v1/export.csv`: a site's or a device's 10-minute, hourly or daily averages over a
//! period, with validity flags, as CSV for environmental staff (the form they hand to an
//! inspector; issue 14). Format and choices: `docs/api.md`, "Export".
//!
//! Pure parts: [`parse_export_query`] (the query), [`grid`] (the periods of the span, local days
//! for `1d`), [`day_cells`] (a local day from its hours), [`flag`] and the rendering
//! ([`render_header`], [`render_rows`]). The handler resolves the series (every metric of the
//! device, or of every device behind the site's gateways), checks the size, then streams: a
//! blocking task reads one series at a time from the store's rollups and sends the rendered
//! rows through a small channel, so memory stays bounded whatever the size of the export.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fumegrid_common::datetime::{self, Precision};
use fumegrid_common::metric::Metric;
use fumegrid_common::text::clip;
use serde::Deserialize;

use super::error::{ApiError, check_id};
use super::params::Params;
use super::state::{AppState, blocking};
use crate::cases::SiteInfo;
use crate::store::{Reader, ReadingQuery, RollupRow, StoreError, rollup};

/// `GET /api/v1/export.csv`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub device: Option<String>,
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub metric: Option<Metric>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub resolution: Option<ExportResolution>,
    pub bom: Option<bool>,
}

/// The periods an export averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ExportResolution {
    #[serde(rename = "10m")]
    M10,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "1d")]
    D1,
}

impl ExportResolution {
    pub fn name(self) -> &'static str {
        match self {
            ExportResolution::M10 => "10m",
            ExportResolution::H1 => "1h",
            ExportResolution::D1 => "1d",
        }
    }

    /// The rollup level read: 10 minutes and hours as stored; a local day is made of hours.
    pub fn level(self) -> usize {
        match self {
            ExportResolution::M10 => 1,
            ExportResolution::H1 | ExportResolution::D1 => 2,
        }
    }

    /// The longest span asked at this resolution, in days: a quarter of 10-minute averages, a
    /// (leap) year of hourly ones, ten years of daily ones (the retention of the rollups).
    pub fn max_days(self) -> i64 {
        match self {
            ExportResolution::M10 => 92,
            ExportResolution::H1 => 366,
            ExportResolution::D1 => 3660,
        }
    }
}

/// Most rows (besides the header) one export may have: it must open in one Excel sheet
/// (1,048,576 rows).
pub const MAX_ROWS: u64 = 1_000_000;

const DAY_MS: i64 = 86_400_000;

/// Whose data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One device (device ids are unique per gateway only: `gateway` narrows).
    Device {
        device: String,
        gateway: Option<String>,
    },
    /// Every device behind the gateways of a site (its `[[gateways]] site` name or a gateway id).
    Site(String),
}

/// A checked export query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    pub what: Selector,
    pub metric: Option<String>,
    /// Inclusive, ms.
    pub from_ms: i64,
    /// Exclusive, ms.
    pub to_ms: i64,
    pub res: ExportResolution,
    pub bom: bool,
}

/// An instant of `from`/`to`: ms since the epoch, a local date `YYYY-MM-DD` on the catalogue
/// calendar (for `to`, the end of that day: the day is included), or an RFC 3339 date-time
/// with `Z` or an offset. Pure.
pub fn parse_instant(name: &str, s: &str, utc_offset_min: i32, end: bool) -> Result<i64, ApiError> {
    let bad = |why: &str| {
        ApiError::BadRequest(format!(
            "`{name}` must be ms since the Unix epoch, a date YYYY-MM-DD (the catalogue \
             calendar's local day) or a date-time with its offset \
             (2026-11-03T10:00:00+08:00), not `{}`{why}",
            clip(s, 64)
        ))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad(""));
    }
    let w = datetime::parse(s).map_err(|e| bad(&format!(": {e}")))?;
    let default = match (w.precision, w.offset) {
        (Precision::Day, _) => datetime::offset_min(utc_offset_min).ok_or_else(|| bad(""))?,
        (_, Some(o)) => o,
        (_, None) => return Err(bad(": a date-time needs its offset (`Z` or ±HH:MM)")),
    };
    let ms = w.to_ms(default).map_err(|e| bad(&format!(": {e}")))?;
    Ok(if end && w.precision == Precision::Day {
        ms + DAY_MS
    } else {
        ms
    })
}

/// Checks an export query (typed in [`ExportParams`]). Pure.
pub fn parse_export_query(p: ExportParams, utc_offset_min: i32) -> Result<ExportQuery, ApiError> {
    let what = match (p.device, p.site) {
        (Some(device), None) => {
            check_id("`device`", &device)?;
            if let Some(g) = &p.gateway {
                check_id("`gateway`", g)?;
            }
            Selector::Device {
                device,
                gateway: p.gateway,
            }
        }
        (None, Some(site)) => {
            check_id("`site`", &site)?;
            if p.gateway.is_some() {
                return Err(ApiError::BadRequest(
                    "`gateway` narrows a `device`; a `site` names its gateways itself".into(),
                ));
            }
            Selector::Site(site)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "name exactly one of `device` (with `gateway` if two gateways have that id) \
                 or `site`"
                    .into(),
            ));
        }
    };
    let (Some(from), Some(to)) = (p.from, p.to) else {
        return Err(ApiError::BadRequest(
            "`from` and `to` are required (ms, a date YYYY-MM-DD or a date-time with offset)"
                .into(),
        ));
    };
    let from_ms = parse_instant("from", &from, utc_offset_min, false)?;
    let to_ms = parse_instant("to", &to, utc_offset_min, true)?;
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest(format!(
            "`from` ({from_ms}) must be before `to` ({to_ms})"
        )));
    }
    let res = p.resolution.unwrap_or(ExportResolution::M10);
    let max = res.max_days();
    if to_ms - from_ms > max * DAY_MS {
        return Err(ApiError::BadRequest(format!(
            "`from` … `to` spans {:.1} days; at most {max} days at `resolution={}` (ask for \
             several periods, or a coarser `resolution`)",
            (to_ms - from_ms) as f64 / DAY_MS as f64,
            res.name()
        )));
    }
    Ok(ExportQuery {
        what,
        metric: p.metric.map(|m| m.name().to_string()),
        from_ms,
        to_ms,
        res,
        bom: p.bom.unwrap_or(true),
    })
}

/// The periods of `[from_ms, to_ms)` at `res`: those whose start is in the span, `(start,
/// end)`, oldest first. 10 minutes and hours are the rollups' clock-aligned buckets; a day is
/// the calendar's local day (midnight to midnight at `utc_offset_min`). Pure.
pub fn grid(
    res: ExportResolution,
    from_ms: i64,
    to_ms: i64,
    utc_offset_min: i32,
) -> Vec<(i64, i64)> {
    let (len, shift) = match res {
        ExportResolution::D1 => (DAY_MS, i64::from(utc_offset_min) * 60_000),
        r => (i64::from(rollup::LEVELS[r.level()]) * 1000, 0),
    };
    // The first start at or after `from_ms`: starts are multiples of `len` minus `shift`.
    let local = from_ms.saturating_add(shift);
    let mut start = local - local.rem_euclid(len) - shift;
    if start < from_ms {
        start = start.saturating_add(len);
    }
    let mut out = Vec::new();
    while start < to_ms {
        out.push((start, start.saturating_add(len)));
        start = start.saturating_add(len);
    }
    out
}

/// One series of the export: the labels of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub site: String,
    pub gateway: String,
    pub device: String,
    pub metric: String,
    pub unit: String,
}

/// What one period of one series holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Valid values.
    pub count: u64,
    /// Polls taken.
    pub polls: u64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// At least [`rollup::VALID_SHARE`] of the period's sub-periods were valid.
    pub valid: bool,
    /// Valid sub-periods over those a full period has, 0 … 1.
    pub valid_share: f64,
}

impl From<&RollupRow> for Cell {
    fn from(r: &RollupRow) -> Cell {
        Cell {
            count: r.count,
            polls: r.polls,
            avg: r.avg,
            min: r.min,
            max: r.max,
            valid: r.valid,
            valid_share: r.valid_share,
        }
    }
}

/// Hours in a day (a fixed-offset calendar has no DST).
const HOURS_PER_DAY: u32 = 24;

/// The local days of `grid` from the hours in `hours` (`(start, cell)`, oldest first): a day
/// holds the hours that start in it; its average is over all their valid values, and it is
/// valid when at least [`rollup::VALID_SHARE`] of its 24 hours were (a missing hour counts as
/// invalid), as the rollups carry validity up. Days without any hour are left out. Pure.
pub fn day_cells(grid: &[(i64, i64)], hours: &[(i64, Cell)]) -> Vec<(i64, Cell)> {
    let mut out = Vec::new();
    let mut i = 0;
    for &(start, end) in grid {
        while i < hours.len() && hours[i].0 < start {
            i += 1;
        }
        let mut sum = 0.0;
        let mut day: Option<Cell> = None;
        let mut valid_hours = 0u32;
        while i < hours.len() && hours[i].0 < end {
            let h = hours[i].1;
            let d = day.get_or_insert(Cell {
                count: 0,
                polls: 0,
                avg: None,
                min: None,
                max: None,
                valid: false,
                valid_share: 0.0,
            });
            d.count += h.count;
            d.polls += h.polls;
            if let Some(a) = h.avg {
                sum += a * h.count as f64;
            }
            d.min = fold(d.min, h.min, f64::min);
            d.max = fold(d.max, h.max, f64::max);
            valid_hours += u32::from(h.valid);
            i += 1;
        }
        if let Some(mut d) = day {
            d.avg = (d.count > 0).then(|| sum / d.count as f64);
            let (num, den) = rollup::VALID_SHARE;
            d.valid = valid_hours * den >= HOURS_PER_DAY * num;
            d.valid_share = (f64::from(valid_hours) / f64::from(HOURS_PER_DAY)).min(1.0);
            out.push((start, d));
        }
    }
    out
}

fn fold(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// The HJ 212-2017 data flag of a period (数据标记, the codes its data messages carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `N` (正常): enough valid sub-periods, the average stands.
    Normal,
    /// `D` (故障): data came, but most polls were not valid (device errors, out of range,
    /// stale values): the monitor was faulty.
    Fault,
    /// `B` (通讯异常): too little or no data arrived for the period (the monitor, its gateway
    /// or the uplink was down): a gap.
    NoData,
}

impl Flag {
    pub fn code(self) -> &'static str {
        match self {
            Flag::Normal => "N",
            Flag::Fault => "D",
            Flag::NoData => "B",
        }
    }
}

/// The flag of a period: `N` when valid; else `D` when the polls that came were mostly invalid
/// (fewer than [`rollup::VALID_SHARE`] of them valid), else `B` (missing data). Pure.
pub fn flag(cell: Option<&Cell>) -> Flag {
    let (num, den) = rollup::VALID_SHARE;
    match cell {
        Some(c) if c.valid => Flag::Normal,
        Some(c) if c.polls > 0 && c.count * u64::from(den) < c.polls * u64::from(num) => {
            Flag::Fault
        }
        _ => Flag::NoData,
    }
}

/// The header row's columns.
pub const COLUMNS: [&str; 14] = [
    "site",
    "gateway",
    "device",
    "metric",
    "unit",
    "period_start",
    "period_end",
    "avg",
    "min",
    "max",
    "count",
    "polls",
    "valid_share",
    "flag",
];

/// UTF-8's byte order mark: Excel reads a CSV as UTF-8 only when the file starts with it.
pub const BOM: &str = "\u{feff}";

/// The header row (CRLF-terminated, as every row: RFC 4180).
pub fn render_header(out: &mut String) {
    out.push_str(&COLUMNS.join(","));
    out.push_str("\r\n");
}

/// A text field, RFC 4180: quoted when it holds a comma, a quote or a line break (quotes
/// doubled). A field that a spreadsheet would read as a formula (starting with `=`, `+`, `-`,
/// `@`, a tab or a CR: ids come from gateways and config) gets a leading `'`, as OWASP advises
/// against CSV injection.
fn text(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = s.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// A number with `decimals` places, or an empty cell (no value, or not finite); never `-0.000`.
fn number(out: &mut String, v: Option<f64>, decimals: usize) {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return;
    };
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(abs) if abs.bytes().all(|b| b == b'0' || b == b'.') => out.push_str(abs),
        _ => out.push_str(&s),
    }
}

/// Decimal places of averages, minima and maxima: 0.001 mg/m³ is a thousandth of the
/// DB11/1488 limit; currents, temperatures and flows carry no more precision than that.
pub const DECIMALS: usize = 3;

/// The rows of one series: one per period of `grid`, with the period's cell from `cells`
/// (`(start, cell)`, oldest first; a cell whose start is not a period start is ignored) or
/// empty cells and flag `B` when there is none, so a gap shows as rows. Times are RFC 3339 at
/// `utc_offset_min`. Pure.
pub fn render_rows(
    out: &mut String,
    s: &Series,
    grid: &[(i64, i64)],
    cells: &[(i64, Cell)],
    utc_offset_min: i32,
) {
    let offset = datetime::offset_min(utc_offset_min).unwrap_or(datetime::Offset::UTC);
    let mut i = 0;
    for &(start, end) in grid {
        while i < cells.len() && cells[i].0 < start {
            i += 1;
        }
        let cell = cells.get(i).filter(|c| c.0 == start).map(|c| &c.1);
        for (j, t) in [&s.site, &s.gateway, &s.device, &s.metric, &s.unit]
            .into_iter()
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            text(out, t);
        }
        let _ = write!(
            out,
            ",{},{},",
            datetime::w3c(start, offset),
            datetime::w3c(end, offset)
        );
        number(out, cell.and_then(|c| c.avg), DECIMALS);
        out.push(',');
        number(out, cell.and_then(|c| c.min), DECIMALS);
        out.push(',');
        number(out, cell.and_then(|c| c.max), DECIMALS);
        match cell {
            Some(c) => {
                let _ = write!(out, ",{},{},", c.count, c.polls);
                number(out, Some(c.valid_share), 2);
            }
            None => out.push_str(",0,0,0.00"),
        }
        out.push(',');
        out.push_str(flag(cell).code());
        out.push_str("\r\n");
    }
}

/// The series an export covers, sorted by gateway, device and metric: every metric of every
/// device the store knows that the selector (and `metric`) picks. A site is every gateway whose
/// `[[gateways]] site` is that name, or whose id is (a gateway without a site name is its own
/// site). Pure.
pub fn select_series(
    devices: &[crate::store::DeviceRow],
    sites: &HashMap<String, SiteInfo>,
    what: &Selector,
    metric: Option<&str>,
) -> Vec<Series> {
    let site_of = |gw: &str| -> String {
        sites
            .get(gw)
            .and_then(|s| s.site.clone())
            .unwrap_or_else(|| gw.to_string())
    };
    let mut out = Vec::new();
    for d in devices {
        let site = site_of(&d.gateway);
        let picked = match what {
            Selector::Device { device, gateway } => {
                &d.device == device && gateway.as_ref().is_none_or(|g| g == &d.gateway)
            }
            Selector::Site(name) => &site == name || &d.gateway == name,
        };
        if !picked {
            continue;
        }
        for l in &d.latest {
            if metric.is_some_and(|m| m != l.metric) {
                continue;
            }
            out.push(Series {
                site: site.clone(),
                gateway: d.gateway.clone(),
                device: d.device.clone(),
                metric: l.metric.clone(),
                unit: l.unit.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.gateway, &a.device, &a.metric).cmp(&(&b.gateway, &b.device, &b.metric)));
    out
}

/// Rollup rows fetched per store query while streaming.
const PAGE: u32 = 10_000;
/// Bytes rendered before a chunk is handed to the connection.
const CHUNK: usize = 64 * 1024;

/// The cells of one series over `[from_ms, to_ms)` at `res`, read page by page.
fn series_cells(
    reader: &dyn Reader,
    s: &Series,
    q: &ExportQuery,
    grid: &[(i64, i64)],
) -> Result<Vec<(i64, Cell)>, StoreError> {
    let (Some(first), Some(last)) = (grid.first(), grid.last()) else {
        return Ok(Vec::new());
    };
    let mut rq = ReadingQuery {
        device: s.device.clone(),
        gateway: Some(s.gateway.clone()),
        metric: Some(s.metric.clone()),
        from_ms: first.0,
        to_ms: last.1,
        limit: PAGE,
    };
    let mut cells: Vec<(i64, Cell)> = Vec::new();
    loop {
        let rows = reader.rollups(&rq, q.res.level())?;
        let n = rows.len();
        cells.extend(rows.iter().map(|r| (r.start_ms, Cell::from(r))));
        match rows.last() {
            Some(r) if n == PAGE as usize => rq.from_ms = r.start_ms + 1,
            _ => break,
        }
    }
    Ok(match q.res {
        ExportResolution::D1 => day_cells(grid, &cells),
        _ => cells,
    })
}

/// Renders the whole export into `send`, one chunk of about [`CHUNK`] bytes at a time; stops
/// early when `send` says the client is gone.
fn produce(
    reader: &dyn Reader,
    series: &[Series],
    q: &ExportQuery,
    grid: &[(i64, i64)],
    utc_offset_min: i32,
    send: &mut dyn FnMut(String) -> bool,
) -> Result<(), StoreError> {
    let mut buf = String::with_capacity(CHUNK + 4096);
    if q.bom {
        buf.push_str(BOM);
    }
    render_header(&mut buf);
    for s in series {
        let cells = series_cells(reader, s, q, grid)?;
        // Rows of one series rendered in slices of the grid, so a chunk stays near CHUNK.
        for part in grid.chunks(512) {
            render_rows(&mut buf, s, part, &cells, utc_offset_min);
            if buf.len() >= CHUNK && !send(std::mem::take(&mut buf)) {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        send(buf);
    }
    Ok(())
}

/// At most [`MAX_ROWS`] rows: `series` × `periods`. Pure.
pub fn check_rows(series: usize, periods: usize) -> Result<(), ApiError> {
    let rows = series as u64 * periods as u64;
    if rows > MAX_ROWS {
        return Err(ApiError::BadRequest(format!(
            "the export would have {rows} rows ({series} series × {periods} periods); at most \
             {MAX_ROWS} (one Excel sheet): narrow `from` … `to`, pick a `metric`, or a coarser \
             `resolution`"
        )));
    }
    Ok(())
}

/// A file name for `Content-Disposition`: ASCII letters, digits, `-`, `_` and `.` kept, the rest
/// `_` (the site's own name is in every row).
fn file_name(q: &ExportQuery, utc_offset_min: i32) -> String {
    let who = match &q.what {
        Selector::Device { device, .. } => device.as_str(),
        Selector::Site(s) => s.as_str(),
    };
    let day = |ms: i64| {
        let offset = datetime::offset_min(utc_offset_min).unwrap_or(datetime::Offset::UTC);
        datetime::w3c(ms, offset)
            .chars()
            .take(10)
            .collect::<String>()
    };
    let safe: String = clip(who, 64)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "fumegrid-{safe}-{}-{}-{}.csv",
        day(q.from_ms),
        day(q.to_ms - 1),
        q.res.name()
    )
}

/// `GET /api/v1/export.csv`: authorised like the readings (every role but reporter, which the
/// token check keeps to its cases). The query and its size are checked before anything is
/// sent (400/404 as JSON); then `200 text/csv`, streamed. Should the store fail midway, the
/// body ends without its last chunk (the client sees a broken transfer, never a short file that
/// looks complete) and the error is logged.
pub async fn export(
    State(s): State<AppState>,
    Params(p): Params<ExportParams>,
) -> Result<Response, ApiError> {
    let offset = s.catalogue.calendar.utc_offset_min;
    let q = parse_export_query(p, offset)?;
    let r = s.reader.clone();
    let devices = blocking(move || r.devices()).await?;
    let series = select_series(&devices, &s.sites, &q.what, q.metric.as_deref());
    if series.is_empty() {
        let what = match &q.what {
            Selector::Device { device, gateway } => format!(
                "device `{device}`{}",
                gateway
                    .as_ref()
                    .map(|g| format!(" behind gateway `{g}`"))
                    .unwrap_or_default()
            ),
            Selector::Site(site) => {
                format!("site `{site}` (a `[[gateways]] site` name or a gateway id)")
            }
        };
        let metric = q
            .metric
            .as_ref()
            .map(|m| format!(" for metric `{m}`"))
            .unwrap_or_default();
        return Err(ApiError::Missing(format!(
            "no data stored for {what}{metric}"
        )));
    }
    let grid = grid(q.res, q.from_ms, q.to_ms, offset);
    check_rows(series.len(), grid.len())?;
    let name = file_name(&q, offset);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let reader = s.reader.clone();
    tokio::task::spawn_blocking(move || {
        let mut send = |chunk: String| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
        let done = fumegrid_common::panic::contained(|| {
            produce(&*reader, &series, &q, &grid, offset, &mut send)
        });
        if let Err(e) = done {
            tracing::error!(error = %e, "CSV export failed midway; the transfer is cut");
            let _ = tx.blocking_send(Err(std::io::Error::other("store failed")));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CST: i32 = 480;
    /// 2026-11-03T00:00:00+08:00.
    const DAY0: i64 = 1_793_635_200_000;
    const H: i64 = 3_600_000;

    fn q(s: &str) -> Result<ExportQuery, String> {
        let p: ExportParams = super::super::params::parse_query(s).map_err(|e| e.to_string())?;
        parse_export_query(p, CST).map_err(|e| e.to_string())
    }

    fn cell(count: u64, polls: u64, avg: f64, valid: bool, share: f64) -> Cell {
        Cell {
            count,
            polls,
            avg: (count > 0).then_some(avg),
            min: (count > 0).then_some(avg - 0.5),
            max: (count > 0).then_some(avg + 0.5),
            valid,
            valid_share: share,
        }
    }

    fn series() -> Series {
        Series {
            site: "Dongcheng food street".into(),
            gateway: "gw-1".into(),
            device: "rest-1".into(),
            metric: "fume_mg_m3".into(),
            unit: "mg/m³".into(),
        }
    }

    #[test]
    fn the_day_constant_is_local_midnight() {
        assert_eq!(
            datetime::w3c(DAY0, datetime::offset_min(CST).expect("offset")),
            "2026-11-03T00:00:00+08:00"
        );
    }

    #[test]
    fn queries_name_their_bad_parameter() {
        let ok = q("device=rest-1&from=2026-11-03&to=2026-11-03&resolution=1h").expect("ok");
        assert_eq!(
            (ok.from_ms, ok.to_ms, ok.res, ok.bom),
            (DAY0, DAY0 + 24 * H, ExportResolution::H1, true),
            "a `to` date includes its day"
        );
        let ok =
            q("site=gw-1&from=1793635200000&to=2026-11-03T02:00:00%2B08:00&bom=false").expect("ok");
        assert_eq!(
            (ok.from_ms, ok.to_ms, ok.res, ok.bom),
            (DAY0, DAY0 + 2 * H, ExportResolution::M10, false)
        );
        assert_eq!(ok.what, Selector::Site("gw-1".into()));
        for (query, names) in [
            ("from=1&to=2", "exactly one of `device`"),
            ("device=a&site=b&from=1&to=2", "exactly one of `device`"),
            ("device=a&from=1", "`from` and `to` are required"),
            ("device=a&from=yesterday&to=2", "`from` must be ms"),
            ("device=a&from=1&to=2026-11-03T10:00", "needs its offset"),
            ("device=a&from=5&to=5", "`from` (5) must be before `to` (5)"),
            (
                "device=a&from=2026-01-01&to=2026-12-31",
                "at most 92 days at `resolution=10m`",
            ),
            (
                "device=a&from=2020-01-01&to=2026-12-31&resolution=1h",
                "at most 366 days",
            ),
            (
                "device=a&from=1&to=2&resolution=5m",
                "parameter `resolution`",
            ),
            (
                "device=a&from=1&to=2&resolution=raw",
                "parameter `resolution`",
            ),
            (
                "device=a&from=1&to=2&metric=smoke",
                "unknown metric `smoke`",
            ),
            ("device=a&from=1&to=2&bom=yes", "parameter `bom`"),
            (
                "site=s&gateway=g&from=1&to=2",
                "`gateway` narrows a `device`",
            ),
            ("device=a&from=1&to=2&limit=5", "unknown parameter `limit`"),
        ] {
            let e = q(query).expect_err(query);
            assert!(e.contains(names), "{query}: {e}");
        }
        // A year of days is fine, and so is a year of hours.
        q("device=a&from=2026-01-01&to=2026-12-31&resolution=1d").expect("days");
        q("device=a&from=2026-01-01&to=2026-12-31&resolution=1h").expect("hours");
    }

    #[test]
    fn the_grid_is_clock_aligned_and_days_are_local() {
        let g = grid(ExportResolution::M10, DAY0 + 1, DAY0 + H, CST);
        assert_eq!(
            g.len(),
            5,
            "the period holding `from` began before it: left out"
        );
        assert_eq!(g[0], (DAY0 + 600_000, DAY0 + 1_200_000));
        let g = grid(ExportResolution::H1, DAY0, DAY0 + 24 * H, CST);
        assert_eq!((g.len(), g[23]), (24, (DAY0 + 23 * H, DAY0 + 24 * H)));
        // Days at +08:00 start at 16:00 UTC, not at UTC midnight.
        let g = grid(ExportResolution::D1, DAY0 - 5 * H, DAY0 + 3 * 24 * H, CST);
        assert_eq!(
            g,
            vec![
                (DAY0, DAY0 + 24 * H),
                (DAY0 + 24 * H, DAY0 + 48 * H),
                (DAY0 + 48 * H, DAY0 + 72 * H)
            ]
        );
        assert_eq!(DAY0.rem_euclid(24 * H), 16 * H);
        let g = grid(ExportResolution::D1, 0, 24 * H, 0);
        assert_eq!(g, vec![(0, 24 * H)]);
        assert!(grid(ExportResolution::H1, DAY0 + 1, DAY0 + 2, CST).is_empty());
    }

    #[test]
    fn a_day_is_made_of_its_local_hours() {
        let g = grid(ExportResolution::D1, DAY0, DAY0 + 2 * 24 * H, CST);
        // Day one: 20 valid hours of avg 1.0 (60 values each) and 2 invalid hours of avg 4.0
        // (10 values each); the hour before the day does not count. Day two: 17 valid hours.
        let mut hours = vec![(DAY0 - H, cell(60, 60, 100.0, true, 1.0))];
        hours.extend((0..20).map(|h| (DAY0 + h * H, cell(60, 60, 1.0, true, 1.0))));
        hours.extend((20..22).map(|h| (DAY0 + h * H, cell(10, 60, 4.0, false, 0.1))));
        hours.extend((24..41).map(|h| (DAY0 + h * H, cell(60, 60, 2.0, true, 1.0))));
        let days = day_cells(&g, &hours);
        assert_eq!(days.len(), 2);
        let (start, d) = days[0];
        assert_eq!(start, DAY0);
        assert_eq!((d.count, d.polls), (20 * 60 + 2 * 10, 22 * 60));
        let want = (20.0 * 60.0 * 1.0 + 2.0 * 10.0 * 4.0) / (20.0 * 60.0 + 20.0);
        assert!((d.avg.expect("avg") - want).abs() < 1e-12);
        assert_eq!((d.min, d.max), (Some(0.5), Some(4.5)));
        assert!(d.valid, "20 of 24 hours ≥ 3/4");
        assert!((d.valid_share - 20.0 / 24.0).abs() < 1e-12);
        let (_, d2) = days[1];
        assert!(!d2.valid, "17 of 24 hours < 18");
        assert_eq!(
            flag(Some(&d2)),
            Flag::NoData,
            "its polls were valid: hours are missing"
        );
        assert!(day_cells(&g, &[]).is_empty());
    }

    #[test]
    fn flags_say_why_a_period_is_invalid() {
        assert_eq!(flag(Some(&cell(600, 600, 1.0, true, 1.0))), Flag::Normal);
        assert_eq!(flag(None), Flag::NoData);
        assert_eq!(
            flag(Some(&cell(300, 300, 1.0, false, 0.5))),
            Flag::NoData,
            "half the minutes arrived, all valid: a gap"
        );
        assert_eq!(
            flag(Some(&cell(100, 600, 1.0, false, 0.1))),
            Flag::Fault,
            "the polls came, most invalid"
        );
        assert_eq!(flag(Some(&cell(0, 600, 0.0, false, 0.0))), Flag::Fault);
        assert_eq!(flag(Some(&cell(0, 0, 0.0, false, 0.0))), Flag::NoData);
    }

    #[test]
    fn rows_show_gaps_invalid_periods_and_quote_what_needs_it() {
        let g = grid(ExportResolution::M10, DAY0, DAY0 + 40 * 60_000, CST);
        let cells = vec![
            (DAY0, cell(600, 600, 0.58, true, 1.0)),
            // no cell for the second period: a gap
            (DAY0 + 1_200_000, cell(100, 600, 2.0, false, 0.2)),
            (DAY0 + 1_800_000 + 1, cell(1, 1, 9.0, true, 1.0)), // not a period start: ignored
        ];
        let mut out = String::new();
        render_header(&mut out);
        render_rows(&mut out, &series(), &g, &cells, CST);
        let want = "site,gateway,device,metric,unit,period_start,period_end,avg,min,max,count,polls,valid_share,flag\r\n\
Dongcheng food street,gw-1,rest-1,fume_mg_m3,mg/m³,2026-11-03T00:00:00+08:00,2026-11-03T00:10:00+08:00,0.580,0.080,1.080,600,600,1.00,N\r\n\
Dongcheng food street,gw-1,rest-1,fume_mg_m3,mg/m³,2026-11-03T00:10:00+08:00,2026-11-03T00:20:00+08:00,,,,0,0,0.00,B\r\n\
Dongcheng food street,gw-1,rest-1,fume_mg_m3,mg/m³,2026-11-03T00:20:00+08:00,2026-11-03T00:30:00+08:00,2.000,1.500,2.500,100,600,0.20,D\r\n\
Dongcheng food street,gw-1,rest-1,fume_mg_m3,mg/m³,2026-11-03T00:30:00+08:00,2026-11-03T00:40:00+08:00,,,,0,0,0.00,B\r\n";
        assert_eq!(out, want);

        let odd = Series {
            site: "Xinhua Rd, \"north\" 新华路".into(),
            gateway: "=HYPERLINK(\"x\")".into(),
            device: "-1".into(),
            metric: "x_temp".into(),
            unit: "°C".into(),
        };
        let neg = [(DAY0, cell(1, 1, -0.0001, true, 1.0))];
        let mut out = String::new();
        render_rows(&mut out, &odd, &g[..1], &neg, 0);
        assert_eq!(
            out,
            "\"Xinhua Rd, \"\"north\"\" 新华路\",\"'=HYPERLINK(\"\"x\"\")\",'-1,x_temp,°C,\
             2026-11-02T16:00:00Z,2026-11-02T16:10:00Z,0.000,-0.500,0.500,1,1,1.00,N\r\n",
            "RFC 4180 quoting, formulas defused, no -0.000, UTC prints Z"
        );
    }

    #[test]
    fn series_of_a_site_and_of_a_device() {
        use crate::store::{DeviceRow, Latest};
        let latest = |m: &str, unit: &str| Latest {
            metric: m.into(),
            unit: unit.into(),
            value: None,
            quality: "ok",
            ts_ms: 0,
        };
        let devices = vec![
            DeviceRow {
                gateway: "gw-1".into(),
                device: "rest-2".into(),
                latest: vec![latest("fume_mg_m3", "mg/m³"), latest("fan_on", "on/off")],
            },
            DeviceRow {
                gateway: "gw-1".into(),
                device: "rest-1".into(),
                latest: vec![latest("fume_mg_m3", "mg/m³")],
            },
            DeviceRow {
                gateway: "gw-2".into(),
                device: "rest-1".into(),
                latest: vec![latest("fume_mg_m3", "mg/m³")],
            },
            DeviceRow {
                gateway: "gw-3".into(),
                device: "rest-9".into(),
                latest: vec![latest("fume_mg_m3", "mg/m³")],
            },
        ];
        let sites: HashMap<String, SiteInfo> = [
            ("gw-1", Some("Food street")),
            ("gw-2", Some("Food street")),
            ("gw-3", None),
        ]
        .into_iter()
        .map(|(g, s)| {
            (
                g.to_string(),
                SiteInfo {
                    site: s.map(str::to_string),
                    grid_cell: None,
                    position: None,
                    devices: Default::default(),
                },
            )
        })
        .collect();
        let ids = |v: Vec<Series>| -> Vec<String> {
            v.into_iter()
                .map(|s| format!("{}/{}/{}/{}", s.site, s.gateway, s.device, s.metric))
                .collect()
        };
        let site = Selector::Site("Food street".into());
        assert_eq!(
            ids(select_series(&devices, &sites, &site, None)),
            [
                "Food street/gw-1/rest-1/fume_mg_m3",
                "Food street/gw-1/rest-2/fan_on",
                "Food street/gw-1/rest-2/fume_mg_m3",
                "Food street/gw-2/rest-1/fume_mg_m3",
            ]
        );
        assert_eq!(
            ids(select_series(
                &devices,
                &sites,
                &Selector::Site("gw-2".into()),
                None
            )),
            ["Food street/gw-2/rest-1/fume_mg_m3"],
            "a gateway id names its site too"
        );
        assert_eq!(
            ids(select_series(
                &devices,
                &sites,
                &Selector::Site("gw-3".into()),
                None
            )),
            ["gw-3/gw-3/rest-9/fume_mg_m3"],
            "a gateway without a site name is its own site"
        );
        let dev = |gateway: Option<&str>| Selector::Device {
            device: "rest-1".into(),
            gateway: gateway.map(str::to_string),
        };
        assert_eq!(select_series(&devices, &sites, &dev(None), None).len(), 2);
        assert_eq!(
            ids(select_series(
                &devices,
                &sites,
                &dev(Some("gw-2")),
                Some("fume_mg_m3")
            )),
            ["Food street/gw-2/rest-1/fume_mg_m3"]
        );
        assert!(select_series(&devices, &sites, &dev(None), Some("fan_on")).is_empty());
    }

    #[test]
    fn an_export_fits_one_excel_sheet() {
        assert!(check_rows(75, 13_248).is_ok());
        let e = check_rows(76, 13_248).expect_err("too many").to_string();
        assert!(
            e.contains("1006848 rows (76 series × 13248 periods)") && e.contains("`from` … `to`"),
            "{e}"
        );
    }

    #[test]
    fn file_names_are_plain_ascii() {
        let q = ExportQuery {
            what: Selector::Site("东城 food/street".into()),
            metric: None,
            from_ms: DAY0,
            to_ms: DAY0 + 24 * H,
            res: ExportResolution::H1,
            bom: true,
        };
        assert_eq!(
            file_name(&q, CST),
            "fumegrid-___food_street-2026-11-03-2026-11-03-1h.csv"
        );
    }

    /// The API end to end on a real store: 60-s periods of one device over 26 hours, with a
    /// gap and a faulty stretch, exported at 10 minutes, hours and local days; the expected
    /// averages and flags are computed here from the minutes, not by the rollups.
    mod api {
        use std::sync::Arc;

        use axum::body::Body as HttpBody;
        use axum::http::{Request, StatusCode};
        use fumegrid_common::clock::Clock;
        use fumegrid_common::wire::{Batch, Body as WBody, Item, Period, PeriodMetric};
        use tower::ServiceExt;

        use super::*;
        use crate::api::{AppState, Auth, app};
        use crate::cases::Catalogue;
        use crate::ingest::stats::Stats;
        use crate::store::{Synchronous, Writer, sqlite};

        /// One minute as sent: `(start, count of 60 polls, avg)`; absent minutes are not sent.
        fn minutes() -> Vec<(i64, u32, f64)> {
            let mut out = Vec::new();
            for m in 0..26 * 60 {
                let (h, mm) = (m / 60, m % 60);
                if h == 3 && (30..45).contains(&mm) {
                    continue; // a 15-minute gap
                }
                let count = if h == 5 && mm < 10 { 10 } else { 60 }; // faulty: 10 of 60 valid
                let avg = 0.5 + f64::from((m * 7 % 37) as u32) * 0.01;
                out.push((DAY0 + i64::from(m) * 60_000, count, avg));
            }
            out
        }

        fn state(name: &str) -> AppState {
            let dir =
                std::env::temp_dir().join(format!("fumegrid-agg-export-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            let p = dir.join(name);
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", p.display()));
            }
            let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
            let items: Vec<Item> = minutes()
                .into_iter()
                .enumerate()
                .map(|(i, (start_ms, count, avg))| Item {
                    seq: i as u64 + 1,
                    body: WBody::Period(Period {
                        device: "rest-1".into(),
                        start_ms,
                        period_s: 60,
                        metrics: vec![PeriodMetric {
                            metric: Metric::FumeMgM3,
                            unit: None,
                            polls: 60,
                            count,
                            avg: Some(avg),
                            min: Some(avg - 0.1),
                            max: Some(avg + 0.2),
                            last: Some(avg),
                            valid: count >= 45,
                        }],
                    }),
                })
                .collect();
            for chunk in items.chunks(500) {
                let b = Batch {
                    gateway: "gw-1".into(),
                    stream: "s".into(),
                    sent_ms: 0,
                    items: chunk.to_vec(),
                };
                w.commit(&[&b], 1).expect("commit");
            }
            let mut sites = HashMap::new();
            sites.insert(
                "gw-1".to_string(),
                SiteInfo {
                    site: Some("Food street 美食街".into()),
                    grid_cell: None,
                    position: None,
                    devices: Default::default(),
                },
            );
            AppState {
                drones: None,
                reader: Arc::new(sqlite::open_reader(&p).expect("reader")),
                stats: Arc::new(Stats::default()),
                catalogue: Arc::new(Catalogue::builtin().expect("catalogue")),
                auth: Arc::new(Auth {
                    tokens: Default::default(),
                    anonymous_viewer: true,
                }),
                casework: None,
                notify: Default::default(),
                clock: Clock::system(),
                evidence: None,
                sites: Arc::new(sites),
            }
        }

        /// Expected `(avg, count, polls, flag)` per period of `len` minutes from `start`,
        /// computed from the minutes: a period is valid when at least 3/4 of its sub-periods
        /// (`subs` of `sub_len` minutes, each valid by the same rule down to the minute, whose
        /// validity is the gateway's flag) are.
        fn expect(start: i64, len: i64) -> (Option<f64>, u64, u64, &'static str) {
            let ms = minutes();
            let inside = |a: i64, l: i64| {
                ms.iter()
                    .filter(move |m| m.0 >= a && m.0 < a + l * 60_000)
                    .copied()
                    .collect::<Vec<_>>()
            };
            // Validity by levels: minute → 10 min → hour → (local) day.
            fn valid(ms: &[(i64, u32, f64)], a: i64, l: i64) -> bool {
                let (sub, n) = match l {
                    10 => (1, 10),
                    60 => (10, 6),
                    1440 => (60, 24),
                    _ => unreachable!(),
                };
                let ok = (0..n)
                    .filter(|i| {
                        let b = a + i * sub * 60_000;
                        if sub == 1 {
                            ms.iter().any(|m| m.0 == b && m.1 >= 45)
                        } else {
                            valid(ms, b, sub)
                        }
                    })
                    .count() as i64;
                ok * 4 >= n * 3
            }
            let these = inside(start, len);
            let count: u64 = these.iter().map(|m| u64::from(m.1)).sum();
            let polls = 60 * these.len() as u64;
            let avg = (count > 0)
                .then(|| these.iter().map(|m| m.2 * f64::from(m.1)).sum::<f64>() / count as f64);
            let flag = if valid(&ms, start, len) {
                "N"
            } else if polls > 0 && count * 4 < polls * 3 {
                "D"
            } else {
                "B"
            };
            (avg, count, polls, flag)
        }

        async fn get(app: axum::Router, uri: &str) -> (StatusCode, String, String, String) {
            let resp = app
                .oneshot(Request::get(uri).body(HttpBody::empty()).expect("req"))
                .await
                .expect("resp");
            let status = resp.status();
            let h = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (ct, cd) = (h("content-type"), h("content-disposition"));
            let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
                .await
                .expect("body");
            (
                status,
                ct,
                cd,
                String::from_utf8(body.to_vec()).expect("utf-8"),
            )
        }

        /// Checks every row of `csv` against [`expect`] for periods of `len` minutes.
        fn check(csv: &str, len: i64, want_rows: usize) {
            let lines: Vec<&str> = csv.split("\r\n").collect();
            assert_eq!(lines.last(), Some(&""), "CRLF after the last row");
            assert_eq!(lines[0], COLUMNS.join(","));
            let rows = &lines[1..lines.len() - 1];
            assert_eq!(rows.len(), want_rows, "{csv}");
            let offset = datetime::offset_min(CST).expect("offset");
            for (i, row) in rows.iter().enumerate() {
                let f: Vec<&str> = row.split(',').collect();
                let start = DAY0 + i as i64 * len * 60_000;
                let (avg, count, polls, flag) = expect(start, len);
                assert_eq!(
                    &f[..7],
                    [
                        "Food street 美食街",
                        "gw-1",
                        "rest-1",
                        "fume_mg_m3",
                        "mg/m³",
                        &datetime::w3c(start, offset),
                        &datetime::w3c(start + len * 60_000, offset)
                    ],
                    "row {i}"
                );
                match avg {
                    Some(a) => {
                        let got: f64 = f[7].parse().expect("avg");
                        assert!((got - a).abs() <= 0.0005, "row {i}: {got} vs {a}");
                    }
                    None => assert_eq!(f[7], "", "row {i}"),
                }
                assert_eq!(
                    (f[10].parse::<u64>().ok(), f[11].parse::<u64>().ok(), f[13]),
                    (Some(count), Some(polls), flag),
                    "row {i}: {row}"
                );
            }
        }

        #[tokio::test]
        async fn averages_and_flags_of_a_device_and_a_site() {
            let app = app(state("export.sqlite3"));
            // Six hours of 10-minute averages: hour 3 has a gap, hour 5 a faulty stretch.
            let (s, ct, cd, csv) = get(
                app.clone(),
                "/api/v1/export.csv?device=rest-1&from=2026-11-03T00:00:00%2B08:00\
                 &to=2026-11-03T06:00:00%2B08:00&resolution=10m",
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{csv}");
            assert_eq!(ct, "text/csv; charset=utf-8; header=present");
            assert_eq!(
                cd,
                "attachment; filename=\"fumegrid-rest-1-2026-11-03-2026-11-03-10m.csv\""
            );
            let csv = csv.strip_prefix(BOM).expect("a UTF-8 BOM for Excel");
            check(csv, 10, 36);
            let flags: Vec<&str> = csv
                .lines()
                .skip(1)
                .map(|l| l.rsplit(',').next().unwrap_or(""))
                .collect();
            assert_eq!(
                flags[18..24].concat(),
                "NNNBBN",
                "hour 3: 3:30 absent, 3:40 half there"
            );
            assert_eq!(flags[30..32].concat(), "DN", "5:00 faulty");
            // Hours over the two local days, by site name, without a BOM.
            let (s, _, _, csv) = get(
                app.clone(),
                "/api/v1/export.csv?site=Food%20street%20%E7%BE%8E%E9%A3%9F%E8%A1%97\
                 &from=2026-11-03&to=2026-11-04&resolution=1h&bom=false",
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{csv}");
            assert!(csv.starts_with("site,"));
            check(&csv, 60, 48);
            // Local days: the first valid (23 of 24 hours), the second 2 hours only.
            let (s, _, _, csv) = get(
                app.clone(),
                "/api/v1/export.csv?site=gw-1&from=2026-11-03&to=2026-11-04&resolution=1d",
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{csv}");
            let csv = csv.strip_prefix(BOM).expect("BOM");
            check(csv, 1440, 2);
            assert!(csv.contains(",N\r\n") && csv.ends_with(",B\r\n"), "{csv}");
        }

        #[tokio::test]
        async fn refusals_are_json_and_name_what_is_wrong() {
            let app = app(state("export-bad.sqlite3"));
            for (uri, status, says) in [
                (
                    "/api/v1/export.csv?device=nobody&from=2026-11-03&to=2026-11-04",
                    StatusCode::NOT_FOUND,
                    "no data stored for device `nobody`",
                ),
                (
                    "/api/v1/export.csv?device=rest-1&gateway=gw-9&from=2026-11-03&to=2026-11-04",
                    StatusCode::NOT_FOUND,
                    "behind gateway `gw-9`",
                ),
                (
                    "/api/v1/export.csv?site=Elsewhere&from=2026-11-03&to=2026-11-04",
                    StatusCode::NOT_FOUND,
                    "site `Elsewhere`",
                ),
                (
                    "/api/v1/export.csv?device=rest-1&metric=fan_on&from=2026-11-03&to=2026-11-04",
                    StatusCode::NOT_FOUND,
                    "for metric `fan_on`",
                ),
                (
                    "/api/v1/export.csv?device=rest-1&from=2025-01-01&to=2026-11-04",
                    StatusCode::BAD_REQUEST,
                    "at most 92 days",
                ),
            ] {
                let (s, ct, _, body) = get(app.clone(), uri).await;
                assert_eq!((s, ct.as_str()), (status, "application/json"), "{uri}");
                assert!(body.contains(says), "{uri}: {body}");
            }
        }
    }
}
