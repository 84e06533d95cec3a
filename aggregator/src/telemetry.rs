//! Every Prometheus metric the aggregator emits (served at `/metrics` on the HTTP API): the one
//! place a name, its labels and its meaning are written. `docs/metrics.md` carries the same
//! table (a test checks). The counting calls sit with the events: [`crate::ingest::stats`]
//! (ingest and store), [`crate::notify`] (webhooks), `store::cases_sql` and [`crate::casework`]
//! (cases).

use fumegrid_common::telemetry::{Def, Kind};

pub const INGEST_MQTT_CONNECTS: &str = "fumegrid_ingest_mqtt_connects_total";
pub const INGEST_MQTT_CONNECTED: &str = "fumegrid_ingest_mqtt_connected";
pub const INGEST_BATCHES: &str = "fumegrid_ingest_batches_total";
pub const INGEST_ITEMS: &str = "fumegrid_ingest_items_total";
pub const INGEST_DUPLICATES: &str = "fumegrid_ingest_duplicates_total";
pub const INGEST_CONFLICTS: &str = "fumegrid_ingest_conflicts_total";
pub const INGEST_HELLOS: &str = "fumegrid_ingest_hellos_total";
pub const INGEST_REJECTS: &str = "fumegrid_ingest_rejects_total";
pub const INGEST_STATUS: &str = "fumegrid_ingest_status_messages_total";
pub const INGEST_ACKS: &str = "fumegrid_ingest_acks_total";
pub const STORE_COMMITS: &str = "fumegrid_store_commits_total";
pub const STORE_ERRORS: &str = "fumegrid_store_errors_total";
pub const CASES_OPENED: &str = "fumegrid_cases_opened_total";
pub const AERIAL_PASSES: &str = "fumegrid_aerial_passes_total";
pub const CASES_REFUSED: &str = "fumegrid_cases_refused_total";
pub const CASES_ALARM_WITHOUT_CASE: &str = "fumegrid_cases_alarm_without_case_total";
pub const BROKER_REFUSED: &str = "fumegrid_broker_refused_total";
pub const BROKER_ACCEPT_ERRORS: &str = "fumegrid_broker_accept_errors_total";
pub const API_PANICS: &str = "fumegrid_api_panics_total";
pub const API_ACCEPT_ERRORS: &str = "fumegrid_api_accept_errors_total";
pub const WEBHOOK_DELIVERIES: &str = "fumegrid_webhook_deliveries_total";
pub const EVIDENCE_PARTS: &str = "fumegrid_evidence_parts_total";
pub const EVIDENCE_COMPLETE: &str = "fumegrid_evidence_pictures_complete_total";
pub const EVIDENCE_REFUSED: &str = "fumegrid_evidence_refused_total";
pub const EVIDENCE_STORED: &str = "fumegrid_evidence_pictures_stored_total";
pub const EVIDENCE_BYTES: &str = "fumegrid_evidence_bytes_stored_total";
pub const EVIDENCE_EXPIRED: &str = "fumegrid_evidence_pictures_expired_total";
pub const EVIDENCE_ERRORS: &str = "fumegrid_evidence_errors_total";
pub const EVIDENCE_SNAPSHOTS: &str = "fumegrid_evidence_snapshot_requests_total";
pub const RETENTION_PASSES: &str = "fumegrid_retention_passes_total";
pub const RETENTION_DELETED: &str = "fumegrid_retention_rows_deleted_total";
pub const RETENTION_RECLAIMED: &str = "fumegrid_retention_bytes_reclaimed_total";
pub const RETENTION_ERRORS: &str = "fumegrid_retention_errors_total";
pub const RETENTION_FROZEN: &str = "fumegrid_retention_frozen_buckets_total";
pub const STORE_FILE_BYTES: &str = "fumegrid_store_file_bytes";
pub const DJI_MESSAGES: &str = "fumegrid_dji_messages_total";
pub const DJI_UNKNOWN_FIELDS: &str = "fumegrid_dji_unknown_fields_total";
pub const DJI_POINTS: &str = "fumegrid_dji_points_total";
pub const DJI_CONNECTED: &str = "fumegrid_dji_mqtt_connected";
pub const DJI_CONNECTION_ERRORS: &str = "fumegrid_dji_mqtt_errors_total";
pub const DJI_REPLIES: &str = "fumegrid_dji_replies_total";

pub const DEFS: &[Def] = &[
    Def {
        name: INGEST_MQTT_CONNECTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Connections of the ingest client to the MQTT broker (CONNACKs received).",
    },
    Def {
        name: INGEST_MQTT_CONNECTED,
        kind: Kind::Gauge,
        labels: &[],
        help: "1 while the ingest client is connected to the broker, else 0.",
    },
    Def {
        name: INGEST_BATCHES,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Batches committed to the store (each is acked to its gateway).",
    },
    Def {
        name: INGEST_ITEMS,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Items stored for the first time.",
    },
    Def {
        name: INGEST_DUPLICATES,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Items received again (a resend) and already stored: acked again, not stored again.",
    },
    Def {
        name: INGEST_CONFLICTS,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Items that arrived under a seq already stored with other content (a gateway outbox that went back in time), kept in the conflicts table and logged at ERROR; counted once per distinct content.",
    },
    Def {
        name: INGEST_HELLOS,
        kind: Kind::Counter,
        labels: &[],
        help: "Gateway hellos answered (the highest seq held for the gateway's stream, see docs/wire.md).",
    },
    Def {
        name: INGEST_REJECTS,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Messages refused, by reason (the `Reason` names of docs/wire.md; every reason is present from the start).",
    },
    Def {
        name: INGEST_STATUS,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Gateway `status` documents (online/offline) received.",
    },
    Def {
        name: INGEST_ACKS,
        kind: Kind::Counter,
        labels: &[],
        help: "Sealed acks handed to the MQTT client for publishing.",
    },
    Def {
        name: STORE_COMMITS,
        kind: Kind::Counter,
        labels: &[],
        help: "Store transactions committed by the ingest (each holds one or more batches).",
    },
    Def {
        name: STORE_ERRORS,
        kind: Kind::Counter,
        labels: &["op"],
        help: "Failed store writes of the ingest: `op` is `commit` (the batches are not acked; gateways resend) or `status`.",
    },
    Def {
        name: CASES_OPENED,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Cases opened: `source` is `alarm` (a gateway alarm) or `report` (filed through the API or Open311).",
    },
    Def {
        name: AERIAL_PASSES,
        kind: Kind::Counter,
        labels: &[],
        help: "Drone passes near a site added to its open cases (one `aerial_pass` event per case; docs/drones.md).",
    },
    Def {
        name: CASES_REFUSED,
        kind: Kind::Counter,
        labels: &["kind"],
        help: "Alarm transitions the case engine refused (logged at WARN; ingest goes on), by alarm kind.",
    },
    Def {
        name: CASES_ALARM_WITHOUT_CASE,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Acked alarm transitions that open or join no case, by `reason`: `suppressed`, `repeat`, `cleared_without_case` (expected), `no_category`, `refused`, `conflict` (logged at WARN).",
    },
    Def {
        name: BROKER_REFUSED,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Clients the embedded broker's gate refused or disconnected, by `reason` (docs/aggregator-config.md, the embedded broker); logged at WARN once per account and reason, then at most once a minute.",
    },
    Def {
        name: BROKER_ACCEPT_ERRORS,
        kind: Kind::Counter,
        labels: &[],
        help: "Failed `accept` calls of the embedded broker's listener (out of file descriptors and the like); logged at most once per 10 s.",
    },
    Def {
        name: API_PANICS,
        kind: Kind::Counter,
        labels: &[],
        help: "HTTP handlers that panicked (a bug): that request got a JSON 500, the daemon carried on; logged at ERROR.",
    },
    Def {
        name: API_ACCEPT_ERRORS,
        kind: Kind::Counter,
        labels: &[],
        help: "Failed `accept` calls of the HTTP API's listener (out of file descriptors and the like); logged at most once per 10 s.",
    },
    Def {
        name: WEBHOOK_DELIVERIES,
        kind: Kind::Counter,
        labels: &["department", "outcome"],
        help: "Webhook delivery attempts: `outcome` is `delivered`, `retried` (failed, will retry), `failed` (given up) or `unrouted` (no webhook for the department).",
    },
    Def {
        name: EVIDENCE_PARTS,
        kind: Kind::Counter,
        labels: &["gateway"],
        help: "Picture parts stored for the first time (each is also an item of `fumegrid_ingest_items_total`).",
    },
    Def {
        name: EVIDENCE_COMPLETE,
        kind: Kind::Counter,
        labels: &[],
        help: "Camera pictures whose parts were all in and whose SHA-256 matched the one taken at capture.",
    },
    Def {
        name: EVIDENCE_REFUSED,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Camera pictures refused on arrival, by `reason`: `hash_mismatch` (the assembled bytes do not hash to the capture's SHA-256; deleted) or `inconsistent` (a part that disagrees with the picture's size or part count; that part dropped). Logged at WARN with gateway and camera; the parts are acked all the same.",
    },
    Def {
        name: EVIDENCE_STORED,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Pictures written to the blob store, by `source`: `camera` (by the evidence mover) or `upload` (through the API).",
    },
    Def {
        name: EVIDENCE_BYTES,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Bytes of original pictures written to the blob store, by `source` (`camera`, `upload`).",
    },
    Def {
        name: EVIDENCE_EXPIRED,
        kind: Kind::Counter,
        labels: &[],
        help: "Pictures deleted by retention (belonging to no case for `[evidence] keep_unlinked_days`, or never complete), blobs with their rows.",
    },
    Def {
        name: EVIDENCE_ERRORS,
        kind: Kind::Counter,
        labels: &["op"],
        help: "Failed evidence operations, by `op`: `move` (blob write or store update of the mover; retried), `expire` (retention; retried), `view` (a derived view could not be made). Logged at ERROR (WARN for `view`).",
    },
    Def {
        name: EVIDENCE_SNAPSHOTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Sealed snapshot commands published to gateways for cases (`POST /api/v1/cases/{id}/snapshot`).",
    },
    Def {
        name: RETENTION_PASSES,
        kind: Kind::Counter,
        labels: &[],
        help: "Retention sweeps completed ([retention], at start and every sweep_interval_s); each logs one line.",
    },
    Def {
        name: RETENTION_DELETED,
        kind: Kind::Counter,
        labels: &["kind"],
        help: "Rows deleted by retention, by `kind`: `raw` (readings), `minute_periods` (60-s periods), `other_periods`, `rollups_1m`, `rollups_10m`, `rollups_1h`, `rollups_1d`. Rows inside a case's evidence window are never deleted.",
    },
    Def {
        name: RETENTION_RECLAIMED,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes of free pages given back to the file system after sweeps (PRAGMA incremental_vacuum).",
    },
    Def {
        name: RETENTION_ERRORS,
        kind: Kind::Counter,
        labels: &[],
        help: "Retention sweeps that failed (logged at ERROR; retried at the next pass, nothing is lost meanwhile).",
    },
    Def {
        name: RETENTION_FROZEN,
        kind: Kind::Counter,
        labels: &[],
        help: "Rollup buckets left as they were because a late item arrived after their sources were swept (the item is stored in its own table; logged at WARN).",
    },
    Def {
        name: STORE_FILE_BYTES,
        kind: Kind::Gauge,
        labels: &[],
        help: "Bytes of the store on disk (the SQLite file and its WAL), after the last retention pass.",
    },
    Def {
        name: DJI_MESSAGES,
        kind: Kind::Counter,
        labels: &["source", "outcome"],
        help: "DJI Cloud API messages read, by `source` (`embedded`, `external`) and `outcome`: `aircraft`, `dock`, `topology`, `event` (used), or why one was ignored: `too_big`, `topic`, `unknown_serial`, `gateway`, `json`, `method`, `no_position` (logged at WARN at most once a minute per reason).",
    },
    Def {
        name: DJI_UNKNOWN_FIELDS,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Envelope keys of DJI Cloud API messages that DJI does not document (ignored).",
    },
    Def {
        name: DJI_POINTS,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "DJI aircraft positions, by `outcome`: `stored` (in a track), `duplicate` (already held for that aircraft and time), `not_newer` (not after the aircraft's last one received), `overflow` (too many waiting while the store failed), `invalid` (refused by the track check; logged at WARN).",
    },
    Def {
        name: DJI_CONNECTED,
        kind: Kind::Gauge,
        labels: &["source"],
        help: "1 while the DJI Cloud API client of `source` is connected to its broker, else 0.",
    },
    Def {
        name: DJI_CONNECTION_ERRORS,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Failed connections (refused, TLS not verified, lost) of the DJI Cloud API client of `source`; retried with backoff up to 10 s, logged at WARN at most once a minute.",
    },
    Def {
        name: DJI_REPLIES,
        kind: Kind::Counter,
        labels: &["source", "outcome"],
        help: "Replies to DJI devices (`status_reply` to an `update_topo`, `events_reply` to an event with `need_reply`), by `source` and `outcome`: `sent` (handed to the MQTT client), `dropped` (its queue was full; the device repeats the message; logged at WARN at most once a minute).",
    },
];

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
