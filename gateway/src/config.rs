//! The gateway config file: who this gateway is, its RS-485 buses and the devices on them.
//!
//! Parsing is strict and every problem is reported at once with file, line and field
//! ([`GatewayConfig::load`]); every profile a device names is loaded and validated too, so
//! `fumegrid-gateway validate` answers "will this start?" completely.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fumegrid_common::diag::{Diagnostics, Doc, Source};
use fumegrid_common::profile::Profile;
use fumegrid_common::{id, keys};
// The serial line is the link's; the config only names it.
pub use crate::source::modbus::link::{Line, Parity};
use serde::Deserialize;

pub use crate::source::camera::{CameraSource, CameraSpec};

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Gateway id, unique in the district; lowercase letters, digits, `-` and `_`. Required.
    pub id: String,
    /// Where the gateway is installed (street, block). Default: empty.
    #[serde(default)]
    pub site: String,
    /// Default poll interval for devices that do not set their own. Default 1000 ms.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Consecutive failed polls after which a device's circuit breaker opens. Default 3.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// While a breaker is open, probe the device this often. Default 10000 ms.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_probe_interval_ms() -> u64 {
    10_000
}

/// `[outbox]`: where readings wait until the aggregator has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// Folder of the sled store. Default `/var/lib/fumegrid/gateway/outbox` (systemd's
    /// `StateDirectory`); relative paths are relative to the config file.
    #[serde(default = "default_outbox_path")]
    pub path: PathBuf,
    /// Upper bound on stored items. When full, the oldest readings are dropped first, alarms and
    /// events last; every drop is reported upstream as a gap. Default 256 MiB.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: u64,
    /// Readings reach the disk at least this often (alarms and events at once); readings are
    /// published only once on disk. 0 flushes every append: nothing lost even to kill -9, at
    /// about 0.6 ms of fsync per poll. Default 1000 ms.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Upper bound on stored camera pictures, apart from `max_bytes`: pictures never push out
    /// alarms or readings, and readings never push out pictures. When full, whole pictures are
    /// dropped, those of no open alarm first, oldest first; reported upstream as a gap. At
    /// least 1 MiB and room for the largest picture a camera may take. Default 64 MiB.
    #[serde(default = "default_evidence_max_bytes")]
    pub evidence_max_bytes: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            path: default_outbox_path(),
            max_bytes: default_outbox_max_bytes(),
            flush_interval_ms: default_flush_interval_ms(),
            evidence_max_bytes: default_evidence_max_bytes(),
        }
    }
}

fn default_outbox_path() -> PathBuf {
    PathBuf::from("/var/lib/fumegrid/gateway/outbox")
}
fn default_outbox_max_bytes() -> u64 {
    256 << 20
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_evidence_max_bytes() -> u64 {
    64 << 20
}

/// `[metrics]`: the Prometheus endpoint (docs/metrics.md). Off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the HTTP listener that serves the metrics (any path, `/metrics` by
    /// convention), e.g. `"127.0.0.1:9464"`. Default: none, no listener and nothing counted.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow a `listen` address that is not loopback. The endpoint has no authentication and
    /// names every device, so other hosts reach it only when this says so (and a firewall or a
    /// VPN should). Default false.
    #[serde(default)]
    pub allow_remote: bool,
}

/// `[uplink]`: the MQTT broker the aggregator listens on. Without it, items stay in the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Broker host name or address. Required.
    pub host: String,
    /// Default 1883 (8883 is usual with TLS).
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id. Default: the gateway id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Broker credentials. Default: none (the embedded broker requires them).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (one line), readable by the service only.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the broker; set it to use TLS. Default: plain TCP.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// File holding this gateway's HMAC key (hex, at least 32 digits), shared with the
    /// aggregator. Required.
    pub key_file: PathBuf,
    /// MQTT keep-alive. Short, so a dead 4G link is noticed quickly. Default 15 s.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Items per published batch. Default 500.
    #[serde(default = "default_batch_max_items")]
    pub batch_max_items: usize,
    /// Bytes per published batch (its JSON, envelope and seal included), so that one MQTT
    /// publish stays under the broker's packet limit: keep it below the aggregator's
    /// `max_payload_bytes` (embedded broker default 1 MiB) or your broker's `max_packet_size`.
    /// A picture part (about 66 KiB) always fits. 131072..=16777216. Default 262144 (256 KiB).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A batch not acked by the aggregator within this time is sent again. Default 30 s.
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
    /// After an outage, send old items at most this fast, so live ones keep flowing.
    /// Default 5000 items/s.
    #[serde(default = "default_backlog_items_per_s")]
    pub backlog_items_per_s: f64,
    /// Publish batches gzip-compressed (sealed, then compressed; docs/wire.md). `false` sends
    /// plain JSON, byte for byte the v1 wire, for an aggregator older than issue 14. Default true.
    #[serde(default = "default_compress")]
    pub compress: bool,
}

fn default_compress() -> bool {
    true
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive_s() -> u64 {
    15
}
fn default_batch_max_items() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    256 * 1024
}
fn default_ack_timeout_s() -> u64 {
    30
}
fn default_backlog_items_per_s() -> f64 {
    5000.0
}

/// The uplink after validation, with secrets read from their files.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub section: UplinkSection,
    pub password: Option<String>,
    pub key: Vec<u8>,
}

/// `[[buses]]`: one RS-485 port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    /// Name devices use to refer to this bus. Required.
    pub name: String,
    /// Serial device, e.g. `/dev/ttyUSB0` or `/dev/serial/by-path/...`. Required.
    pub path: PathBuf,
    /// Default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `even`, `odd` or `none`. Default `even` (the Modbus RTU default).
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8. Default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// After a timeout, stay off the line this long so a late reply lands (and is discarded)
    /// before the next request. Default: twice the response timeout of the request that timed out.
    #[serde(default)]
    pub guard_ms: Option<u64>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// `[[devices]]`: one installed monitor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Device id, unique on this gateway (e.g. the restaurant's licence number). Required.
    pub id: String,
    /// Profile file, relative to this config file's folder. Required.
    pub profile: PathBuf,
    /// Name of the `[[buses]]` entry the device hangs on (Modbus RTU). Either this or `tcp`.
    #[serde(default)]
    pub bus: Option<String>,
    /// `host:port` of a Modbus TCP device. Either this or `bus`.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Modbus slave (unit) id, 1..=247. Default 1.
    #[serde(default = "default_slave")]
    pub slave: u8,
    /// Poll interval. Default: `[gateway] poll_interval_ms`.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Free text for people (restaurant name, location). Default: empty.
    #[serde(default)]
    pub name: String,
    /// Alarm-rule parameters for this device, over the site's `[rules]` (same keys).
    #[serde(default)]
    pub rules: crate::rules::config::RulesOverrides,
    /// What goes up for this device, over the site's `[report]` (same keys). Default: the
    /// site's.
    #[serde(default)]
    pub report: crate::report::ReportOverrides,
}

fn default_slave() -> u8 {
    1
}

/// A bus after validation.
#[derive(Debug, Clone)]
pub struct Bus {
    pub name: String,
    pub path: PathBuf,
    pub line: Line,
    pub guard_ms: Option<u64>,
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Index into [`GatewayConfig::buses`].
    Rtu(usize),
    /// `host:port` as written (resolved when connecting).
    Tcp(String),
}

/// A device after validation, with its profile loaded.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub profile_path: PathBuf,
    pub profile: Arc<Profile>,
    pub transport: Transport,
    pub slave: u8,
    pub poll_interval_ms: u64,
    /// Alarm rules, resolved: device overrides, then `[rules]`, then defaults.
    pub rules: crate::rules::config::RulesConfig,
    /// Report strategy, resolved: device, then `[report]`, then defaults (60-s periods).
    pub report: crate::report::ReportConfig,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub file: PathBuf,
    pub gateway: GatewaySection,
    pub outbox: OutboxSection,
    pub uplink: Option<Uplink>,
    pub metrics: MetricsSection,
    pub buses: Vec<Bus>,
    pub devices: Vec<Device>,
    /// `[[cameras]]`, validated (see [`check_cameras`]).
    pub cameras: Vec<CameraSpec>,
    /// `[[drones]]`, validated (see [`check_drones`]).
    pub drones: Vec<crate::source::mavlink::DroneSpec>,
}

impl GatewayConfig {
    /// Reads and validates a config file and every profile it names.
    pub fn load(path: &Path) -> Result<GatewayConfig, Diagnostics> {
        GatewayConfig::from_source(&Source::read(path))
    }

    pub fn from_source(src: &Source) -> Result<GatewayConfig, Diagnostics> {
        let mut doc = Doc::new(src);
        if !doc.diags.is_empty() {
            return Err(doc.diags);
        }
        doc.deny_unknown_keys(&[
            "gateway", "outbox", "uplink", "metrics", "rules", "report", "buses", "devices",
            "cameras", "drones",
        ]);
        let gateway: Option<GatewaySection> = doc.section("gateway", true);
        let base = src.file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut outbox: OutboxSection = doc.section("outbox", false).unwrap_or_default();
        outbox.path = base.join(&outbox.path);
        if outbox.max_bytes < 1 << 20 {
            doc.error("outbox.max_bytes", "must be at least 1 MiB (1048576)");
        }
        if outbox.evidence_max_bytes < 1 << 20 {
            doc.error(
                "outbox.evidence_max_bytes",
                "must be at least 1 MiB (1048576)",
            );
        }
        if outbox.flush_interval_ms > 60_000 {
            doc.error(
                "outbox.flush_interval_ms",
                "must be at most 60000 ms (0 = flush every append)",
            );
        }
        let uplink = doc
            .section::<UplinkSection>("uplink", false)
            .and_then(|u| check_uplink(&mut doc, &base, u));
        let metrics: MetricsSection = doc.section("metrics", false).unwrap_or_default();
        if let Some(addr) = metrics.listen
            && !addr.ip().is_loopback()
            && !metrics.allow_remote
        {
            doc.error(
                "metrics.listen",
                format!(
                    "{addr} is reachable from other hosts, and the endpoint has no \
                     authentication: use 127.0.0.1 (scrape through an SSH tunnel or a local \
                     agent), or set `allow_remote = true` if a firewall or VPN guards it"
                ),
            );
        }
        let site_rules: crate::rules::config::RulesOverrides =
            doc.section("rules", false).unwrap_or_default();
        crate::rules::config::check(&site_rules, &mut doc, "rules");
        let site_resolved = crate::rules::config::resolve(&site_rules, &Default::default());
        crate::rules::config::check_resolved(&site_resolved, &mut doc, "rules");
        let site_report: crate::report::ReportOverrides =
            doc.section("report", false).unwrap_or_default();
        crate::report::config::check(&site_report, &mut doc, "report");
        let buses: Vec<(usize, BusSection)> = doc.array("buses");
        let devices: Vec<(usize, DeviceSection)> = doc.array("devices");
        let cameras: Vec<(usize, CameraRaw)> = doc.array("cameras");
        let drones: Vec<(usize, DroneRaw)> = doc.array("drones");

        if let Some(g) = &gateway {
            id::check(&mut doc, "gateway.id", &g.id, id::IN_TOPICS);
            if g.poll_interval_ms == 0 {
                doc.error("gateway.poll_interval_ms", "must be at least 1 ms");
            }
            if g.breaker_failures == 0 {
                doc.error("gateway.breaker_failures", "must be at least 1");
            }
            if g.probe_interval_ms < 100 {
                doc.error("gateway.probe_interval_ms", "must be at least 100 ms");
            }
        }

        let mut bus_index: HashMap<String, usize> = HashMap::new();
        let mut good_buses = Vec::new();
        let mut seen_paths: HashMap<PathBuf, String> = HashMap::new();
        // Buses with errors of their own: devices on them are not reported again.
        let mut broken_buses: Vec<String> = Vec::new();
        for (i, b) in buses {
            let at = |f: &str| format!("buses[{i}].{f}");
            let mut ok = true;
            if b.name.trim().is_empty() {
                doc.error(&at("name"), "must not be empty");
                ok = false;
            } else if bus_index.contains_key(&b.name) {
                doc.error(&at("name"), format!("bus `{}` is defined twice", b.name));
                ok = false;
            }
            if let Some(other) = seen_paths.get(&b.path) {
                doc.error(
                    &at("path"),
                    format!(
                        "{} is already used by bus `{other}`; one port, one bus",
                        b.path.display()
                    ),
                );
                ok = false;
            }
            if !(300..=921_600).contains(&b.baud) {
                doc.error(
                    &at("baud"),
                    format!("{} is not a usable baud rate (300..=921600)", b.baud),
                );
                ok = false;
            }
            if !(7..=8).contains(&b.data_bits) {
                doc.error(&at("data_bits"), "must be 7 or 8");
                ok = false;
            }
            if !(1..=2).contains(&b.stop_bits) {
                doc.error(&at("stop_bits"), "must be 1 or 2");
                ok = false;
            }
            seen_paths.insert(b.path.clone(), b.name.clone());
            if !ok {
                broken_buses.push(b.name.clone());
            } else {
                bus_index.insert(b.name.clone(), good_buses.len());
                good_buses.push(Bus {
                    name: b.name,
                    path: b.path,
                    line: Line {
                        baud: b.baud,
                        parity: b.parity,
                        data_bits: b.data_bits,
                        stop_bits: b.stop_bits,
                    },
                    guard_ms: b.guard_ms,
                });
            }
        }

        let default_poll = gateway.as_ref().map(|g| g.poll_interval_ms).unwrap_or(1000);
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut slaves: BTreeMap<Transport, BTreeMap<u8, String>> = BTreeMap::new();
        let mut profiles: HashMap<PathBuf, Result<Arc<Profile>, ()>> = HashMap::new();
        let mut good_devices = Vec::new();
        for (i, d) in devices {
            let at = |f: &str| format!("devices[{i}].{f}");
            let mut ok = true;
            id::check(&mut doc, &at("id"), &d.id, id::IN_TOPICS);
            if let Some(first) = ids.insert(d.id.clone(), i) {
                doc.error(
                    &at("id"),
                    format!("device `{}` is already defined as devices[{first}]", d.id),
                );
                ok = false;
            }
            if !(1..=247).contains(&d.slave) {
                doc.error(
                    &at("slave"),
                    format!("{} is not a Modbus slave id (1..=247)", d.slave),
                );
                ok = false;
            }
            if d.poll_interval_ms == Some(0) {
                doc.error(&at("poll_interval_ms"), "must be at least 1 ms");
                ok = false;
            }
            let transport = match (&d.bus, &d.tcp) {
                (Some(_), Some(_)) => {
                    doc.error(
                        &at("tcp"),
                        "set either `bus` (Modbus RTU) or `tcp` (Modbus TCP), not both",
                    );
                    None
                }
                (None, None) => {
                    doc.error(
                        &at("id"),
                        "no transport: set `bus = \"<bus name>\"` or `tcp = \"host:port\"`",
                    );
                    None
                }
                (Some(bus), None) => match bus_index.get(bus) {
                    Some(&b) => Some(Transport::Rtu(b)),
                    None if broken_buses.contains(bus) => None,
                    None => {
                        let known: Vec<&str> = good_buses.iter().map(|b| b.name.as_str()).collect();
                        doc.error(
                            &at("bus"),
                            format!(
                                "no bus named `{bus}` (defined: {})",
                                if known.is_empty() {
                                    "none".into()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                        None
                    }
                },
                (None, Some(addr)) => {
                    if valid_host_port(addr) {
                        Some(Transport::Tcp(addr.clone()))
                    } else {
                        doc.error(
                            &at("tcp"),
                            format!("`{addr}` is not host:port (e.g. 192.168.1.50:502)"),
                        );
                        None
                    }
                }
            };
            if let Some(t) = &transport {
                let on = slaves.entry(t.clone()).or_default();
                if let Some(other) = on.insert(d.slave, d.id.clone()) {
                    doc.error(
                        &at("slave"),
                        format!(
                            "slave id {} is already used by device `{other}` on the same bus",
                            d.slave
                        ),
                    );
                    ok = false;
                }
            } else {
                ok = false;
            }
            let profile_path = base.join(&d.profile);
            let profile = profiles
                .entry(profile_path.clone())
                .or_insert_with(|| match Profile::load(&profile_path) {
                    Ok(p) => Ok(Arc::new(p)),
                    Err(diags) => {
                        doc.diags.extend(diags);
                        Err(())
                    }
                })
                .clone();
            let Ok(profile) = profile else {
                doc.error(
                    &at("profile"),
                    format!(
                        "profile {} is not usable (see above)",
                        profile_path.display()
                    ),
                );
                continue;
            };
            crate::rules::config::check(&d.rules, &mut doc, &at("rules"));
            let rules = crate::rules::config::resolve(&site_rules, &d.rules);
            if d.rules != crate::rules::config::RulesOverrides::default() {
                crate::rules::config::check_resolved(&rules, &mut doc, &at("rules"));
            }
            crate::report::config::check(&d.report, &mut doc, &at("report"));
            let report = crate::report::config::resolve(&site_report, &d.report);
            if let (true, Some(t)) = (ok, transport) {
                good_devices.push(Device {
                    id: d.id,
                    name: d.name,
                    profile_path,
                    profile,
                    transport: t,
                    slave: d.slave,
                    poll_interval_ms: d.poll_interval_ms.unwrap_or(default_poll),
                    rules,
                    report,
                });
            }
        }
        let cameras = check_cameras(&mut doc, cameras, &ids, outbox.evidence_max_bytes);
        let drones = check_drones(&mut doc, drones);
        if good_devices.is_empty() && drones.is_empty() && doc.diags.is_empty() {
            doc.error(
                "devices",
                "no [[devices]] and no [[drones]]: a gateway with nothing to read is surely a mistake",
            );
        }
        let diags = doc.diags;
        match gateway {
            Some(gateway) if diags.is_empty() => Ok(GatewayConfig {
                file: src.file.clone(),
                gateway,
                outbox,
                uplink,
                metrics,
                buses: good_buses,
                devices: good_devices,
                cameras,
                drones,
            }),
            _ => Err(diags),
        }
    }
}

fn check_uplink(doc: &mut Doc<'_>, base: &Path, mut u: UplinkSection) -> Option<Uplink> {
    let mut ok = true;
    if u.host.trim().is_empty() {
        doc.error("uplink.host", "must not be empty");
        ok = false;
    }
    if !(5..=600).contains(&u.keep_alive_s) {
        doc.error("uplink.keep_alive_s", "must be between 5 and 600 s");
        ok = false;
    }
    // ~150 bytes per reading: 5000 keeps a batch under the aggregator's default 1 MiB payload.
    if !(1..=5_000).contains(&u.batch_max_items) {
        doc.error(
            "uplink.batch_max_items",
            "must be between 1 and 5000 (a batch must fit the broker's payload limit)",
        );
        ok = false;
    }
    if !(128 * 1024..=16 << 20).contains(&u.batch_max_bytes) {
        doc.error(
            "uplink.batch_max_bytes",
            "must be between 131072 (a picture part must fit) and 16777216 (16 MiB)",
        );
        ok = false;
    }
    if u.ack_timeout_s == 0 {
        doc.error("uplink.ack_timeout_s", "must be at least 1 s");
        ok = false;
    }
    if u.backlog_items_per_s.is_nan() || u.backlog_items_per_s < 1.0 {
        doc.error("uplink.backlog_items_per_s", "must be at least 1");
        ok = false;
    }
    u.key_file = base.join(&u.key_file);
    let key = match std::fs::read_to_string(&u.key_file) {
        Ok(text) => match keys::parse_key(&text) {
            Ok(k) => Some(k),
            Err(e) => {
                doc.error("uplink.key_file", format!("{}: {e}", u.key_file.display()));
                None
            }
        },
        Err(e) => {
            doc.error(
                "uplink.key_file",
                format!("cannot read {}: {e}", u.key_file.display()),
            );
            None
        }
    };
    let mut password = None;
    if let Some(pf) = &u.password_file {
        let pf = base.join(pf);
        match std::fs::read_to_string(&pf) {
            Ok(p) => password = Some(p.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => {
                doc.error(
                    "uplink.password_file",
                    format!("cannot read {}: {e}", pf.display()),
                );
                ok = false;
            }
        }
        u.password_file = Some(pf);
    }
    if u.username.is_some() != u.password_file.is_some() {
        doc.error(
            "uplink.username",
            "set both `username` and `password_file`, or neither",
        );
        ok = false;
    }
    if let Some(ca) = &u.tls_ca_file {
        let ca = base.join(ca);
        if let Err(e) = std::fs::metadata(&ca) {
            doc.error(
                "uplink.tls_ca_file",
                format!("cannot read {}: {e}", ca.display()),
            );
            ok = false;
        }
        u.tls_ca_file = Some(ca);
    }
    match (ok, key) {
        (true, Some(key)) => Some(Uplink {
            section: u,
            password,
            key,
        }),
        _ => None,
    }
}

/// What one picture of `max_bytes` costs the outbox's evidence budget: base64 (4/3), and each
/// 48 KiB part's record and metadata (4 KiB: room for the readings of a few devices).
pub fn evidence_cost(max_bytes: u64) -> u64 {
    let part = fumegrid_common::wire::EVIDENCE_PART_BYTES as u64;
    max_bytes.div_ceil(3) * 4 + max_bytes.div_ceil(part) * 4096
}

/// `[[cameras]]` as written: [`CameraSpec`]'s keys with the source as three optional keys, so
/// that an unknown key, a missing source and two sources are each reported at their own line
/// (serde's `flatten`, which `CameraSpec` uses for its source, loses the key's place and
/// says "no variant of enum found in flattened data"). Defaults as in `CameraSpec` (a test
/// checks that they agree).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraRaw {
    /// Camera id, unique on this gateway. Required.
    id: String,
    /// The `[[devices]]` it watches. Required, at least one.
    devices: Vec<String>,
    /// RTSP stream URL. Exactly one of `rtsp`, `snapshot_url`, `onvif`.
    #[serde(default)]
    rtsp: Option<String>,
    /// HTTP snapshot URL. Exactly one of `rtsp`, `snapshot_url`, `onvif`.
    #[serde(default)]
    snapshot_url: Option<String>,
    /// ONVIF device-service address. Exactly one of `rtsp`, `snapshot_url`, `onvif`.
    #[serde(default)]
    onvif: Option<String>,
    /// Default: none.
    #[serde(default)]
    user: Option<String>,
    /// Default: none.
    #[serde(default)]
    password: Option<String>,
    /// Default 10000.
    #[serde(default = "camera_default_timeout_ms")]
    timeout_ms: u64,
    /// Default 4 MiB.
    #[serde(default = "camera_default_max_bytes")]
    max_bytes: u64,
    /// Default 600.
    #[serde(default = "camera_default_update_every_s")]
    update_every_s: u64,
    /// Default: none (no audit pictures).
    #[serde(default)]
    schedule_every_s: Option<u64>,
}

fn camera_default_timeout_ms() -> u64 {
    10_000
}
fn camera_default_max_bytes() -> u64 {
    4 * 1024 * 1024
}
fn camera_default_update_every_s() -> u64 {
    600
}

/// `[[cameras]]`: ids, bound devices, exactly one source, bounds and triggers; every problem
/// reported at its line. Returns the good ones.
fn check_cameras(
    doc: &mut Doc<'_>,
    cameras: Vec<(usize, CameraRaw)>,
    devices: &HashMap<String, usize>,
    evidence_max_bytes: u64,
) -> Vec<CameraSpec> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut good = Vec::new();
    for (i, c) in cameras {
        let at = |f: &str| format!("cameras[{i}].{f}");
        let mut ok = id::check(doc, &at("id"), &c.id, "");
        let sources: Vec<(&str, CameraSource)> = [
            ("rtsp", c.rtsp.clone().map(CameraSource::Rtsp)),
            (
                "snapshot_url",
                c.snapshot_url.clone().map(CameraSource::SnapshotUrl),
            ),
            ("onvif", c.onvif.clone().map(CameraSource::Onvif)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let source = match sources.as_slice() {
            [(_, s)] => Some(s.clone()),
            [] => {
                doc.error(
                    &at("id"),
                    "set one of `rtsp`, `snapshot_url` or `onvif` (where the picture comes from)",
                );
                None
            }
            [_, (second, _), ..] => {
                doc.error(
                    &at(second),
                    format!(
                        "set only one of `rtsp`, `snapshot_url` or `onvif`; this camera has {}",
                        sources
                            .iter()
                            .map(|(k, _)| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                None
            }
        };
        let Some(source) = source else { continue };
        if let Some(first) = seen.insert(c.id.clone(), i) {
            doc.error(
                &at("id"),
                format!("camera `{}` is already defined as cameras[{first}]", c.id),
            );
            ok = false;
        }
        if c.devices.is_empty() {
            doc.error(
                &at("devices"),
                "name at least one device this camera watches",
            );
            ok = false;
        }
        for (j, d) in c.devices.iter().enumerate() {
            if !devices.contains_key(d) {
                let mut known: Vec<&str> = devices.keys().map(String::as_str).collect();
                known.sort_unstable();
                doc.error(
                    &format!("cameras[{i}].devices[{j}]"),
                    format!(
                        "no device `{d}` (defined: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                ok = false;
            }
        }
        let (field, url, schemes): (&str, &str, &[&str]) = match &source {
            CameraSource::Rtsp(u) => ("rtsp", u, &["rtsp://"]),
            CameraSource::SnapshotUrl(u) => ("snapshot_url", u, &["http://", "https://"]),
            CameraSource::Onvif(u) => ("onvif", u, &["http://", "https://"]),
        };
        if !schemes.iter().any(|s| url.starts_with(s)) || url.len() <= 8 {
            doc.error(
                &at(field),
                format!("must be a URL starting with {}", schemes.join(" or ")),
            );
            ok = false;
        }
        let max = fumegrid_common::wire::EVIDENCE_MAX_BYTES;
        if c.max_bytes == 0 || c.max_bytes > max {
            doc.error(
                &at("max_bytes"),
                format!(
                    "must be between 1 and {max} (8 MiB, the largest picture the wire carries)"
                ),
            );
            ok = false;
        } else if evidence_cost(c.max_bytes) > evidence_max_bytes {
            doc.error(
                &at("max_bytes"),
                format!(
                    "a picture of {} bytes needs {} bytes of the outbox's evidence budget,                      more than `[outbox] evidence_max_bytes` = {evidence_max_bytes}",
                    c.max_bytes,
                    evidence_cost(c.max_bytes)
                ),
            );
            ok = false;
        }
        if !(100..=120_000).contains(&c.timeout_ms) {
            doc.error(&at("timeout_ms"), "must be between 100 and 120000 ms");
            ok = false;
        }
        if c.update_every_s < 10 {
            doc.error(&at("update_every_s"), "must be at least 10 s");
            ok = false;
        }
        if c.schedule_every_s.is_some_and(|s| s < 60) {
            doc.error(&at("schedule_every_s"), "must be at least 60 s");
            ok = false;
        }
        if c.user.is_some() != c.password.is_some() {
            doc.error(&at("user"), "set both `user` and `password`, or neither");
            ok = false;
        }
        if ok {
            good.push(CameraSpec {
                id: c.id,
                devices: c.devices,
                source,
                user: c.user,
                password: c.password,
                timeout_ms: c.timeout_ms,
                max_bytes: c.max_bytes,
                update_every_s: c.update_every_s,
                schedule_every_s: c.schedule_every_s,
            });
        }
    }
    good
}

/// `[[drones]]` as written (docs/gateway-config.md, docs/drones.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DroneRaw {
    /// Drone id, unique on this gateway: the `drone` of its tracks, photos and events. Required.
    id: String,
    /// Where its MAVLink comes from: `udpin:IP:PORT`, `tcpin:IP:PORT`, `tcpout:HOST:PORT` or
    /// `serial:PATH:BAUD`. Default `udpin:0.0.0.0:14550`; drones on one connection are told
    /// apart by `system_id`.
    #[serde(default = "drone_default_connection")]
    connection: String,
    /// The MAVLink system id of its autopilot (1..=255); traffic of other system ids on the
    /// connection is counted as foreign. Default 1.
    #[serde(default = "drone_default_system_id")]
    system_id: u8,
    /// How often it sends HEARTBEAT. Default 1000.
    #[serde(default = "drone_default_heartbeat_interval_ms")]
    heartbeat_interval_ms: u64,
    /// The link is lost (a `drone_link_lost` event) after this many heartbeats in a row did not
    /// come. Default 3.
    #[serde(default = "drone_default_missed_heartbeats")]
    missed_heartbeats: u32,
    /// Decimation: never two kept positions closer in time than this. Default 5000.
    #[serde(default = "drone_default_min_interval_ms")]
    min_interval_ms: u64,
    /// Decimation: after `min_interval_ms`, keep a position that moved this far. Default 20.
    #[serde(default = "drone_default_min_distance_m")]
    min_distance_m: f64,
    /// Decimation: ... or turned this much (degrees). Default 30.
    #[serde(default = "drone_default_turn_deg")]
    turn_deg: f64,
    /// Decimation: keep a position at least this often, even hovering. Default 60000.
    #[serde(default = "drone_default_max_interval_ms")]
    max_interval_ms: u64,
    /// Kept positions go up as one track item this often (the oldest point's age). Default 60.
    #[serde(default = "drone_default_item_every_s")]
    item_every_s: u64,
    // ---- Photos' bytes (docs/drones.md "Photos") ----
    /// Where each photo's bytes are fetched (HTTP GET) to go up as evidence with its
    /// `drone_photo` item: a URL template where `{file}` is CAMERA_IMAGE_CAPTURED's `file_url`
    /// without leading `/`, `{name}` its last path segment, `{index}` the image index
    /// (`"{file}"`: the drone names its photos by `http(s)://` URL;
    /// `"http://192.168.144.25/DCIM/{name}"`: the camera's web server). Default: none (photos
    /// go up as metadata only).
    #[serde(default)]
    photo_url: Option<String>,
    /// User name for `photo_url` (Basic or Digest, answered only when asked). Default: none.
    #[serde(default)]
    photo_user: Option<String>,
    /// Password for `photo_url`. Default: none.
    #[serde(default)]
    photo_password: Option<String>,
    /// Bound on one fetch, connect to last byte; the `drone_photo` item waits for it at most
    /// this long. Default 10000; 500..=120000.
    #[serde(default = "drone_default_photo_timeout_ms")]
    photo_timeout_ms: u64,
    /// Largest photo fetched, bytes; a larger one goes up as metadata only (`too_large`).
    /// Default and most 8 MiB (the wire's bound on a picture).
    #[serde(default = "drone_default_photo_max_bytes")]
    photo_max_bytes: u64,
}

fn drone_default_photo_timeout_ms() -> u64 {
    10_000
}
fn drone_default_photo_max_bytes() -> u64 {
    fumegrid_common::wire::EVIDENCE_MAX_BYTES
}

fn drone_default_connection() -> String {
    crate::source::mavlink::DEFAULT_CONNECTION.to_string()
}
fn drone_default_system_id() -> u8 {
    1
}
fn drone_default_heartbeat_interval_ms() -> u64 {
    1000
}
fn drone_default_missed_heartbeats() -> u32 {
    3
}
fn drone_default_min_interval_ms() -> u64 {
    crate::source::mavlink::Decimation::default().min_interval_ms
}
fn drone_default_min_distance_m() -> f64 {
    crate::source::mavlink::Decimation::default().min_distance_m
}
fn drone_default_turn_deg() -> f64 {
    crate::source::mavlink::Decimation::default().turn_deg
}
fn drone_default_max_interval_ms() -> u64 {
    crate::source::mavlink::Decimation::default().max_interval_ms
}
fn drone_default_item_every_s() -> u64 {
    crate::source::mavlink::Decimation::default().item_every_ms / 1000
}

/// `[[drones]]`: ids, connections, system ids (unique per connection), bounds; every problem
/// reported at its line. Returns the good ones.
fn check_drones(
    doc: &mut Doc<'_>,
    drones: Vec<(usize, DroneRaw)>,
) -> Vec<crate::source::mavlink::DroneSpec> {
    use crate::source::mavlink::{Connection, Decimation, DroneCfg, DroneSpec};
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut systems: HashMap<(Connection, u8), String> = HashMap::new();
    let mut good = Vec::new();
    for (i, d) in drones {
        let at = |f: &str| format!("drones[{i}].{f}");
        let mut ok = id::check(doc, &at("id"), &d.id, id::IN_TOPICS);
        if let Some(first) = ids.insert(d.id.clone(), i) {
            doc.error(
                &at("id"),
                format!("drone `{}` is already defined as drones[{first}]", d.id),
            );
            ok = false;
        }
        let connection = match Connection::parse(&d.connection) {
            Ok(c) => Some(c),
            Err(e) => {
                doc.error(&at("connection"), e);
                None
            }
        };
        if d.system_id == 0 {
            doc.error(
                &at("system_id"),
                "0 is MAVLink's broadcast address, not a system: 1..=255",
            );
            ok = false;
        }
        if let Some(c) = &connection
            && let Some(other) = systems.insert((c.clone(), d.system_id), d.id.clone())
        {
            doc.error(
                &at("system_id"),
                format!(
                    "system id {} on {c} is already drone `{other}`'s: drones sharing a connection need their own system ids",
                    d.system_id
                ),
            );
            ok = false;
        }
        if !(100..=60_000).contains(&d.heartbeat_interval_ms) {
            doc.error(
                &at("heartbeat_interval_ms"),
                "must be between 100 and 60000 ms",
            );
            ok = false;
        }
        if !(1..=100).contains(&d.missed_heartbeats) {
            doc.error(&at("missed_heartbeats"), "must be between 1 and 100");
            ok = false;
        }
        if !(1_000..=3_600_000).contains(&d.max_interval_ms) {
            doc.error(
                &at("max_interval_ms"),
                "must be between 1000 and 3600000 ms",
            );
            ok = false;
        }
        if d.min_interval_ms > d.max_interval_ms {
            doc.error(
                &at("min_interval_ms"),
                format!(
                    "{} is more than max_interval_ms = {}",
                    d.min_interval_ms, d.max_interval_ms
                ),
            );
            ok = false;
        }
        if !(d.min_distance_m.is_finite() && (0.0..=100_000.0).contains(&d.min_distance_m)) {
            doc.error(&at("min_distance_m"), "must be between 0 and 100000 m");
            ok = false;
        }
        if !(d.turn_deg.is_finite() && (0.0..=180.0).contains(&d.turn_deg)) {
            doc.error(&at("turn_deg"), "must be between 0 and 180 degrees");
            ok = false;
        }
        if !(1..=3_600).contains(&d.item_every_s) {
            doc.error(&at("item_every_s"), "must be between 1 and 3600 s");
            ok = false;
        }
        if let Some(t) = &d.photo_url
            && let Err(why) = crate::source::mavlink::photo::check_template(t)
        {
            doc.error(&at("photo_url"), why);
            ok = false;
        }
        if d.photo_url.is_none() && d.photo_user.is_some() {
            doc.error(
                &at("photo_user"),
                "without `photo_url` there is nothing to log in to",
            );
            ok = false;
        }
        if let Some(t) = &d.photo_url
            && d.photo_user.is_some()
            && !crate::source::mavlink::photo::host_is_fixed(t)
        {
            doc.error(
                &at("photo_user"),
                "the host of `photo_url` comes from the drone's file_url, and MAVLink is not \
                 authenticated: anyone on the link could have the password sent to a host of \
                 theirs. Name the camera's host, e.g. \"http://192.168.144.25/DCIM/{name}\"",
            );
            ok = false;
        }
        if d.photo_user.is_some() != d.photo_password.is_some() {
            doc.error(
                &at("photo_user"),
                "set both `photo_user` and `photo_password`, or neither",
            );
            ok = false;
        }
        if !(500..=120_000).contains(&d.photo_timeout_ms) {
            doc.error(&at("photo_timeout_ms"), "must be between 500 and 120000 ms");
            ok = false;
        }
        if !(1024..=fumegrid_common::wire::EVIDENCE_MAX_BYTES).contains(&d.photo_max_bytes) {
            doc.error(
                &at("photo_max_bytes"),
                format!(
                    "must be between 1024 and {} bytes (the wire's bound on a picture)",
                    fumegrid_common::wire::EVIDENCE_MAX_BYTES
                ),
            );
            ok = false;
        }
        if let (true, Some(connection)) = (ok, connection) {
            good.push(DroneSpec {
                connection,
                drone: DroneCfg {
                    id: d.id,
                    system_id: d.system_id,
                    decimation: Decimation {
                        min_interval_ms: d.min_interval_ms,
                        min_distance_m: d.min_distance_m,
                        turn_deg: d.turn_deg,
                        max_interval_ms: d.max_interval_ms,
                        item_every_ms: d.item_every_s * 1000,
                    },
                    heartbeat_interval_ms: d.heartbeat_interval_ms,
                    missed_heartbeats: d.missed_heartbeats,
                },
                photos: d
                    .photo_url
                    .map(|url| crate::source::mavlink::photo::PhotoCfg {
                        url,
                        creds: d.photo_user.map(|user| crate::source::camera::http::Creds {
                            user,
                            password: d.photo_password.unwrap_or_default(),
                        }),
                        timeout_ms: d.photo_timeout_ms,
                        max_bytes: d.photo_max_bytes,
                    }),
            });
        }
    }
    good
}

fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// The config printed by `print-default-config`: every key, its default, and a comment.
pub fn default_config() -> String {
    DEFAULT_CONFIG.replacen(
        "# One entry per RS-485 port.",
        &format!(
            "{}\n\n{}\n\n# One entry per RS-485 port.",
            crate::rules::config::DEFAULT_RULES_TOML.trim_end(),
            crate::report::config::DEFAULT_REPORT_TOML.trim_end()
        ),
        1,
    )
}

const DEFAULT_CONFIG: &str = r#"# fumegrid-gateway config. Paths are relative to this file's folder.
# Check it with: fumegrid-gateway validate --config THIS_FILE

[gateway]
id = "gw-demo-01"                 # unique in the district; appears in MQTT topics
site = "Demo street, block 1"     # where the box hangs (free text)
poll_interval_ms = 1000           # default poll interval of every device
breaker_failures = 3              # consecutive failed polls that open a device's circuit breaker
probe_interval_ms = 10000         # while open, probe the device this often

# Everything taken waits here until the aggregator acknowledges it.
[outbox]
path = "/var/lib/fumegrid/gateway/outbox"
max_bytes = 268435456             # 256 MiB; when full, oldest readings go first, alarms last
evidence_max_bytes = 67108864     # 64 MiB for camera pictures, apart; pictures of open alarms go last
flush_interval_ms = 1000          # readings reach the disk this often; alarms at once

# The aggregator's MQTT broker. Without this section, items stay in the outbox.
[uplink]
host = "aggregator.district.example"
port = 1883
username = "gw-demo-01"
# Secrets: under systemd, LoadCredential= puts root-only copies here (see systemd/README.md).
password_file = "/run/credentials/fumegrid-gateway.service/mqtt-password"
key_file = "/run/credentials/fumegrid-gateway.service/gateway.key"   # hex HMAC key shared with the aggregator
# tls_ca_file = "/etc/fumegrid/broker-ca.pem"   # set to use TLS (port 8883)
keep_alive_s = 15
batch_max_items = 500
batch_max_bytes = 262144          # one publish at most this big: below the broker's packet limit
ack_timeout_s = 30                # unacked batches are sent again after this
backlog_items_per_s = 5000        # after an outage, old items drain at most this fast
compress = true                   # gzip batches (sealed first); false: plain JSON for an aggregator older than issue 14

# Prometheus metrics (docs/metrics.md). Off unless `listen` is set; loopback only unless
# allow_remote = true (the endpoint has no authentication).
[metrics]
# listen = "127.0.0.1:9464"
allow_remote = false

# One entry per RS-485 port.
[[buses]]
name = "rs485-1"
path = "/dev/ttyUSB0"             # prefer /dev/serial/by-path/... so a replug keeps the name
baud = 9600
parity = "even"                   # even | odd | none
data_bits = 8
stop_bits = 1
# guard_ms = 600                  # stay off the line after a timeout; default: twice that request's timeout

# One entry per installed monitor.
[[devices]]
id = "rest-0001"                  # unique on this gateway
name = "Noodle house, No. 12"     # free text for people
profile = "/usr/share/fumegrid/device-profiles/generic-f32-input.toml"
bus = "rs485-1"                   # Modbus RTU on that bus ...
slave = 1
# poll_interval_ms = 1000         # default: [gateway] poll_interval_ms

[[devices]]
id = "rest-0002"
name = "Hotpot, No. 14"
profile = "/usr/share/fumegrid/device-profiles/tb-compatible.toml"
tcp = "192.168.10.21:502"         # ... or Modbus TCP
slave = 1

# One entry per camera; its pictures go with the alarms of the devices it watches.
# [[cameras]]
# id = "cam-1"
# devices = ["rest-0001"]
# snapshot_url = "http://192.168.10.31/ISAPI/Streaming/channels/101/picture"  # or rtsp = "rtsp://...", or onvif = "http://.../onvif/device_service"
# user = "admin"
# password = "..."
# timeout_ms = 10000              # one capture, connect to last byte
# max_bytes = 4194304             # largest picture accepted (at most 8 MiB)
# update_every_s = 600            # while an alarm stays open, a picture on its updates at most this often
# schedule_every_s = 3600         # audit pictures within opening hours; default: none

# One entry per drone (docs/drones.md): MAVLink telemetry, decimated, through the outbox.
# [[drones]]
# id = "uav-1"                    # unique on this gateway
# connection = "udpin:0.0.0.0:14550"  # or tcpin:IP:PORT, tcpout:HOST:PORT, serial:/dev/ttyUSB0:57600
# system_id = 1                   # its autopilot's MAVLink system id; others on the port count as foreign
# heartbeat_interval_ms = 1000
# missed_heartbeats = 3           # link lost (an event) after 3 missing heartbeats
# min_interval_ms = 5000          # decimation: at most one point per 5 s ...
# min_distance_m = 20.0           # ... and only when it moved 20 m ...
# turn_deg = 30.0                 # ... or turned 30°
# max_interval_ms = 60000         # a point a minute even hovering
# item_every_s = 60               # kept points go up as one track item a minute
# photo_url = "http://192.168.144.25/DCIM/{name}"  # fetch each photo's bytes as evidence from the
#                                 # camera's web server ("{file}": file_url is itself an http URL,
#                                 # then without a login); default: metadata only
# photo_user = "admin"            # Basic/Digest, sent only when asked, only to the host named above
# photo_password = "..."
# photo_timeout_ms = 10000        # the photo item waits at most this long for its bytes
# photo_max_bytes = 8388608       # larger photos go up as metadata only
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_file(dir: &Path) -> PathBuf {
        let p = dir.join("p.toml");
        std::fs::write(
            &p,
            "[profile]\nid = \"p\"\n[[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n",
        )
        .expect("write profile");
        p
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fumegrid-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    #[test]
    fn good_config_resolves_profiles_and_defaults() {
        let dir = tmpdir("good");
        profile_file(&dir);
        let text = "[gateway]\nid = \"gw-1\"\n[[buses]]\nname = \"b\"\npath = \"/dev/null\"\n\
                    [[devices]]\nid = \"d1\"\nprofile = \"p.toml\"\nbus = \"b\"\nslave = 2\n\
                    [[devices]]\nid = \"d2\"\nprofile = \"p.toml\"\ntcp = \"127.0.0.1:502\"\n";
        let cfg =
            GatewayConfig::from_source(&Source::new(dir.join("gw.toml"), text)).expect("valid");
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(cfg.devices[0].transport, Transport::Rtu(0));
        assert_eq!(cfg.devices[0].poll_interval_ms, 1000);
        assert_eq!(cfg.buses[0].line.parity, Parity::Even);
        assert!(
            Arc::ptr_eq(&cfg.devices[0].profile, &cfg.devices[1].profile),
            "profile loaded once"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tmpdir("bad");
        profile_file(&dir);
        let text = "[gateway]\nid = \"GW 1\"\n[[buses]]\nname = \"b\"\npath = \"/dev/null\"\nbaud = 7\n\
                    [[devices]]\nid = \"d1\"\nprofile = \"p.toml\"\nbus = \"nope\"\n\
                    [[devices]]\nid = \"d2\"\nprofile = \"missing.toml\"\ntcp = \"nohostport\"\n";
        let err = GatewayConfig::from_source(&Source::new(dir.join("gw.toml"), text))
            .expect_err("invalid");
        let s = err.to_string();
        for want in [
            "gateway.id",
            "buses[0].baud",
            "devices[0].bus",
            "devices[1].tcp",
            "missing.toml",
            "devices[1].profile",
        ] {
            assert!(s.contains(want), "{want} missing in:\n{s}");
        }
    }

    #[test]
    fn drones_take_their_defaults_and_every_mistake_is_reported_at_its_line() {
        let cfg = camera_config("[[drones]]\nid = \"uav-1\"\n").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.drones[0];
        assert_eq!(d.connection.to_string(), "udpin:0.0.0.0:14550");
        assert_eq!(
            (
                d.drone.system_id,
                d.drone.heartbeat_interval_ms,
                d.drone.missed_heartbeats
            ),
            (1, 1000, 3)
        );
        assert_eq!(
            d.drone.decimation,
            crate::source::mavlink::Decimation::default()
        );
        // The commented block of the printed default config, uncommented, is these defaults.
        let block: String = default_config()
            .lines()
            .skip_while(|l| !l.starts_with("# [[drones]]"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let mut printed = camera_config(&block).unwrap_or_else(|d| panic!("{d}"));
        // ... but for the photo fetch, which is off by default.
        assert_eq!(cfg.drones[0].photos, None);
        assert_eq!(
            printed.drones[0].photos.take(),
            Some(crate::source::mavlink::photo::PhotoCfg {
                url: "http://192.168.144.25/DCIM/{name}".into(),
                creds: Some(crate::source::camera::http::Creds {
                    user: "admin".into(),
                    password: "...".into()
                }),
                timeout_ms: 10_000,
                max_bytes: 8 * 1024 * 1024,
            })
        );
        assert_eq!(printed.drones, cfg.drones);

        let drones = [
            "[[drones]]",                         // 7
            "id = \"uav-1\"",                     // 8
            "connection = \"udp:0.0.0.0:14550\"", // 9
            "[[drones]]",                         // 10
            "id = \"uav-2\"",                     // 11
            "system_id = 0",                      // 12
            "missed_heartbeats = 0",              // 13
            "min_interval_ms = 90000",            // 14
            "[[drones]]",                         // 15
            "id = \"uav-3\"",                     // 16
            "[[drones]]",                         // 17
            "id = \"uav-4\"",                     // 18
            "turn_deg = 200.0",                   // 19
            "bogus = 1",                          // 20
            "[[drones]]",                         // 21
            "id = \"uav-5\"",                     // 22
            "photo_url = \"ftp://cam/{file}\"",   // 23
            "photo_user = \"admin\"",             // 24
            "photo_timeout_ms = 100",             // 25
            "photo_max_bytes = 99999999",         // 26
        ]
        .join("\n");
        let err = camera_config(&drones).expect_err("invalid");
        let s = err.to_string();
        for (line, field) in [
            (9, "drones[0].connection"),
            (12, "drones[1].system_id"),
            (13, "drones[1].missed_heartbeats"),
            (14, "drones[1].min_interval_ms"),
            (23, "drones[4].photo_url"),
            (24, "drones[4].photo_user"),
            (25, "drones[4].photo_timeout_ms"),
            (26, "drones[4].photo_max_bytes"),
        ] {
            assert!(
                err.iter().any(|d| d.line == line && d.field == field),
                "no {field} at line {line}: {s}"
            );
        }
        assert!(s.contains("bogus"), "{s}");
        assert!(s.contains("udpin:IP:PORT"), "{s}");

        // A password is never sent to a host the drone's file_url names.
        let with = |url: &str| {
            camera_config(&format!(
                "[[drones]]\nid = \"uav-1\"\nphoto_url = \"{url}\"\nphoto_user = \"admin\"\n\
                 photo_password = \"pw\"\n"
            ))
        };
        for drone_host in ["{file}", "http://{file}", "http://{name}/x.jpg"] {
            let err = with(drone_host).expect_err(drone_host).to_string();
            assert!(
                err.contains("drones[0].photo_user") && err.contains("not authenticated"),
                "{drone_host}: {err}"
            );
        }
        with("http://192.168.144.25/DCIM/{file}").unwrap_or_else(|d| panic!("{d}"));
        with("https://cam.local:8443/media/{index}.jpg").unwrap_or_else(|d| panic!("{d}"));
    }

    #[test]
    fn the_printed_default_config_is_valid() {
        let dir = tmpdir("default");
        std::fs::write(dir.join("key"), "00112233445566778899aabbccddeeff").expect("key");
        std::fs::write(dir.join("pass"), "secret").expect("pass");
        let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
        let text = default_config()
            .replace(
                "/usr/share/fumegrid/device-profiles",
                &profiles.display().to_string(),
            )
            .replace(
                "/run/credentials/fumegrid-gateway.service/gateway.key",
                "key",
            )
            .replace(
                "/run/credentials/fumegrid-gateway.service/mqtt-password",
                "pass",
            );
        let cfg = GatewayConfig::from_source(&Source::new(dir.join("gw.toml"), text))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.devices.len(), 2);
        assert!(cfg.uplink.is_some());
        assert_eq!(cfg.devices[0].rules.window_s, 600);
    }

    #[test]
    fn the_metrics_listener_is_loopback_unless_remote_is_allowed() {
        let dir = tmpdir("metrics");
        profile_file(&dir);
        let base = "[gateway]\nid = \"gw-1\"\n[[devices]]\nid = \"d2\"\nprofile = \"p.toml\"\ntcp = \"127.0.0.1:502\"\n";
        let load = |extra: &str| {
            GatewayConfig::from_source(&Source::new(dir.join("gw.toml"), format!("{base}{extra}")))
        };
        let off = load("").expect("valid");
        assert_eq!(off.metrics, MetricsSection::default(), "off by default");
        let local = load("[metrics]\nlisten = \"127.0.0.1:9464\"\n").expect("loopback is fine");
        assert_eq!(
            local.metrics.listen,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        let err = load("[metrics]\nlisten = \"0.0.0.0:9464\"\n").expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("metrics.listen") && msg.contains("allow_remote"),
            "{msg}"
        );
        load("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n")
            .expect("allowed explicitly");
        let err = load("[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("path"), "{err}");
    }

    fn camera_config(cameras: &str) -> Result<GatewayConfig, Diagnostics> {
        let dir = tmpdir("cameras");
        profile_file(&dir);
        let text = format!(
            "[gateway]\nid = \"gw-1\"\n[[devices]]\nid = \"d1\"\nprofile = \"p.toml\"\ntcp = \"127.0.0.1:502\"\n{cameras}"
        );
        GatewayConfig::from_source(&Source::new(dir.join("gw.toml"), text))
    }

    #[test]
    fn a_camera_gets_its_defaults_and_its_triggers() {
        let cfg = camera_config(
            "[[cameras]]\nid = \"cam-1\"\ndevices = [\"d1\"]\nsnapshot_url = \"http://10.0.0.5/ISAPI/Streaming/channels/101/picture\"\nschedule_every_s = 3600\n\
             [[cameras]]\nid = \"cam-2\"\ndevices = [\"d1\"]\nrtsp = \"rtsp://10.0.0.6/main\"\nuser = \"admin\"\npassword = \"x\"\n",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.cameras.len(), 2);
        let c = &cfg.cameras[0];
        assert!(matches!(c.source, CameraSource::SnapshotUrl(_)));
        assert_eq!(
            (
                c.update_every_s,
                c.schedule_every_s,
                c.timeout_ms,
                c.max_bytes
            ),
            (600, Some(3600), 10_000, 4 << 20)
        );
        assert!(matches!(cfg.cameras[1].source, CameraSource::Rtsp(_)));
        assert_eq!(
            cfg.cameras[1].schedule_every_s, None,
            "no audit pictures by default"
        );
    }

    /// Each problem is reported at its own line, with the field named.
    #[test]
    fn every_camera_problem_is_reported_at_its_line() {
        let cameras = [
            "[[cameras]]",                               // 7
            "id = \"cam-1\"",                            // 8
            "devices = [\"d1\", \"nope\"]",              // 9
            "snapshot_url = \"http://h/p.jpg\"",         // 10
            "[[cameras]]",                               // 11
            "id = \"cam-1\"",                            // 12
            "devices = [\"d1\"]",                        // 13
            "rtsp = \"http://wrong-scheme\"",            // 14
            "max_bytes = 9000000",                       // 15
            "update_every_s = 1",                        // 16
            "[[cameras]]",                               // 17
            "id = \"cam-3\"",                            // 18
            "devices = [\"d1\"]",                        // 19
            "onvif = \"http://h/onvif/device_service\"", // 20
            "fps = 25",                                  // 21
        ]
        .join("\n");
        let err = camera_config(&cameras).expect_err("invalid");
        let found: Vec<(usize, &str)> = err.iter().map(|d| (d.line, d.field.as_str())).collect();
        for want in [
            (9, "cameras[0].devices[1]"),
            (12, "cameras[1].id"),
            (14, "cameras[1].rtsp"),
            (15, "cameras[1].max_bytes"),
            (16, "cameras[1].update_every_s"),
        ] {
            assert!(found.contains(&want), "{want:?} not in {found:?}\n{err}");
        }
        assert!(
            err.iter()
                .any(|d| d.line == 21 && d.message.contains("`fps`")),
            "unknown key at its line:\n{err}"
        );
        let s = err.to_string();
        assert!(s.contains("no device `nope` (defined: d1)"), "{s}");
        assert!(s.contains("already defined as cameras[0]"), "{s}");
    }

    #[test]
    fn a_camera_has_exactly_one_source() {
        let two = camera_config(
            "[[cameras]]\nid = \"c\"\ndevices = [\"d1\"]\nrtsp = \"rtsp://h/a\"\nsnapshot_url = \"http://h/p.jpg\"\n",
        )
        .expect_err("two sources");
        assert!(
            two.iter().any(|d| d.line == 11
                && d.field == "cameras[0].snapshot_url"
                && d.message.contains("`rtsp` and `snapshot_url`")),
            "{two}"
        );
        let none =
            camera_config("[[cameras]]\nid = \"c\"\ndevices = [\"d1\"]\n").expect_err("no source");
        assert!(
            none.iter()
                .any(|d| d.line == 8 && d.message.contains("set one of `rtsp`")),
            "{none}"
        );
    }

    /// The config's reading of `[[cameras]]` agrees with `CameraSpec`'s own serde (defaults
    /// included), so the two cannot drift apart unnoticed.
    #[test]
    fn cameras_read_as_camera_spec_reads_them() {
        let text = "id = \"c\"\ndevices = [\"d1\"]\nonvif = \"http://h/onvif/device_service\"\n";
        let spec: CameraSpec = toml::from_str(text).expect("CameraSpec");
        let cfg = camera_config(&format!("[[cameras]]\n{text}")).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.cameras, vec![spec]);
    }

    #[test]
    fn the_evidence_budget_must_hold_the_largest_picture() {
        let err = camera_config(
            "[outbox]\nevidence_max_bytes = 2097152\n[[cameras]]\nid = \"c\"\ndevices = [\"d1\"]\nsnapshot_url = \"http://h/p.jpg\"\nmax_bytes = 4194304\n",
        )
        .expect_err("budget too small");
        let s = err.to_string();
        assert!(
            s.contains("cameras[0].max_bytes") && s.contains("evidence_max_bytes"),
            "{s}"
        );
        assert!(evidence_cost(8 << 20) < 64 << 20);
        assert!(evidence_cost(3) >= 4);
    }

    #[test]
    fn frame_silence_follows_the_spec() {
        let l = Line {
            baud: 9600,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
        };
        assert_eq!(l.char_bits(), 11);
        assert!((l.frame_silence().as_secs_f64() - 3.5 * 11.0 / 9600.0).abs() < 1e-9);
        let fast = Line { baud: 115_200, ..l };
        assert_eq!(fast.frame_silence().as_micros(), 1750);
    }
}
