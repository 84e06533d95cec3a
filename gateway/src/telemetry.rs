//! Every Prometheus metric the gateway emits, served by the opt-in `[metrics] listen` endpoint:
//! the one place a name, its labels and its meaning are written. `docs/metrics.md` carries the
//! same table (a test checks). Every series also carries the label `gateway` (the gateway id),
//! set once for the whole process. The counting calls sit with the events:
//! [`crate::source::modbus::SlaveStats`] (polls, failures, breaker), the outbox store (depth,
//! drops), [`crate::uplink::UplinkStats`] (MQTT), [`crate::rules::sink`] (alarms, items the
//! outbox refused), [`crate::source::mavlink::port`] (drones: frames, noise, points, links).

use std::net::SocketAddr;

use fumegrid_common::telemetry::{Def, Kind};

pub const MODBUS_POLLS: &str = "fumegrid_modbus_polls_total";
pub const MODBUS_POLLS_OK: &str = "fumegrid_modbus_polls_ok_total";
pub const MODBUS_REQUESTS: &str = "fumegrid_modbus_requests_total";
pub const MODBUS_FAILURES: &str = "fumegrid_modbus_failures_total";
pub const MODBUS_OVERRUNS: &str = "fumegrid_modbus_overruns_total";
pub const MODBUS_BREAKER_TRIPS: &str = "fumegrid_modbus_breaker_trips_total";
pub const MODBUS_BREAKER_OPEN: &str = "fumegrid_modbus_breaker_open";
pub const OUTBOX_ITEMS: &str = "fumegrid_outbox_items";
pub const OUTBOX_BYTES: &str = "fumegrid_outbox_bytes";
pub const OUTBOX_DROPPED: &str = "fumegrid_outbox_dropped_total";
pub const UPLINK_CONNECTED: &str = "fumegrid_uplink_connected";
pub const UPLINK_CONNECTS: &str = "fumegrid_uplink_connects_total";
pub const UPLINK_BATCHES_SENT: &str = "fumegrid_uplink_batches_sent_total";
pub const UPLINK_ITEMS_SENT: &str = "fumegrid_uplink_items_sent_total";
pub const UPLINK_PAYLOAD_BYTES: &str = "fumegrid_uplink_payload_bytes_total";
pub const UPLINK_ITEMS_ACKED: &str = "fumegrid_uplink_items_acked_total";
pub const UPLINK_ACKS_REFUSED: &str = "fumegrid_uplink_acks_refused_total";
pub const UPLINK_ACK_TIMEOUTS: &str = "fumegrid_uplink_ack_timeouts_total";
pub const UPLINK_OUTBOX_ERRORS: &str = "fumegrid_uplink_outbox_errors_total";
pub const OUTBOX_REFUSED: &str = "fumegrid_outbox_refused_total";
pub const RULES_ALARMS: &str = "fumegrid_rules_alarms_total";
pub const OUTBOX_EVIDENCE_BYTES: &str = "fumegrid_outbox_evidence_bytes";
pub const OUTBOX_DROPPED_PICTURES: &str = "fumegrid_outbox_dropped_pictures_total";
pub const UPLINK_COMMANDS: &str = "fumegrid_uplink_commands_total";
pub const EVIDENCE_PICTURES: &str = "fumegrid_evidence_pictures_total";
pub const EVIDENCE_BYTES: &str = "fumegrid_evidence_bytes_total";
pub const EVIDENCE_TRIGGERS_DROPPED: &str = "fumegrid_evidence_triggers_dropped_total";
pub const EVIDENCE_LOST: &str = "fumegrid_evidence_lost_total";
pub const CAMERA_FAILURES: &str = "fumegrid_camera_failures_total";
pub const CAMERA_EVENTS_SUPPRESSED: &str = "fumegrid_camera_events_suppressed_total";
pub const CAMERA_BREAKER_OPEN: &str = "fumegrid_camera_breaker_open";
pub const MAVLINK_FRAMES: &str = "fumegrid_mavlink_frames_total";
pub const MAVLINK_REJECTED: &str = "fumegrid_mavlink_rejected_total";
pub const MAVLINK_GARBAGE_BYTES: &str = "fumegrid_mavlink_garbage_bytes_total";
pub const MAVLINK_IO_ERRORS: &str = "fumegrid_mavlink_io_errors_total";
pub const DRONE_MESSAGES: &str = "fumegrid_drone_messages_total";
pub const DRONE_POINTS: &str = "fumegrid_drone_points_total";
pub const DRONE_PHOTOS: &str = "fumegrid_drone_photos_total";
pub const DRONE_LINK_UP: &str = "fumegrid_drone_link_up";
pub const DRONE_PHOTOS_FETCHED: &str = "fumegrid_drone_photos_fetched_total";
pub const DRONE_PHOTO_BYTES: &str = "fumegrid_drone_photo_bytes_total";
pub const DRONE_PHOTO_FETCH_FAILURES: &str = "fumegrid_drone_photo_fetch_failures_total";

pub const DEFS: &[Def] = &[
    Def {
        name: MODBUS_POLLS,
        kind: Kind::Counter,
        labels: &["device"],
        help: "Polls started (a poll reads every register block of the device's profile; probes of an open breaker included).",
    },
    Def {
        name: MODBUS_POLLS_OK,
        kind: Kind::Counter,
        labels: &["device"],
        help: "Polls in which every block was read.",
    },
    Def {
        name: MODBUS_REQUESTS,
        kind: Kind::Counter,
        labels: &["device"],
        help: "Modbus requests sent.",
    },
    Def {
        name: MODBUS_FAILURES,
        kind: Kind::Counter,
        labels: &["device", "kind"],
        help: "Failed requests: `kind` is `no_reply` (timeout), `garbled` (CRC error, noise, a reply that does not match), `exception` (a Modbus exception reply) or `io` (port or connection error).",
    },
    Def {
        name: MODBUS_OVERRUNS,
        kind: Kind::Counter,
        labels: &["device"],
        help: "Polls that started more than one interval late because the channel was saturated.",
    },
    Def {
        name: MODBUS_BREAKER_TRIPS,
        kind: Kind::Counter,
        labels: &["device"],
        help: "Times the device's circuit breaker opened (it stopped answering).",
    },
    Def {
        name: MODBUS_BREAKER_OPEN,
        kind: Kind::Gauge,
        labels: &["device"],
        help: "1 while the device's circuit breaker is open (probed only), else 0.",
    },
    Def {
        name: OUTBOX_ITEMS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Items in the outbox waiting for the aggregator's ack (the depth).",
    },
    Def {
        name: OUTBOX_BYTES,
        kind: Kind::Gauge,
        labels: &[],
        help: "Bytes of the readings, alarms and events among those items, counted against `[outbox] max_bytes`.",
    },
    Def {
        name: OUTBOX_EVIDENCE_BYTES,
        kind: Kind::Gauge,
        labels: &[],
        help: "Bytes of the picture parts among those items, counted against `[outbox] evidence_max_bytes`.",
    },
    Def {
        name: OUTBOX_DROPPED_PICTURES,
        kind: Kind::Counter,
        labels: &[],
        help: "Whole pictures dropped by the evidence budget since start (their parts count in `fumegrid_outbox_dropped_total{class=\"evidence\"}`): pictures of no open alarm first; reported upstream as a gap event naming pictures.",
    },
    Def {
        name: OUTBOX_DROPPED,
        kind: Kind::Counter,
        labels: &["class"],
        help: "Items dropped by the full policy since start: `class` is `reading`, `priority` (alarms, events) or `evidence` (picture parts, under `[outbox] evidence_max_bytes`); each drop is also reported upstream as a gap event.",
    },
    Def {
        name: UPLINK_CONNECTED,
        kind: Kind::Gauge,
        labels: &[],
        help: "1 while connected to the MQTT broker, else 0.",
    },
    Def {
        name: UPLINK_CONNECTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Connections to the MQTT broker (CONNACKs received).",
    },
    Def {
        name: UPLINK_BATCHES_SENT,
        kind: Kind::Counter,
        labels: &[],
        help: "Batches published (resends after an ack timeout included).",
    },
    Def {
        name: UPLINK_ITEMS_SENT,
        kind: Kind::Counter,
        labels: &[],
        help: "Items in the published batches.",
    },
    Def {
        name: UPLINK_PAYLOAD_BYTES,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes of the published batch payloads as they go on the wire (compressed when `[uplink] compress`; MQTT headers not included).",
    },
    Def {
        name: UPLINK_ITEMS_ACKED,
        kind: Kind::Counter,
        labels: &[],
        help: "Items the aggregator acked and the outbox deleted.",
    },
    Def {
        name: UPLINK_ACKS_REFUSED,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Acks not applied: `reason` is `bad_seal` (MAC or format wrong) or `other_stream` (for an older stream of this gateway).",
    },
    Def {
        name: UPLINK_ACK_TIMEOUTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Times a batch went unacked for `ack_timeout_s` and what was in flight was planned again.",
    },
    Def {
        name: UPLINK_OUTBOX_ERRORS,
        kind: Kind::Counter,
        labels: &["op"],
        help: "Outbox operations of the uplink that failed, by `op` (`read`, `ack`, `hello`...): logged at ERROR once per streak; the systemd watchdog is not fed while a streak lasts.",
    },
    Def {
        name: OUTBOX_REFUSED,
        kind: Kind::Counter,
        labels: &[],
        help: "Items the outbox refused to take (full disk): logged once per streak and reported upstream as a gap event.",
    },
    Def {
        name: RULES_ALARMS,
        kind: Kind::Counter,
        labels: &["device", "kind", "phase"],
        help: "Alarm transitions judged at the edge: `kind` as in docs/wire.md (`exceedance`, ...), `phase` `raised`, `updated` or `cleared`.",
    },
    Def {
        name: UPLINK_COMMANDS,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Commands received on `cmd`: `outcome` is `accepted` (sealed, fresh, not replayed: handed to the evidence pipeline), `bad_seal` (MAC or format wrong; counted and logged, no event), or a refusal reported by a `command_refused` event: `wrong_gateway`, `expired`, `future` (issued further ahead than the skew allowance), `too_long` (expiry too far ahead), `replayed`, `busy` (the evidence pipeline's queue was full), `unsupported` (no cameras configured), `no_camera` (an accepted command naming a camera or device this gateway lacks, counted again by the pipeline).",
    },
    Def {
        name: EVIDENCE_PICTURES,
        kind: Kind::Counter,
        labels: &["camera", "trigger"],
        help: "Pictures taken and appended to the outbox: `trigger` is `alarm_raised`, `alarm_updated`, `schedule` or `request`.",
    },
    Def {
        name: EVIDENCE_BYTES,
        kind: Kind::Counter,
        labels: &["camera"],
        help: "Original bytes of those pictures.",
    },
    Def {
        name: EVIDENCE_TRIGGERS_DROPPED,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Pictures not taken for lack of room: `source` `alarm` or `request` (the pipeline's input queue was full; the alarm itself was already in the outbox) or `camera_busy` (4 jobs already waited for that camera; the least urgent went). Also logged.",
    },
    Def {
        name: EVIDENCE_LOST,
        kind: Kind::Counter,
        labels: &["camera"],
        help: "Pictures taken but refused by the outbox (a failing store): logged at ERROR.",
    },
    Def {
        name: CAMERA_FAILURES,
        kind: Kind::Counter,
        labels: &["camera", "reason"],
        help: "Captures that gave no picture: `reason` is `unreachable`, `unauthorized`, `timeout`, `no_keyframe`, `garbage`, `too_large`, `status`, `unsupported` (a stream without video, an address the camera code does not speak) or `breaker_open`. Reported upstream as `camera_failed` events (rate-limited per camera).",
    },
    Def {
        name: CAMERA_EVENTS_SUPPRESSED,
        kind: Kind::Counter,
        labels: &["camera"],
        help: "Camera failures not reported by an event of their own because the camera's last event with the same reason was less than 10 minutes ago; the next event carries their count.",
    },
    Def {
        name: CAMERA_BREAKER_OPEN,
        kind: Kind::Gauge,
        labels: &["camera"],
        help: "1 while the camera's circuit breaker is open (captures are refused until the next probe), else 0.",
    },
    Def {
        name: MAVLINK_FRAMES,
        kind: Kind::Counter,
        labels: &["connection"],
        help: "MAVLink 1 and 2 frames received with a good checksum on a `[[drones]]` connection (of any system id).",
    },
    Def {
        name: MAVLINK_REJECTED,
        kind: Kind::Counter,
        labels: &["connection", "reason"],
        help: "Frames received and not used: `reason` is `bad_crc` (checksum wrong: damaged, or a message of another dialect under a `common` id), `unknown_message` (an id the `common` dialect lacks, e.g. ArduPilot's own: skipped whole), `unsupported` (MAVLink 2 incompatibility flags other than signing), `bad_payload` (the dialect refused the payload) or `foreign` (a system id no drone on the connection has). Never logged per frame.",
    },
    Def {
        name: MAVLINK_GARBAGE_BYTES,
        kind: Kind::Counter,
        labels: &["connection"],
        help: "Bytes that started no frame (noise between frames, a datagram's truncated tail).",
    },
    Def {
        name: MAVLINK_IO_ERRORS,
        kind: Kind::Counter,
        labels: &["connection"],
        help: "Errors of the connection itself (cannot bind or open, a TCP peer or serial port failing): logged at WARN, reopened every 2 s.",
    },
    Def {
        name: DRONE_MESSAGES,
        kind: Kind::Counter,
        labels: &["drone", "kind"],
        help: "Messages of the drone's system id decoded: `kind` is `heartbeat`, `position` (GLOBAL_POSITION_INT), `battery` (SYS_STATUS, BATTERY_STATUS), `photo` (CAMERA_IMAGE_CAPTURED) or `other` (a `common` message the gateway does not use).",
    },
    Def {
        name: DRONE_POINTS,
        kind: Kind::Counter,
        labels: &["drone", "fate"],
        help: "Positions by `fate`: `kept` (goes up in a track item), `decimated` (too soon or too close to the last kept one) or `invalid` (out of range, 0°/0° without a fix, or not after the last kept one in time).",
    },
    Def {
        name: DRONE_PHOTOS,
        kind: Kind::Counter,
        labels: &["drone", "fate"],
        help: "CAMERA_IMAGE_CAPTURED messages: `fate` `new` (a `drone_photo` item) or `duplicate` (an image index already reported: a resend).",
    },
    Def {
        name: DRONE_LINK_UP,
        kind: Kind::Gauge,
        labels: &["drone"],
        help: "1 while the drone's heartbeats come (not judged lost), else 0 (also before the first heartbeat).",
    },
    Def {
        name: DRONE_PHOTOS_FETCHED,
        kind: Kind::Counter,
        labels: &["drone"],
        help: "Photos of drones with `photo_url` fetched and appended to the outbox as evidence parts, their `drone_photo` item naming them by `sha256`.",
    },
    Def {
        name: DRONE_PHOTO_BYTES,
        kind: Kind::Counter,
        labels: &["drone"],
        help: "Bytes of those photos (before base64).",
    },
    Def {
        name: DRONE_PHOTO_FETCH_FAILURES,
        kind: Kind::Counter,
        labels: &["drone", "reason"],
        help: "Photos of drones with `photo_url` whose bytes were not fetched (the `drone_photo` item goes up without `sha256`), logged at WARN: `reason` `unreachable`, `unauthorized`, `timeout`, `status` (an HTTP error status), `garbage` (not a JPEG), `too_large` (over `photo_max_bytes`), `unsupported`, `busy` (18 fetches already pending on the connection), `no_file` (the template needs `file_url` and the drone gave none), `bad_url` (the template did not give an http(s) URL) or `stopped` (the gateway stopped during the fetch).",
    },
];

/// Installs the Prometheus recorder with every series labelled `gateway = id`, and serves it
/// on `listen` (hyper, from the exporter crate) until the runtime stops. Call inside the
/// runtime. The listen address was checked by the config (loopback unless allowed).
pub fn serve(
    listen: SocketAddr,
    gateway: &str,
) -> Result<(), metrics_exporter_prometheus::BuildError> {
    let (recorder, exporter) = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .add_global_label("gateway", gateway)
        .build()?;
    fumegrid_common::telemetry::install(recorder, DEFS);
    // Zero series from the start for what may never happen (`increase()` over a series that
    // does not exist yet sees nothing when it appears with 1).
    for class in ["reading", "priority", "evidence"] {
        metrics::counter!(OUTBOX_DROPPED, "class" => class).absolute(0);
    }
    for reason in ["bad_seal", "other_stream"] {
        metrics::counter!(UPLINK_ACKS_REFUSED, "reason" => reason).absolute(0);
    }
    metrics::counter!(UPLINK_ACK_TIMEOUTS).absolute(0);
    tokio::spawn(async move {
        if exporter.await.is_err() {
            tracing::warn!(%listen, "metrics listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md lists every metric exactly as this table has it.
    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../docs/metrics.md");
        let missing = fumegrid_common::telemetry::undocumented(DEFS, doc);
        assert!(
            missing.is_empty(),
            "docs/metrics.md lacks the rows\n{}",
            missing.join("\n")
        );
    }
}
