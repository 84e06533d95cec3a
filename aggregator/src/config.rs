//! The aggregator config file and the files it names (broker users, gateway keys, password).
//!
//! Parsing is strict and every problem is reported at once with file, line and field
//! ([`Config::load`]), in the same style as the gateway config: unknown keys are refused, each
//! section is deserialized on its own, and semantic checks name the field they concern. Paths are
//! relative to the config file's folder.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fumegrid_common::diag::{Diagnostics, Doc, Source};
use fumegrid_common::{id, keys};
use serde::Deserialize;

use crate::api::HttpLimits;
use crate::broker::Secret;
use crate::cases::Catalogue;
use crate::ingest::validate::Keys;

/// `[aggregator]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// Name of this aggregator (logs, MQTT client id). Required.
    pub id: String,
}

/// `[store] synchronous`: the store's own durability type.
pub use crate::store::Synchronous;

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    /// SQLite file, relative to the config file's folder. Default `fumegrid.sqlite3`.
    #[serde(default = "default_store_path")]
    path: PathBuf,
    /// `full` (default) or `normal`; see [`Synchronous`].
    #[serde(default)]
    synchronous: Synchronous,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("fumegrid.sqlite3")
}

/// `[retention]`: how long each resolution is kept (docs/aggregator-config.md, "Retention";
/// [`crate::store::retention`]). Every key 1 to 36500 days; a coarser level is never kept
/// shorter than a finer one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    /// Days raw polls (`readings`) are kept. Default 30.
    #[serde(default = "default_raw_days")]
    raw_days: u32,
    /// Days the 1-minute level (60-s periods, 1-minute rollups) is kept. Default 90 (a year of
    /// it would cost ~320 MB per 10-metric monitor, over the 250 MB budget).
    #[serde(default = "default_minute_days")]
    minute_days: u32,
    /// Days periods of any other length than 60 s are kept. Default 90.
    #[serde(default = "default_minute_days")]
    other_periods_days: u32,
    /// Days 10-minute rollups are kept. Default 3650.
    #[serde(default = "default_long_days")]
    ten_minute_days: u32,
    /// Days hourly rollups are kept. Default 3650.
    #[serde(default = "default_long_days")]
    hourly_days: u32,
    /// Days daily rollups are kept. Default 3650.
    #[serde(default = "default_long_days")]
    daily_days: u32,
    /// Seconds before an alarm episode's raise and after its clear whose raw readings and
    /// periods stay while the episode's case exists (the gateway's raw windows). 0 to 86400.
    /// Default 300.
    #[serde(default = "default_case_margin_s")]
    case_margin_s: u32,
    /// Seconds between retention passes (one also runs at start). 60 to 86400. Default 3600.
    #[serde(default = "default_sweep_interval_s")]
    sweep_interval_s: u64,
    /// Most rows one delete (one short transaction) removes. 100 to 1000000. Default 5000.
    #[serde(default = "default_sweep_chunk_rows")]
    sweep_chunk_rows: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            raw_days: default_raw_days(),
            minute_days: default_minute_days(),
            other_periods_days: default_minute_days(),
            ten_minute_days: default_long_days(),
            hourly_days: default_long_days(),
            daily_days: default_long_days(),
            case_margin_s: default_case_margin_s(),
            sweep_interval_s: default_sweep_interval_s(),
            sweep_chunk_rows: default_sweep_chunk_rows(),
        }
    }
}

fn default_raw_days() -> u32 {
    crate::store::retention::Retention::default().raw_days
}
fn default_minute_days() -> u32 {
    crate::store::retention::Retention::default().minute_days
}
fn default_long_days() -> u32 {
    crate::store::retention::Retention::default().ten_minute_days
}
fn default_case_margin_s() -> u32 {
    crate::store::retention::Retention::default().case_margin_s
}
fn default_sweep_interval_s() -> u64 {
    crate::sweeper::Settings::default().interval.as_secs()
}
fn default_sweep_chunk_rows() -> u32 {
    crate::sweeper::Settings::default().chunk_rows
}

/// `[retention]` checked: ranges and order, each problem under its key.
fn retention_settings(doc: &mut Doc<'_>, r: &RetentionSection) -> crate::sweeper::Settings {
    let policy = crate::store::retention::Retention {
        raw_days: r.raw_days,
        minute_days: r.minute_days,
        other_periods_days: r.other_periods_days,
        ten_minute_days: r.ten_minute_days,
        hourly_days: r.hourly_days,
        daily_days: r.daily_days,
        case_margin_s: r.case_margin_s,
    };
    let mut in_range = true;
    for (key, days) in [
        ("raw_days", r.raw_days),
        ("minute_days", r.minute_days),
        ("other_periods_days", r.other_periods_days),
        ("ten_minute_days", r.ten_minute_days),
        ("hourly_days", r.hourly_days),
        ("daily_days", r.daily_days),
    ] {
        if !(1..=36_500).contains(&days) {
            doc.error(
                &format!("retention.{key}"),
                "must be between 1 and 36500 days",
            );
            in_range = false;
        }
    }
    if in_range {
        for (key, days, finer, finer_days) in policy.order_violations() {
            doc.error(
                &format!("retention.{key}"),
                format!(
                    "{days} days is shorter than `{finer}` ({finer_days} days): a coarser \
                     resolution must be kept at least as long as a finer one"
                ),
            );
        }
    }
    if r.case_margin_s > 86_400 {
        doc.error(
            "retention.case_margin_s",
            "must be between 0 and 86400 seconds",
        );
    }
    if !(60..=86_400).contains(&r.sweep_interval_s) {
        doc.error(
            "retention.sweep_interval_s",
            "must be between 60 and 86400 seconds",
        );
    }
    if !(100..=1_000_000).contains(&r.sweep_chunk_rows) {
        doc.error(
            "retention.sweep_chunk_rows",
            "must be between 100 and 1000000 rows",
        );
    }
    crate::sweeper::Settings {
        policy,
        interval: std::time::Duration::from_secs(r.sweep_interval_s),
        chunk_rows: r.sweep_chunk_rows,
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    /// `ip:port` of the HTTP API. Default `127.0.0.1:8080`.
    #[serde(default = "default_api_listen")]
    listen: String,
    /// TOML file of `[[tokens]]` (name, role, department, sha256); see [`crate::auth`].
    /// Default: none (no token is accepted).
    #[serde(default)]
    tokens_file: Option<PathBuf>,
    /// The role of a request without a token: `none` (default: 401) or `viewer` (read-only
    /// for everyone who can reach the port; only on a closed network).
    #[serde(default = "default_anonymous")]
    anonymous: String,
    /// Most HTTP connections served at once; more wait in the kernel's accept queue (file
    /// descriptors stay for the broker and the store). Default 512.
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// A client must send a request's headers within this many ms (slowloris). Default 10000.
    #[serde(default = "default_header_timeout_ms")]
    header_timeout_ms: u64,
    /// A request (its body read and the handler's answer) must be done within this many ms,
    /// else 408. Default 30000.
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    /// Largest request body in bytes (413 above). Default 65536.
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// Where departments and citizens reach this API from outside (`https://fume.district.example`,
    /// a reverse proxy's prefix allowed): the links to pictures in webhooks and Open311's
    /// `media_url` are absolute under it. Default: none (they are API paths such as
    /// `/api/v1/evidence/{sha256}/view`).
    #[serde(default)]
    public_url: Option<String>,
}

/// `[api] public_url` checked: an absolute `http`/`https` URL with a host, without user name,
/// password, query or fragment; returned without a trailing slash. Pure.
pub fn public_url(sent: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(sent).map_err(|e| format!("`{sent}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{sent}` must be an http or https URL"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{sent}` has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{sent}` must not have a query or fragment"));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn default_max_connections() -> usize {
    HttpLimits::default().max_connections
}
fn default_header_timeout_ms() -> u64 {
    HttpLimits::default().header_timeout.as_millis() as u64
}
fn default_request_timeout_ms() -> u64 {
    HttpLimits::default().request_timeout.as_millis() as u64
}
fn default_max_body_bytes() -> usize {
    HttpLimits::default().max_body_bytes
}

fn default_anonymous() -> String {
    "none".into()
}

fn default_api_listen() -> String {
    "127.0.0.1:8080".into()
}

/// `[broker]`: every key of both modes; which ones apply is checked after parsing so that a key
/// of the other mode gets a clear message instead of "unknown field".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrokerSection {
    /// `embedded` (default) or `external`.
    #[serde(default = "default_mode")]
    mode: String,
    /// embedded: `ip:port` of the MQTT v4 (3.1.1) listener. Default `127.0.0.1:1883`.
    listen: Option<String>,
    /// embedded: TOML file with `[[users]] username, password` (or `password_sha256`). Required.
    credentials_file: Option<PathBuf>,
    /// embedded: PEM certificate chain of the listener; with `tls_key_file` the listener speaks
    /// MQTT over TLS only. Default: none (plain TCP; only for loopback or a closed network).
    tls_cert_file: Option<PathBuf>,
    /// embedded: PEM private key of that certificate (mode 0600). Default: none.
    tls_key_file: Option<PathBuf>,
    /// Largest MQTT payload accepted (and the ingest client's packet limit). Default 1 MiB.
    max_payload_bytes: Option<usize>,
    /// external: broker host. Required.
    host: Option<String>,
    /// external: broker port. Default 1883.
    port: Option<u16>,
    /// external: user name of the aggregator's ingest client. Required.
    username: Option<String>,
    /// external: file whose first line is that user's password. Required.
    password_file: Option<PathBuf>,
}

fn default_mode() -> String {
    "embedded".into()
}

pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    /// TOML file with more `[[gateways]] id, key` entries (keeps keys out of the main file).
    /// Default: none.
    #[serde(default)]
    keys_file: Option<PathBuf>,
    /// Most items committed in one transaction (several batches are grouped, then all acked).
    /// Default 20000.
    #[serde(default = "default_group_max_items")]
    group_max_items: usize,
    /// Most items in one batch; a bigger batch is rejected as `bad_seq`. Default 10000.
    #[serde(default = "default_max_items")]
    max_items_per_batch: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            keys_file: None,
            group_max_items: default_group_max_items(),
            max_items_per_batch: default_max_items(),
        }
    }
}

fn default_group_max_items() -> usize {
    20_000
}
fn default_max_items() -> usize {
    10_000
}

/// `[cases]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesSection {
    /// Case catalogue file (categories, departments, calendar; see docs/cases.md). Default: the
    /// built-in catalogue (`print-default-catalogue`).
    #[serde(default)]
    catalogue: Option<PathBuf>,
    /// How often timers (overdue, escalation) and automatic verification are checked, seconds.
    /// Default 30.
    #[serde(default = "default_tick_s")]
    tick_interval_s: u64,
    /// TOML file of `[[webhooks]] department, secret` (the HMAC key of each department's
    /// webhook; the URL is in the catalogue). Default: none.
    #[serde(default)]
    webhook_secrets_file: Option<PathBuf>,
    /// Days citizens' contact details (Open311 email, phone, name) are kept after their case
    /// was closed or rejected; the timer pass erases them then. 1 to 3650. Default 180.
    #[serde(default = "default_contact_retention_days")]
    contact_retention_days: u32,
}

fn default_tick_s() -> u64 {
    30
}

fn default_contact_retention_days() -> u32 {
    180
}

/// `[evidence]`: camera pictures and uploads (docs/aggregator-config.md, "Evidence").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceSection {
    /// Folder of the pictures' bytes (local files through `object_store`), relative to the
    /// config file's folder. Default: `evidence` beside the store file.
    #[serde(default)]
    dir: Option<PathBuf>,
    /// Days a picture that belongs to no case is kept after it arrived (one still arriving
    /// then is abandoned); a case's pictures live as long as the case. 1 to 3650. Default 30.
    #[serde(default = "default_keep_unlinked_days")]
    keep_unlinked_days: u32,
    /// Largest picture a department may upload (`POST /api/v1/cases/{id}/evidence`), bytes.
    /// 1024 to 67108864. Default 8388608 (8 MiB).
    #[serde(default = "default_max_upload_bytes")]
    max_upload_bytes: usize,
    /// Seconds a gateway may still act on a snapshot command sent for a case. 5 to 3600.
    /// Default 60.
    #[serde(default = "default_snapshot_expiry_s")]
    snapshot_expiry_s: u64,
}

fn default_keep_unlinked_days() -> u32 {
    30
}
fn default_max_upload_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_snapshot_expiry_s() -> u64 {
    60
}

/// `[drones]`: drone positions near sites (docs/drones.md, "Aggregator").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DronesSection {
    /// A drone within this distance of a site (metres, 10 to 5000) is passing it. Default 150.
    #[serde(default = "default_pass_distance_m")]
    pass_distance_m: f64,
    /// A drone that leaves a site's distance and comes back within this many seconds is still
    /// on the same pass (circling); longer, and it is a new pass. 1 to 3600. Default 120.
    #[serde(default = "default_pass_gap_s")]
    pass_gap_s: u64,
    /// A pass whose drone sends no later point is judged over this many seconds after its
    /// last point within the distance by the aggregator's clock (the drone landed or its link
    /// dropped). At least `pass_gap_s`, at most 86400. Default 300.
    #[serde(default = "default_pass_close_after_s")]
    pass_close_after_s: u64,
    /// How often the aggregator judges newly arrived positions, seconds, 1 to 600. Default 5.
    #[serde(default = "default_judge_interval_s")]
    judge_interval_s: u64,
}

fn default_pass_distance_m() -> f64 {
    150.0
}
fn default_pass_gap_s() -> u64 {
    120
}
fn default_pass_close_after_s() -> u64 {
    300
}
fn default_judge_interval_s() -> u64 {
    5
}

impl Default for DronesSection {
    fn default() -> Self {
        DronesSection {
            pass_distance_m: default_pass_distance_m(),
            pass_gap_s: default_pass_gap_s(),
            pass_close_after_s: default_pass_close_after_s(),
            judge_interval_s: default_judge_interval_s(),
        }
    }
}

/// `[[webhooks]]` of the webhook secrets file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSecret {
    department: String,
    /// At least 16 characters.
    secret: String,
}

/// `[[gateways]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayEntry {
    /// The gateway's id, as in its own config and its MQTT topics.
    id: String,
    /// Hex HMAC-SHA256 key shared with that gateway, at least 32 hex digits (128 bits).
    key: String,
    /// Display name of the street or site (cases from its alarms carry it). Default: the id.
    #[serde(default)]
    site: Option<String>,
    /// City-management grid cell of the site (case statistics group by it). Default: none.
    #[serde(default)]
    grid_cell: Option<String>,
    /// WGS 84 latitude of the site in degrees, -90 to 90 (the map; aerial passes). Given with
    /// `lon` or not at all. Default: none (the site is not on the map and no drone pass is
    /// judged near it).
    #[serde(default)]
    lat: Option<f64>,
    /// WGS 84 longitude of the site in degrees, -180 to 180. Given with `lat`. Default: none.
    #[serde(default)]
    lon: Option<f64>,
    /// `[[gateways.devices]]`: devices of this gateway with a name or a place of their own (a
    /// street's restaurants behind one gateway). Default: none (every device stands at the
    /// gateway's site).
    #[serde(default)]
    devices: Vec<DeviceEntry>,
}

/// `[[gateways.devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    /// The device id, as in the gateway's `[[devices]] id`.
    id: String,
    /// Display name on the map and in aerial-pass notes (the restaurant's, say). Default: the id.
    #[serde(default)]
    name: Option<String>,
    /// WGS 84 latitude of the device in degrees, -90 to 90. Given with `lon` or not at all.
    /// Default: none (the device stands at its gateway's site).
    #[serde(default)]
    lat: Option<f64>,
    /// WGS 84 longitude of the device in degrees, -180 to 180. Given with `lat`. Default: none.
    #[serde(default)]
    lon: Option<f64>,
}

/// A position from optional `lat` and `lon` keys: both or neither, each in its range; every
/// problem reported at its key.
fn lat_lon(
    doc: &mut Doc<'_>,
    at: &dyn Fn(&str) -> String,
    lat: Option<f64>,
    lon: Option<f64>,
) -> Option<(crate::cases::model::Coord, crate::cases::model::Coord)> {
    match (lat, lon) {
        (None, None) => None,
        (Some(lat), Some(lon)) => {
            let mut ok = true;
            if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                doc.error(&at("lat"), "must be a latitude in degrees, -90 to 90");
                ok = false;
            }
            if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                doc.error(&at("lon"), "must be a longitude in degrees, -180 to 180");
                ok = false;
            }
            ok.then_some((
                crate::cases::model::Coord(lat),
                crate::cases::model::Coord(lon),
            ))
        }
        (Some(_), None) => {
            doc.error(&at("lon"), "missing: `lat` is given, so `lon` must be too");
            None
        }
        (None, Some(_)) => {
            doc.error(&at("lat"), "missing: `lon` is given, so `lat` must be too");
            None
        }
    }
}

fn site_info(
    doc: &mut Doc<'_>,
    at: &dyn Fn(&str) -> String,
    g: &GatewayEntry,
) -> crate::cases::SiteInfo {
    for (f, v) in [("site", &g.site), ("grid_cell", &g.grid_cell)] {
        if let Some(v) = v
            && (v.trim().is_empty() || v.chars().count() > 64)
        {
            doc.error(&at(f), "must be 1 to 64 characters");
        }
    }
    let position = lat_lon(doc, at, g.lat, g.lon);
    let mut devices = std::collections::BTreeMap::new();
    for (j, d) in g.devices.iter().enumerate() {
        let dat = |f: &str| at(&format!("devices[{j}].{f}"));
        id::check(doc, &dat("id"), &d.id, "");
        if let Some(n) = &d.name
            && (n.trim().is_empty() || n.chars().count() > 64)
        {
            doc.error(&dat("name"), "must be 1 to 64 characters");
        }
        let place = crate::cases::DevicePlace {
            name: d.name.clone(),
            position: lat_lon(doc, &dat, d.lat, d.lon),
        };
        if devices.insert(d.id.clone(), place).is_some() {
            doc.error(
                &dat("id"),
                format!("device `{}` is listed twice for this gateway", d.id),
            );
        }
    }
    crate::cases::SiteInfo {
        site: g.site.clone(),
        grid_cell: g.grid_cell.clone(),
        position,
        devices,
    }
}

/// `[[users]]` of the credentials file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    /// Plaintext password (protect the file: mode 0600, owned by the service user).
    #[serde(default)]
    password: Option<String>,
    /// Hex SHA-256 of the password, instead of `password`.
    #[serde(default)]
    password_sha256: Option<String>,
}

/// `[dji]`: DJI docks and DJI Pilot 2 remote controllers (DJI Cloud API; docs/drones.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DjiSection {
    /// TOML file of `[[docks]]` entries (sn, aircraft, username, password or password_sha256),
    /// like the broker's credentials file. Default: none (no DJI device is accepted).
    #[serde(default)]
    docks_file: Option<PathBuf>,
    /// How often the aircraft positions received are written to the store as tracks, seconds.
    /// 1 to 600. Default 10.
    #[serde(default = "default_dji_flush_s")]
    flush_interval_s: u64,
    /// `[dji.external]`: also read the docks' messages from this broker (the customer's).
    /// Default: none.
    #[serde(default)]
    external: Option<DjiExternalSection>,
}

fn default_dji_flush_s() -> u64 {
    10
}

/// `[dji.external]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DjiExternalSection {
    /// Broker host. Required.
    host: String,
    /// Default 1883 (8883 is usual with TLS).
    #[serde(default = "default_external_port")]
    port: u16,
    /// MQTT client id. Default `fumegrid-dji-{aggregator id}`.
    #[serde(default)]
    client_id: Option<String>,
    /// User name on that broker. Default: none (anonymous).
    #[serde(default)]
    username: Option<String>,
    /// File whose first line is that user's password. Default: none.
    #[serde(default)]
    password_file: Option<PathBuf>,
    /// CA certificate (PEM) of that broker; set it to use TLS. Default: plain TCP.
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
}

fn default_external_port() -> u16 {
    1883
}

/// `[[docks]]` of the DJI docks file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DockEntry {
    /// The dock's (or remote controller's) serial number: the Cloud API's `gateway_sn`.
    sn: String,
    /// Serial numbers of the aircraft flying from it (their tracks are kept). Default: none.
    #[serde(default)]
    aircraft: Vec<String>,
    /// Its login on the embedded broker. Default: none (it reaches us only through
    /// `[dji.external]`).
    #[serde(default)]
    username: Option<String>,
    /// Plaintext password of that login (at least 8 characters).
    #[serde(default)]
    password: Option<String>,
    /// Hex SHA-256 of the password, instead of `password`.
    #[serde(default)]
    password_sha256: Option<String>,
}

/// DJI Cloud API devices, checked.
#[derive(Debug, Clone, Default)]
pub struct DjiConfig {
    /// Registered docks and their aircraft.
    pub registry: crate::dji::Registry,
    /// Embedded-broker logins: user name → (secret, the serial numbers it may use).
    pub accounts: BTreeMap<String, (Secret, Vec<String>)>,
    pub external: Option<DjiExternal>,
    pub flush_interval: std::time::Duration,
}

/// `[dji.external]`, checked.
#[derive(Clone)]
pub struct DjiExternal {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for DjiExternal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjiExternal")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish_non_exhaustive()
    }
}

/// Where the broker is.
#[derive(Debug, Clone)]
pub enum BrokerConfig {
    Embedded {
        listen: SocketAddr,
        /// Gateway (and tool) accounts. The ingest logs in to rumqttd's internal listener with
        /// a secret minted at start, not with an account.
        users: BTreeMap<String, Secret>,
        max_payload_bytes: usize,
        /// `(certificate chain, private key)` PEM files: the listener speaks TLS.
        tls: Option<(PathBuf, PathBuf)>,
    },
    External {
        host: String,
        port: u16,
        username: String,
        password: String,
        max_payload_bytes: usize,
    },
}

impl BrokerConfig {
    pub fn max_payload_bytes(&self) -> usize {
        match self {
            BrokerConfig::Embedded {
                max_payload_bytes, ..
            }
            | BrokerConfig::External {
                max_payload_bytes, ..
            } => *max_payload_bytes,
        }
    }
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub id: String,
    pub store_path: PathBuf,
    pub synchronous: Synchronous,
    /// `[retention]`, checked.
    pub retention: crate::sweeper::Settings,
    pub api_listen: SocketAddr,
    pub broker: BrokerConfig,
    pub group_max_items: usize,
    pub max_items_per_batch: usize,
    pub keys: Keys,
    /// The case catalogue: `[cases] catalogue`, else the built-in one.
    pub catalogue: Arc<Catalogue>,
    /// Where the catalogue came from (a path, or `built-in`).
    pub catalogue_source: String,
    /// API tokens (`[api] tokens_file`).
    pub tokens: crate::auth::Tokens,
    /// `[api] anonymous = "viewer"`: requests without a token read as a viewer.
    pub anonymous_viewer: bool,
    /// `[api] max_connections, header_timeout_ms, request_timeout_ms, max_body_bytes`.
    pub http: HttpLimits,
    /// `[api] public_url`, checked, without a trailing slash.
    pub public_url: Option<String>,
    pub tick_interval: std::time::Duration,
    /// `[cases] contact_retention_days`: how long contact details outlive their case's closure.
    pub contact_retention: std::time::Duration,
    /// Department id → webhook HMAC secret.
    pub webhook_secrets: HashMap<String, Vec<u8>>,
    /// Gateway id → site name, grid cell and position (`[[gateways]] site, grid_cell, lat,
    /// lon`).
    pub sites: HashMap<String, crate::cases::SiteInfo>,
    /// `[drones]`: when a drone passes a site.
    pub aerial: crate::cases::aerial::Settings,
    /// `[drones] judge_interval_s`.
    pub aerial_interval: std::time::Duration,
    /// `[evidence] dir`, resolved.
    pub evidence_dir: PathBuf,
    /// `[dji]`: DJI docks and where their messages come from.
    pub dji: DjiConfig,
    /// `[evidence] keep_unlinked_days, max_upload_bytes, snapshot_expiry_s` (the caption
    /// offset is the catalogue calendar's).
    pub evidence: crate::evidence::Settings,
}

impl Config {
    /// Reads and validates a config file and every file it names.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        Config::from_source(&Source::read(path))
    }

    pub fn from_source(src: &Source) -> Result<Config, Diagnostics> {
        let mut doc = Doc::new(src);
        if !doc.diags.is_empty() {
            return Err(doc.diags);
        }
        doc.deny_unknown_keys(&[
            "aggregator",
            "store",
            "retention",
            "api",
            "broker",
            "ingest",
            "cases",
            "evidence",
            "dji",
            "gateways",
            "drones",
        ]);
        let agg: Option<AggregatorSection> = doc.section("aggregator", true);
        let store: Option<StoreSection> = doc.section("store", false);
        let retention: RetentionSection = doc.section("retention", false).unwrap_or_default();
        let retention = retention_settings(&mut doc, &retention);
        let api: Option<ApiSection> = doc.section("api", false);
        let broker: Option<BrokerSection> = doc.section("broker", false);
        let ingest: Option<IngestSection> = doc.section("ingest", false);
        let cases: CasesSection = doc.section("cases", false).unwrap_or(CasesSection {
            catalogue: None,
            tick_interval_s: default_tick_s(),
            webhook_secrets_file: None,
            contact_retention_days: default_contact_retention_days(),
        });
        if !(1..=3600).contains(&cases.tick_interval_s) {
            doc.error(
                "cases.tick_interval_s",
                "must be between 1 and 3600 seconds",
            );
        }
        if !(1..=3650).contains(&cases.contact_retention_days) {
            doc.error(
                "cases.contact_retention_days",
                "must be between 1 and 3650 days",
            );
        }
        let evidence: EvidenceSection = doc.section("evidence", false).unwrap_or(EvidenceSection {
            dir: None,
            keep_unlinked_days: default_keep_unlinked_days(),
            max_upload_bytes: default_max_upload_bytes(),
            snapshot_expiry_s: default_snapshot_expiry_s(),
        });
        if !(1..=3650).contains(&evidence.keep_unlinked_days) {
            doc.error(
                "evidence.keep_unlinked_days",
                "must be between 1 and 3650 days",
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&evidence.max_upload_bytes) {
            doc.error(
                "evidence.max_upload_bytes",
                "must be between 1024 and 67108864 bytes",
            );
        }
        if !(5..=3600).contains(&evidence.snapshot_expiry_s) {
            doc.error(
                "evidence.snapshot_expiry_s",
                "must be between 5 and 3600 seconds",
            );
        }
        let dji: Option<DjiSection> = doc.section("dji", false);
        let drones: DronesSection = doc.section("drones", false).unwrap_or_default();
        if !(drones.pass_distance_m.is_finite()
            && (10.0..=5000.0).contains(&drones.pass_distance_m))
        {
            doc.error(
                "drones.pass_distance_m",
                "must be between 10 and 5000 metres",
            );
        }
        if !(1..=3600).contains(&drones.pass_gap_s) {
            doc.error("drones.pass_gap_s", "must be between 1 and 3600 seconds");
        }
        if !(drones.pass_gap_s..=86_400).contains(&drones.pass_close_after_s) {
            doc.error(
                "drones.pass_close_after_s",
                "must be at least drones.pass_gap_s and at most 86400 seconds",
            );
        }
        if !(1..=600).contains(&drones.judge_interval_s) {
            doc.error(
                "drones.judge_interval_s",
                "must be between 1 and 600 seconds",
            );
        }
        let gateways: Vec<(usize, GatewayEntry)> = doc.array("gateways");
        let base = src.file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut extra = Diagnostics::default();

        if let Some(a) = &agg {
            id::check(&mut doc, "aggregator.id", &a.id, id::IN_TOPICS);
        }
        let store = store.unwrap_or(StoreSection {
            path: default_store_path(),
            synchronous: Synchronous::default(),
        });
        let api = api.unwrap_or(ApiSection {
            listen: default_api_listen(),
            tokens_file: None,
            anonymous: default_anonymous(),
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_body_bytes: default_max_body_bytes(),
            public_url: None,
        });
        let public = api.public_url.as_deref().and_then(|u| match public_url(u) {
            Ok(u) => Some(u),
            Err(m) => {
                doc.error("api.public_url", m);
                None
            }
        });
        for (key, zero) in [
            ("api.max_connections", api.max_connections == 0),
            ("api.header_timeout_ms", api.header_timeout_ms == 0),
            ("api.request_timeout_ms", api.request_timeout_ms == 0),
            ("api.max_body_bytes", api.max_body_bytes == 0),
        ] {
            if zero {
                doc.error(key, "must be more than zero");
            }
        }
        let http = HttpLimits {
            max_connections: api.max_connections,
            header_timeout: std::time::Duration::from_millis(api.header_timeout_ms),
            request_timeout: std::time::Duration::from_millis(api.request_timeout_ms),
            max_body_bytes: api.max_body_bytes,
        };
        let api_listen = parse_addr(&mut doc, "api.listen", &api.listen);
        let anonymous_viewer = match api.anonymous.as_str() {
            "none" => false,
            "viewer" => true,
            other => {
                doc.error(
                    "api.anonymous",
                    format!("must be `none` or `viewer`, not `{other}`"),
                );
                false
            }
        };
        let ingest = ingest.unwrap_or_default();
        if ingest.group_max_items == 0 {
            doc.error("ingest.group_max_items", "must be at least 1");
        }
        if ingest.max_items_per_batch == 0 {
            doc.error("ingest.max_items_per_batch", "must be at least 1");
        }

        let broker = broker_config(&mut doc, &mut extra, &base, broker);
        let dji = dji_config(
            &mut doc,
            &mut extra,
            &base,
            dji,
            agg.as_ref().map_or("", |a| a.id.as_str()),
            broker.as_ref(),
        );

        // Keys: inline entries, then the keys file.
        let mut keys: HashMap<String, Vec<u8>> = HashMap::new();
        let mut sites = HashMap::new();
        for (i, g) in gateways {
            let at = |f: &str| format!("gateways[{i}].{f}");
            id::check(&mut doc, &at("id"), &g.id, id::IN_TOPICS);
            sites.insert(g.id.clone(), site_info(&mut doc, &at, &g));
            match keys::parse_key(&g.key) {
                Ok(k) => {
                    if keys.insert(g.id.clone(), k).is_some() {
                        doc.error(&at("id"), format!("gateway `{}` is listed twice", g.id));
                    }
                }
                Err(m) => doc.error(&at("key"), m),
            }
        }
        if let Some(kf) = &ingest.keys_file {
            let path = base.join(kf);
            let ksrc = Source::read(&path);
            let mut kdoc = Doc::new(&ksrc);
            if kdoc.diags.is_empty() {
                kdoc.deny_unknown_keys(&["gateways"]);
                let entries: Vec<(usize, GatewayEntry)> = kdoc.array("gateways");
                for (i, g) in entries {
                    let at = |f: &str| format!("gateways[{i}].{f}");
                    id::check(&mut kdoc, &at("id"), &g.id, id::IN_TOPICS);
                    sites.insert(g.id.clone(), site_info(&mut kdoc, &at, &g));
                    match keys::parse_key(&g.key) {
                        Ok(k) => {
                            if keys.insert(g.id.clone(), k).is_some() {
                                kdoc.error(
                                    &at("id"),
                                    format!("gateway `{}` already has a key", g.id),
                                );
                            }
                        }
                        Err(m) => kdoc.error(&at("key"), m),
                    }
                }
            }
            extra.extend(kdoc.diags);
        }

        // The catalogue: its own file, reported with its own lines and fields.
        let (catalogue, catalogue_source) = match &cases.catalogue {
            Some(f) => {
                let path = base.join(f);
                (Catalogue::load(&path), path.display().to_string())
            }
            None => (Catalogue::builtin(), "built-in".to_string()),
        };
        let catalogue = match catalogue {
            Ok(c) => Some(Arc::new(c)),
            Err(d) => {
                extra.extend(d);
                None
            }
        };

        let mut tokens = crate::auth::Tokens::default();
        let mut webhook_secrets = HashMap::new();
        if let Some(cat) = &catalogue {
            if let Some(f) = &api.tokens_file {
                match crate::auth::Tokens::load(&base.join(f), cat) {
                    Ok(t) => tokens = t,
                    Err(d) => extra.extend(d),
                }
            }
            if let Some(f) = &cases.webhook_secrets_file {
                let (s, d) = load_webhook_secrets(&base.join(f), cat);
                extra.extend(d);
                webhook_secrets = s;
            }
            for d in &cat.departments {
                if d.webhook_url.is_some() && !webhook_secrets.contains_key(&d.id) {
                    doc.error(
                        "cases.webhook_secrets_file",
                        format!(
                            "department `{}` has a webhook_url in the catalogue but no secret here \
                             (webhooks are always signed)",
                            d.id
                        ),
                    );
                }
            }
        }

        let mut diags = doc.diags;
        diags.extend(extra);
        match (agg, broker, catalogue) {
            (Some(agg), Some(broker), Some(catalogue)) if diags.is_empty() => Ok(Config {
                file: src.file.clone(),
                id: agg.id,
                evidence_dir: match &evidence.dir {
                    Some(d) => base.join(d),
                    None => base
                        .join(&store.path)
                        .parent()
                        .map(|p| p.join("evidence"))
                        .unwrap_or_else(|| PathBuf::from("evidence")),
                },
                evidence: crate::evidence::Settings {
                    keep_unlinked: std::time::Duration::from_secs(
                        u64::from(evidence.keep_unlinked_days) * 86_400,
                    ),
                    max_upload_bytes: evidence.max_upload_bytes,
                    snapshot_expiry: std::time::Duration::from_secs(evidence.snapshot_expiry_s),
                    caption_offset_min: Some(catalogue.calendar.utc_offset_min),
                },
                store_path: base.join(store.path),
                synchronous: store.synchronous,
                retention,
                api_listen: api_listen.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into()),
                broker,
                group_max_items: ingest.group_max_items,
                max_items_per_batch: ingest.max_items_per_batch,
                keys: Keys::new(keys),
                catalogue,
                catalogue_source,
                tokens,
                anonymous_viewer,
                http,
                public_url: public,
                tick_interval: std::time::Duration::from_secs(cases.tick_interval_s),
                contact_retention: std::time::Duration::from_secs(
                    u64::from(cases.contact_retention_days) * 86_400,
                ),
                webhook_secrets,
                sites,
                dji,
                aerial: crate::cases::aerial::Settings {
                    distance_m: drones.pass_distance_m,
                    gap_ms: drones.pass_gap_s as i64 * 1000,
                    close_after_ms: drones.pass_close_after_s as i64 * 1000,
                },
                aerial_interval: std::time::Duration::from_secs(drones.judge_interval_s),
            }),
            _ => Err(diags),
        }
    }
}

fn broker_config(
    doc: &mut Doc<'_>,
    extra: &mut Diagnostics,
    base: &Path,
    b: Option<BrokerSection>,
) -> Option<BrokerConfig> {
    let b = b.unwrap_or(BrokerSection {
        mode: default_mode(),
        listen: None,
        credentials_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        max_payload_bytes: None,
        host: None,
        port: None,
        username: None,
        password_file: None,
    });
    let max_payload_bytes = b.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD);
    if !(1024..=256 * 1024 * 1024).contains(&max_payload_bytes) {
        doc.error(
            "broker.max_payload_bytes",
            "must be between 1024 and 268435456 (the MQTT limit)",
        );
    }
    let misplaced = |doc: &mut Doc<'_>, key: &str, set: bool, mode: &str| {
        if set {
            doc.error(
                &format!("broker.{key}"),
                format!("`{key}` does not apply to mode = \"{mode}\""),
            );
        }
    };
    match b.mode.as_str() {
        "embedded" => {
            misplaced(doc, "host", b.host.is_some(), "embedded");
            misplaced(doc, "port", b.port.is_some(), "embedded");
            misplaced(doc, "username", b.username.is_some(), "embedded");
            misplaced(doc, "password_file", b.password_file.is_some(), "embedded");
            let listen = parse_addr(
                doc,
                "broker.listen",
                b.listen.as_deref().unwrap_or("127.0.0.1:1883"),
            );
            let users = match &b.credentials_file {
                None => {
                    doc.error(
                        "broker",
                        "embedded broker needs `credentials_file` (anonymous MQTT is not allowed)",
                    );
                    None
                }
                Some(f) => {
                    let (users, d) = load_users(&base.join(f));
                    extra.extend(d);
                    users
                }
            };
            let tls = match (b.tls_cert_file, b.tls_key_file) {
                (None, None) => None,
                (Some(c), Some(k)) => {
                    let (c, k) = (base.join(c), base.join(k));
                    for (key, p) in [("tls_cert_file", &c), ("tls_key_file", &k)] {
                        if let Err(e) = std::fs::File::open(p) {
                            doc.error(
                                &format!("broker.{key}"),
                                format!("cannot read {}: {e}", p.display()),
                            );
                        }
                    }
                    Some((c, k))
                }
                (Some(_), None) | (None, Some(_)) => {
                    doc.error(
                        "broker.tls_cert_file",
                        "set both `tls_cert_file` and `tls_key_file`, or neither",
                    );
                    None
                }
            };
            Some(BrokerConfig::Embedded {
                listen: listen?,
                users: users?,
                max_payload_bytes,
                tls,
            })
        }
        "external" => {
            misplaced(doc, "listen", b.listen.is_some(), "external");
            misplaced(
                doc,
                "credentials_file",
                b.credentials_file.is_some(),
                "external",
            );
            misplaced(doc, "tls_cert_file", b.tls_cert_file.is_some(), "external");
            misplaced(doc, "tls_key_file", b.tls_key_file.is_some(), "external");
            let Some(host) = b.host.filter(|h| !h.trim().is_empty()) else {
                doc.error("broker", "external broker needs `host`");
                return None;
            };
            let Some(username) = b.username.filter(|u| !u.is_empty()) else {
                doc.error("broker", "external broker needs `username`");
                return None;
            };
            let Some(pf) = b.password_file else {
                doc.error("broker", "external broker needs `password_file`");
                return None;
            };
            let path = base.join(pf);
            let password = match std::fs::read_to_string(&path) {
                Ok(t) => t.lines().next().unwrap_or("").to_string(),
                Err(e) => {
                    doc.error(
                        "broker.password_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            };
            if password.is_empty() {
                doc.error(
                    "broker.password_file",
                    format!("{} is empty", path.display()),
                );
            }
            Some(BrokerConfig::External {
                host,
                port: b.port.unwrap_or(1883),
                username,
                password,
                max_payload_bytes,
            })
        }
        other => {
            doc.error(
                "broker.mode",
                format!("unknown mode `{other}`, expected `embedded` or `external`"),
            );
            None
        }
    }
}

/// `password` or `password_sha256` of a login, checked (`at` makes the field path).
fn login_secret(
    doc: &mut Doc<'_>,
    at: &dyn Fn(&str) -> String,
    password: Option<String>,
    password_sha256: Option<String>,
) -> Option<Secret> {
    match (password, password_sha256) {
        (Some(p), None) if p.len() >= 8 => Some(Secret::Plain(p)),
        (Some(_), None) => {
            doc.error(&at("password"), "use at least 8 characters");
            None
        }
        (None, Some(h)) => {
            let mut a = [0u8; 32];
            if hex::decode_to_slice(h.trim(), &mut a).is_err() {
                doc.error(&at("password_sha256"), "must be 64 hex digits");
                return None;
            }
            Some(Secret::Sha256(a))
        }
        (Some(_), Some(_)) => {
            doc.error(
                &at("password_sha256"),
                "set `password` or `password_sha256`, not both",
            );
            None
        }
        (None, None) => {
            doc.error(&at("username"), "needs `password` or `password_sha256`");
            None
        }
    }
}

/// `[dji]` and its docks file: every serial number and login unique, none the same as a
/// gateway's broker account (a dock may use its serial number as its MQTT client id), logins
/// only with the embedded broker, and each dock reachable somewhere.
fn dji_config(
    doc: &mut Doc<'_>,
    extra: &mut Diagnostics,
    base: &Path,
    dji: Option<DjiSection>,
    aggregator_id: &str,
    broker: Option<&BrokerConfig>,
) -> DjiConfig {
    use crate::dji::{Dock, Registry, valid_sn};
    let Some(dji) = dji else {
        return DjiConfig {
            flush_interval: std::time::Duration::from_secs(default_dji_flush_s()),
            ..DjiConfig::default()
        };
    };
    if !(1..=600).contains(&dji.flush_interval_s) {
        doc.error("dji.flush_interval_s", "must be between 1 and 600 seconds");
    }
    let external = dji.external.map(|e| {
        if e.host.trim().is_empty() {
            doc.error("dji.external.host", "must not be empty");
        }
        let client_id = e
            .client_id
            .unwrap_or_else(|| format!("fumegrid-dji-{aggregator_id}"));
        if client_id.is_empty() || client_id.len() > 128 {
            doc.error("dji.external.client_id", "must be 1 to 128 characters");
        }
        let credentials = match (e.username, e.password_file) {
            (None, None) => None,
            (Some(u), Some(f)) => {
                let path = base.join(f);
                match std::fs::read_to_string(&path) {
                    Ok(t) if !t.lines().next().unwrap_or("").is_empty() => {
                        Some((u, t.lines().next().unwrap_or("").to_string()))
                    }
                    Ok(_) => {
                        doc.error(
                            "dji.external.password_file",
                            format!("{} is empty", path.display()),
                        );
                        None
                    }
                    Err(err) => {
                        doc.error(
                            "dji.external.password_file",
                            format!("cannot read {}: {err}", path.display()),
                        );
                        None
                    }
                }
            }
            _ => {
                doc.error(
                    "dji.external.username",
                    "set both `username` and `password_file`, or neither",
                );
                None
            }
        };
        let tls_ca_file = e.tls_ca_file.map(|ca| base.join(ca));
        if let Some(ca) = &tls_ca_file
            && let Err(err) = std::fs::metadata(ca)
        {
            doc.error(
                "dji.external.tls_ca_file",
                format!("cannot read {}: {err}", ca.display()),
            );
        }
        DjiExternal {
            host: e.host,
            port: e.port,
            client_id,
            credentials,
            tls_ca_file,
        }
    });
    let embedded_users = match broker {
        Some(BrokerConfig::Embedded { users, .. }) => Some(users),
        _ => None,
    };
    let mut docks = Vec::new();
    let mut accounts = BTreeMap::new();
    if let Some(f) = &dji.docks_file {
        let path = base.join(f);
        let src = Source::read(&path);
        let mut ddoc = Doc::new(&src);
        if ddoc.diags.is_empty() {
            ddoc.deny_unknown_keys(&["docks"]);
            let entries: Vec<(usize, DockEntry)> = ddoc.array("docks");
            let mut serials = std::collections::HashSet::new();
            for (i, d) in entries {
                let at = |f: &str| format!("docks[{i}].{f}");
                let mut ok = true;
                for (field, sn) in std::iter::once(("sn".to_string(), &d.sn)).chain(
                    d.aircraft
                        .iter()
                        .enumerate()
                        .map(|(j, a)| (format!("aircraft[{j}]"), a)),
                ) {
                    if !valid_sn(sn) {
                        ddoc.error(
                            &at(&field),
                            format!("`{sn}`: a serial number is 1 to 64 ASCII letters and digits"),
                        );
                        ok = false;
                    } else if !serials.insert(sn.clone()) {
                        ddoc.error(&at(&field), format!("serial number `{sn}` is listed twice"));
                        ok = false;
                    } else if embedded_users.is_some_and(|u| u.contains_key(sn.as_str())) {
                        ddoc.error(
                            &at(&field),
                            format!("`{sn}` is also a broker account's name"),
                        );
                        ok = false;
                    }
                }
                match d.username {
                    Some(user) => {
                        let secret = login_secret(&mut ddoc, &at, d.password, d.password_sha256);
                        if embedded_users.is_none() {
                            ddoc.error(
                                &at("username"),
                                "a DJI login needs the embedded broker ([broker] mode = \"embedded\"); \
                                 with another broker, read the docks from [dji.external]",
                            );
                        } else if user.is_empty() || user.starts_with("fumegrid-") {
                            ddoc.error(
                                &at("username"),
                                "must not be empty nor start with `fumegrid-` (reserved)",
                            );
                        } else if embedded_users.is_some_and(|u| u.contains_key(&user))
                            || accounts.contains_key(&user)
                            || serials.contains(&user)
                        {
                            ddoc.error(
                                &at("username"),
                                format!("`{user}` is already a broker account or serial number"),
                            );
                        } else if let Some(secret) = secret {
                            let mut scope = vec![d.sn.clone()];
                            scope.extend(d.aircraft.iter().cloned());
                            accounts.insert(user, (secret, scope));
                        }
                    }
                    None => {
                        if d.password.is_some() || d.password_sha256.is_some() {
                            ddoc.error(&at("password"), "a password needs a `username`");
                        }
                        if external.is_none() {
                            ddoc.error(
                                &at("username"),
                                "no login and no [dji.external] broker: this dock could never reach us",
                            );
                        }
                    }
                }
                if ok {
                    docks.push(Dock {
                        sn: d.sn,
                        aircraft: d.aircraft,
                    });
                }
            }
        }
        extra.extend(ddoc.diags);
    } else if external.is_some() {
        doc.error(
            "dji.docks_file",
            "[dji.external] is set but no dock is registered: every message would be ignored",
        );
    }
    DjiConfig {
        registry: Registry::new(docks),
        accounts,
        external,
        flush_interval: std::time::Duration::from_secs(dji.flush_interval_s),
    }
}

/// Reads the webhook secrets file: `[[webhooks]] department, secret`.
fn load_webhook_secrets(
    path: &Path,
    catalogue: &Catalogue,
) -> (HashMap<String, Vec<u8>>, Diagnostics) {
    let src = Source::read(path);
    let mut doc = Doc::new(&src);
    let mut out = HashMap::new();
    if !doc.diags.is_empty() {
        return (out, doc.diags);
    }
    doc.deny_unknown_keys(&["webhooks"]);
    let entries: Vec<(usize, WebhookSecret)> = doc.array("webhooks");
    for (i, w) in entries {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        if catalogue.department(&w.department).is_none() {
            doc.error(
                &at("department"),
                format!("no department `{}` in the case catalogue", w.department),
            );
            continue;
        }
        if w.secret.len() < 16 {
            doc.error(&at("secret"), "must be at least 16 characters");
            continue;
        }
        if out
            .insert(w.department.clone(), w.secret.into_bytes())
            .is_some()
        {
            doc.error(
                &at("department"),
                format!("`{}` is listed twice", w.department),
            );
        }
    }
    (out, doc.diags)
}

/// Reads a credentials file: `[[users]] username, password | password_sha256`.
fn load_users(path: &Path) -> (Option<BTreeMap<String, Secret>>, Diagnostics) {
    let src = Source::read(path);
    let mut doc = Doc::new(&src);
    if !doc.diags.is_empty() {
        return (None, doc.diags);
    }
    doc.deny_unknown_keys(&["users"]);
    let entries: Vec<(usize, UserEntry)> = doc.array("users");
    let mut users = BTreeMap::new();
    for (i, u) in entries {
        let at = |f: &str| format!("users[{i}].{f}");
        if u.username.is_empty() || u.username.starts_with("fumegrid-ingest") {
            doc.error(
                &at("username"),
                "must not be empty nor start with `fumegrid-ingest` (reserved)",
            );
            continue;
        }
        let Some(secret) = login_secret(&mut doc, &at, u.password, u.password_sha256) else {
            continue;
        };
        if users.insert(u.username.clone(), secret).is_some() {
            doc.error(
                &at("username"),
                format!("user `{}` is listed twice", u.username),
            );
        }
    }
    if users.is_empty() && doc.diags.is_empty() {
        doc.error("users", "no [[users]]: no gateway could connect");
    }
    let ok = doc.diags.is_empty();
    (ok.then_some(users), doc.diags)
}

fn parse_addr(doc: &mut Doc<'_>, path: &str, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            doc.error(
                path,
                format!("`{s}` is not ip:port (e.g. 127.0.0.1:1883 or 0.0.0.0:1883)"),
            );
            None
        }
    }
}

/// The config printed by `print-default-config`: every key, its default, and a comment.
pub const DEFAULT_CONFIG: &str = r#"# fumegrid-aggregator config. Paths are relative to this file's folder.
# Check it with: fumegrid-aggregator validate --config THIS_FILE

[aggregator]
id = "district-01"                # name in logs and in the ingest client's MQTT client id

[store]
path = "/var/lib/fumegrid/aggregator/fumegrid.sqlite3"   # SQLite (WAL: -wal and -shm sit next to it); systemd's StateDirectory
synchronous = "full"              # full: an acked item survives power loss (default)
                                  # normal: survives a process crash only; faster on slow disks

[retention]                       # how long each resolution is kept (days); coarser >= finer
raw_days = 30                     # raw polls (readings: every poll of raw gateways, alarm windows of period ones)
minute_days = 90                  # 60-s periods and 1-minute rollups (a year would be ~320 MB per 10-metric monitor)
other_periods_days = 90           # periods of other lengths (10-s, 300-s, ...)
ten_minute_days = 3650            # 10-minute rollups (GB 18483 judges 10-minute averages)
hourly_days = 3650
daily_days = 3650
case_margin_s = 300               # raw readings and periods from an alarm's raise minus this to its clear
                                  # plus this stay while its case exists (match the gateways' raw_before_s/raw_after_s)
sweep_interval_s = 3600           # a retention pass at start and this often; one log line each
sweep_chunk_rows = 5000           # most rows deleted per transaction (ingest waits at most one chunk)

[api]
listen = "127.0.0.1:8080"         # HTTP API (JSON under /api/v1, /healthz, Open311 under /open311/v2)
# tokens_file = "api-tokens.toml" # [[tokens]] name, role (operator | department | viewer | reporter),
#                                 # department (for role department), sha256 of the token; make one with
#                                 # `fumegrid-aggregator new-token --name NAME --role ROLE [--department ID]`.
#                                 # Without tokens every /api/v1 request gets 401.
anonymous = "none"                # none: a token is required | viewer: read-only without one (closed networks only)
max_connections = 512             # HTTP connections served at once; more wait in the accept queue
header_timeout_ms = 10000         # a client must send a request's headers within this (slowloris)
request_timeout_ms = 30000        # body read + answer within this, else 408
max_body_bytes = 65536            # larger request bodies get 413
# public_url = "https://fume.district.example"  # where the API is reached from outside: picture
#                                 # links in webhooks and Open311 media_url are absolute under it
#                                 # (default: none, they are API paths /api/v1/evidence/...)

[broker]
mode = "embedded"                 # embedded (rumqttd inside this process) | external
listen = "127.0.0.1:1883"         # embedded: MQTT 3.1.1 listener; 0.0.0.0:8883 with TLS to serve gateways
credentials_file = "broker-users.toml"  # embedded: required, see below
# tls_cert_file = "broker-cert.pem"   # embedded: PEM certificate chain; with tls_key_file the listener
# tls_key_file = "broker-key.pem"     #   speaks MQTT over TLS only (gateways set uplink.tls_ca_file)
max_payload_bytes = 1048576       # largest MQTT payload (a batch); rumqttd's own default is ~20 KB
# The embedded broker binds each client id to its account, and lets an account publish only to
# fumegrid/v1/{account}/up|status and subscribe only to fumegrid/v1/{account}/ack|cmd.
# mode = "external"               # e.g. mosquitto with the same rules as ACLs (docs/aggregator-config.md):
#                                 # `use_username_as_clientid true`, `pattern write fumegrid/v1/%u/up`,
#                                 # `pattern write fumegrid/v1/%u/status`, `pattern read fumegrid/v1/%u/ack`,
#                                 # `pattern read fumegrid/v1/%u/cmd`; the aggregator's user `topic readwrite fumegrid/#`
# host = "127.0.0.1"
# port = 1883
# username = "fumegrid-aggregator"
# password_file = "broker-password"   # first line is the password

[ingest]
# keys_file = "gateway-keys.toml" # more [[gateways]] entries, same format as below
group_max_items = 20000           # most items committed in one transaction before acking them all
max_items_per_batch = 10000       # a bigger batch is rejected (bad_seq)

[cases]
# catalogue = "catalogue.toml"    # case categories, departments, time limits, working calendar;
#                                 # default: the built-in one (print it with print-default-catalogue,
#                                 # copy and adapt it). Alarms open dispatch cases in it.
tick_interval_s = 30              # how often overdue/escalation timers and automatic verification are checked
contact_retention_days = 180      # citizens' contact details are erased this long after their case closed
# webhook_secrets_file = "webhook-secrets.toml"  # [[webhooks]] department, secret (>= 16 chars): the
#                                 # HMAC key of each department whose catalogue entry has a webhook_url

[evidence]
# dir = "evidence"                # pictures' bytes (content-addressed files through object_store);
#                                 # default: `evidence` beside the store file
keep_unlinked_days = 30           # pictures that belong to no case are deleted this long after arrival
max_upload_bytes = 8388608        # largest picture a department uploads to a case (JPEG or PNG)
snapshot_expiry_s = 60            # a gateway ignores a snapshot command older than this

[drones]
pass_distance_m = 150.0           # a drone this close to a site (with lat, lon) is passing it
pass_gap_s = 120                  # back within this after leaving: still the same pass (circling)
pass_close_after_s = 300          # a pass with no later point is judged this long after it
judge_interval_s = 5              # how often newly arrived drone positions are judged

[dji]
# docks_file = "dji-docks.toml"   # DJI Docks / DJI Pilot 2 (Cloud API): [[docks]] sn, aircraft = [sn, ...],
#                                 # username + password (or password_sha256) on the embedded broker;
#                                 # default: none (no DJI device is accepted)
flush_interval_s = 10             # aircraft positions are written to the store as tracks this often
# [dji.external]                  # also read the docks' osd/status from the customer's broker
# host = "mqtt.customer.example"
# port = 8883
# client_id = "fumegrid-dji-district-01"   # default fumegrid-dji-{aggregator id}
# username = "fumegrid"
# password_file = "dji-broker-password"    # first line is the password
# tls_ca_file = "customer-ca.pem"          # set to use TLS

# One entry per gateway: its id and the HMAC key it seals batches with (hex, >= 32 digits).
[[gateways]]
id = "gw-demo-01"
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
# site = "Dongcheng food street"  # optional: the site name cases from its alarms carry (default: the id)
# grid_cell = "DC-07-03"          # optional: city-management grid cell, for case statistics
# lat = 39.9289                   # optional: WGS 84 position of the site (both or neither),
# lon = 116.4160                  #   for the map and drone passes
# [[gateways.devices]]            # optional, per device: a name and a place of its own (a
# id = "bbq-grill"                #   restaurant on the street); its alarms' cases get the
# name = "Wang's BBQ"             #   drone passes over it, not over the street
# lat = 39.9291
# lon = 116.4168

# broker-users.toml (embedded broker accounts; mode 0600, owned by the service user):
#   [[users]]
#   username = "gw-demo-01"
#   password = "change-me-please"        # plaintext, or:
#   # password_sha256 = "<hex of sha256(password)>"
# Each account's name is also its client id and the gateway id in its topics. The aggregator's
# own ingest logs in to the broker's internal listener with a secret minted at every start.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("fumegrid-agg-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    #[test]
    fn default_config_is_valid() {
        let dir = tmpdir("default");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), DEFAULT_CONFIG))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.keys.len(), 1);
        assert_eq!(
            cfg.store_path,
            std::path::PathBuf::from("/var/lib/fumegrid/aggregator/fumegrid.sqlite3")
        );
        assert_eq!(cfg.broker.max_payload_bytes(), DEFAULT_MAX_PAYLOAD);
        assert!(
            !format!("{:?}", cfg).contains("change-me"),
            "no secret in Debug"
        );
    }

    #[test]
    fn a_public_url_is_an_http_base_without_credentials() {
        assert_eq!(
            public_url("https://fume.district.example/").as_deref(),
            Ok("https://fume.district.example")
        );
        assert_eq!(
            public_url("http://10.0.0.5:8080/fumegrid/").as_deref(),
            Ok("http://10.0.0.5:8080/fumegrid")
        );
        for bad in [
            "fume.district.example",
            "ftp://fume.district.example",
            "https://user:pw@fume.district.example",
            "https://fume.district.example/?a=1",
            "https://fume.district.example/#x",
            "",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
        let dir = tmpdir("public-url");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let text =
            DEFAULT_CONFIG.replacen("[api]\n", "[api]\npublic_url = \"ftp://x.example\"\n", 1);
        let err = Config::from_source(&Source::new(dir.join("agg.toml"), &text)).expect_err("bad");
        assert!(err.to_string().contains("api.public_url"), "{err}");
        let text = DEFAULT_CONFIG.replacen(
            "[api]\n",
            "[api]\npublic_url = \"https://fume.district.example/\"\n",
            1,
        );
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), &text))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            cfg.public_url.as_deref(),
            Some("https://fume.district.example")
        );
    }

    #[test]
    fn every_problem_is_reported_with_line_and_field() {
        let dir = tmpdir("bad");
        std::fs::write(
            dir.join("keys.toml"),
            "[[gateways]]\nid = \"gw-2\"\nkey = \"xyz\"\n",
        )
        .expect("write");
        let text = "[aggregator]\nid = \"A B\"\n[api]\nlisten = \"nope\"\n[broker]\nmode = \"embedded\"\nhost = \"x\"\n\
                    [ingest]\nkeys_file = \"keys.toml\"\n[[gateways]]\nid = \"gw-1\"\nkey = \"abcd\"\n[bogus]\n";
        let err = Config::from_source(&Source::new(dir.join("agg.toml"), text)).expect_err("bad");
        let s = err.to_string();
        for want in [
            "agg.toml:2:1: aggregator.id",
            "agg.toml:4:1: api.listen",
            "agg.toml:7:1: broker.host",
            "credentials_file",
            "agg.toml:12:1: gateways[0].key",
            "keys.toml:3:1: gateways[0].key",
            "bogus: unknown",
        ] {
            assert!(s.contains(want), "{want} missing in:\n{s}");
        }
    }

    #[test]
    fn devices_get_places_of_their_own_and_every_problem_is_named() {
        let dir = tmpdir("devices");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let good = format!(
            "{DEFAULT_CONFIG}\n[[gateways.devices]]\nid = \"bbq-grill\"\nname = \"老王烧烤\"\n\
             lat = 30.65535\nlon = 104.08095\n[[gateways.devices]]\nid = \"noodle-house\"\n\
             name = \"Noodles\"\n"
        );
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), &good))
            .unwrap_or_else(|d| panic!("{d}"));
        let site = &cfg.sites["gw-demo-01"];
        assert_eq!(site.position, None);
        let grill = &site.devices["bbq-grill"];
        assert_eq!(grill.name.as_deref(), Some("老王烧烤"));
        assert_eq!(
            grill.position,
            Some((
                crate::cases::model::Coord(30.65535),
                crate::cases::model::Coord(104.08095)
            ))
        );
        assert_eq!(site.devices["noodle-house"].position, None);
        let places = crate::cases::aerial::places(&cfg.sites);
        assert_eq!(places.len(), 1, "{places:?}");
        assert_eq!(places[0].key(), "gw-demo-01/bbq-grill");

        // Line of the DEFAULT_CONFIG's end: the entries added below start after it.
        let base = DEFAULT_CONFIG.lines().count() + 1;
        let bad = format!(
            "{DEFAULT_CONFIG}\n[[gateways.devices]]\nid = \"Grill\"\nlat = 95.0\nlon = 104.0\n\
             [[gateways.devices]]\nid = \"hotpot\"\nlat = 30.6\n[[gateways.devices]]\n\
             id = \"hotpot\"\nname = \"\"\n"
        );
        let err = Config::from_source(&Source::new(dir.join("agg.toml"), &bad)).expect_err("bad");
        let s = err.to_string();
        for want in [
            format!("agg.toml:{}:1: gateways[0].devices[0].id", base + 2),
            format!("agg.toml:{}:1: gateways[0].devices[0].lat", base + 3),
            "gateways[0].devices[1].lon: missing".to_string(),
            "gateways[0].devices[2].id: device `hotpot` is listed twice".to_string(),
            "gateways[0].devices[2].name: must be 1 to 64".to_string(),
        ] {
            assert!(s.contains(&want), "{want} missing in:\n{s}");
        }
        let typo =
            format!("{DEFAULT_CONFIG}\n[[gateways.devices]]\nid = \"grill\"\nlatitude = 3\n");
        let err = Config::from_source(&Source::new(dir.join("agg.toml"), &typo)).expect_err("bad");
        assert!(
            err.to_string()
                .contains("gateways[0].devices[0].latitude: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn dji_docks_are_registered_with_their_logins_and_every_problem_named() {
        let dir = tmpdir("dji");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("docks.toml"),
            "[[docks]]\nsn = \"DOCK1\"\naircraft = [\"AIR1\"]\nusername = \"dock-1\"\npassword = \"dock-1-password\"\n",
        )
        .expect("write");
        let with = |dji: &str| DEFAULT_CONFIG.replacen("[dji]\n", &format!("[dji]\n{dji}"), 1);
        let cfg = Config::from_source(&Source::new(
            dir.join("agg.toml"),
            with("docks_file = \"docks.toml\"\n"),
        ))
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.dji.registry.dock_of("AIR1"), Some("DOCK1"));
        let (secret, scope) = cfg.dji.accounts.get("dock-1").expect("login");
        assert_eq!(secret, &Secret::Plain("dock-1-password".into()));
        assert_eq!(scope, &["DOCK1", "AIR1"]);
        assert!(cfg.dji.external.is_none());

        std::fs::write(
            dir.join("docks.toml"),
            "[[docks]]\nsn = \"DOCK1\"\naircraft = [\"AIR1\", \"bad-sn\"]\nusername = \"gw-demo-01\"\npassword = \"dock-1-password\"\n\
             [[docks]]\nsn = \"AIR1\"\n[[docks]]\nsn = \"DOCK3\"\nusername = \"fumegrid-x\"\npassword = \"dock-3-password\"\n",
        )
        .expect("write");
        let err = Config::from_source(&Source::new(
            dir.join("agg.toml"),
            with("docks_file = \"docks.toml\"\n")
                .replace("flush_interval_s = 10", "flush_interval_s = 0"),
        ))
        .expect_err("bad");
        let s = err.to_string();
        for want in [
            "dji.flush_interval_s",
            "docks.toml:3:21: docks[0].aircraft[1]",
            "docks[0].username: `gw-demo-01` is already a broker account",
            "docks[1].sn: serial number `AIR1` is listed twice",
            "docks[1].username: no login and no [dji.external]",
            "docks[2].username: must not be empty nor start with `fumegrid-`",
        ] {
            assert!(s.contains(want), "{want} missing in:\n{s}");
        }
        std::fs::write(dir.join("dji-pass"), "secret\n").expect("write");
        std::fs::write(dir.join("docks.toml"), "[[docks]]\nsn = \"DOCK1\"\n").expect("write");
        let cfg = Config::from_source(&Source::new(
            dir.join("agg.toml"),
            with(
                "docks_file = \"docks.toml\"\n[dji.external]\nhost = \"127.0.0.1\"\nport = 1884\n\
                 username = \"agg\"\npassword_file = \"dji-pass\"\n",
            )
            .replace("flush_interval_s = 10", "# flush_interval_s = 10"),
        ))
        .unwrap_or_else(|d| panic!("{d}"));
        let ext = cfg.dji.external.expect("external");
        assert_eq!(ext.client_id, "fumegrid-dji-district-01");
        assert_eq!(ext.credentials, Some(("agg".into(), "secret".into())));
        assert!(cfg.dji.registry.is_dock("DOCK1"));
    }

    #[test]
    fn evidence_defaults_sit_beside_the_store_and_bad_values_are_named() {
        let dir = tmpdir("evidence");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), DEFAULT_CONFIG))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            cfg.evidence_dir,
            PathBuf::from("/var/lib/fumegrid/aggregator/evidence")
        );
        assert_eq!(
            cfg.evidence.keep_unlinked,
            std::time::Duration::from_secs(30 * 86_400)
        );
        assert_eq!(cfg.evidence.max_upload_bytes, 8 * 1024 * 1024);
        assert_eq!(cfg.evidence.caption_offset_min, Some(480));
        let with = DEFAULT_CONFIG.replace("# dir = \"evidence\"", "dir = \"pics\"");
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), with))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.evidence_dir, dir.join("pics"));
        let bad = DEFAULT_CONFIG
            .replace("keep_unlinked_days = 30", "keep_unlinked_days = 0")
            .replace("max_upload_bytes = 8388608", "max_upload_bytes = 10")
            .replace("snapshot_expiry_s = 60", "snapshot_expiry_s = 1");
        let s = Config::from_source(&Source::new(dir.join("agg.toml"), bad))
            .expect_err("bad")
            .to_string();
        for want in [
            "evidence.keep_unlinked_days",
            "evidence.max_upload_bytes",
            "evidence.snapshot_expiry_s",
        ] {
            assert!(s.contains(want), "{want} missing in:\n{s}");
        }
        let unknown = DEFAULT_CONFIG.replace("[evidence]", "[evidence]\nbucket = \"s3\"");
        let s = Config::from_source(&Source::new(dir.join("agg.toml"), unknown))
            .expect_err("unknown key")
            .to_string();
        assert!(s.contains("bucket"), "{s}");
    }

    #[test]
    fn retention_defaults_and_a_shorter_coarser_level_is_refused_by_name() {
        let dir = tmpdir("retention");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), DEFAULT_CONFIG))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.retention, crate::sweeper::Settings::default());
        let without: String = DEFAULT_CONFIG
            .lines()
            .filter(|l| !l.starts_with("[retention]"))
            .filter(|l| {
                ![
                    "raw_days",
                    "minute_days",
                    "other_periods_days",
                    "ten_minute_days",
                ]
                .iter()
                .chain(&["hourly_days", "daily_days", "case_margin_s", "sweep_"])
                .any(|k| l.starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!without.contains("minute_days"));
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), without))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            cfg.retention,
            crate::sweeper::Settings::default(),
            "no section"
        );
        let bad = DEFAULT_CONFIG
            .replace("minute_days = 90 ", "minute_days = 20 ")
            .replace("hourly_days = 3650", "hourly_days = 100")
            .replace("sweep_interval_s = 3600", "sweep_interval_s = 5");
        let s = Config::from_source(&Source::new(dir.join("agg.toml"), bad))
            .expect_err("bad")
            .to_string();
        for want in [
            "retention.minute_days: 20 days is shorter than `raw_days` (30 days)",
            "retention.hourly_days: 100 days is shorter than `ten_minute_days` (3650 days)",
            "retention.sweep_interval_s",
        ] {
            assert!(s.contains(want), "{want} missing in:\n{s}");
        }
        let unknown = DEFAULT_CONFIG.replace("[retention]", "[retention]\nforever = true");
        let s = Config::from_source(&Source::new(dir.join("agg.toml"), unknown))
            .expect_err("unknown key")
            .to_string();
        assert!(s.contains("forever"), "{s}");
    }

    #[test]
    fn cases_catalogue_defaults_to_builtin_and_a_bad_file_is_reported_with_its_lines() {
        let dir = tmpdir("catalogue");
        std::fs::write(
            dir.join("broker-users.toml"),
            "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
        )
        .expect("write");
        let cfg = Config::from_source(&Source::new(dir.join("agg.toml"), DEFAULT_CONFIG))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.catalogue_source, "built-in");
        assert_eq!(
            *cfg.catalogue,
            Catalogue::builtin().unwrap_or_else(|d| panic!("{d}"))
        );
        std::fs::write(
            dir.join("cat.toml"),
            "[[departments]]\nid = \"epb\"\nname = \"EPB\"\n\n[[categories]]\nid = \"x\"\n\
             name = \"X\"\ndepartment = \"ghost\"\nclosing_standard = \"done\"\n",
        )
        .expect("write");
        let with = DEFAULT_CONFIG.replace(
            "# catalogue = \"catalogue.toml\"",
            "catalogue = \"cat.toml\"",
        );
        let err = Config::from_source(&Source::new(dir.join("agg.toml"), with)).expect_err("bad");
        let s = err.to_string();
        assert!(s.contains("cat.toml:8:1: categories[0].department"), "{s}");
        let err = Config::from_source(&Source::new(
            dir.join("agg.toml"),
            DEFAULT_CONFIG.replace("[cases]", "[cases]\nbogus = 1"),
        ))
        .expect_err("unknown key");
        assert!(err.to_string().contains("cases.bogus"), "{err}");
    }
}
