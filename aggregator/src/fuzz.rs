//! Fuzz targets for every parser of outside input in the aggregator: API bodies, query
//! strings and path ids, Open311 forms and dates, citizens' free text (personal-data
//! redaction), ingest's wire payloads, DJI Cloud API messages, patrol-find bodies, config,
//! catalogue and token files. See [`fumegrid_common::fuzz`] for how they are run (cargo-fuzz in `fuzz/`,
//! bounded proptest runs in the tests below).

use std::sync::OnceLock;

use fumegrid_common::diag::Source;
use fumegrid_common::fuzz::{FUZZ_KEY, split_line};

use crate::api::params::{self, parse_query};
use crate::api::work::{NewCase, parse_body};
use crate::cases::calendar::{Date, WorkAmount, add_working};
use crate::cases::{Catalogue, Command};
use crate::ingest::validate::Keys;
use crate::ingest::validate::{self, Limits};

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| Catalogue::builtin().expect("the built-in catalogue is valid"))
}

/// `POST` bodies: a transition command and a filed case. A command that parses re-parses
/// from its own JSON to the same command.
pub fn api_body(data: &[u8]) {
    if let Ok(cmd) = parse_body::<Command>(data) {
        let json = serde_json::to_vec(&cmd).expect("a command serialises");
        let back: Command = parse_body(&json).expect("a command's own JSON parses");
        assert_eq!(back, cmd);
    }
    if let Ok(n) = parse_body::<NewCase>(data) {
        let _ = n.check();
    }
}

/// Query strings of every `GET` list endpoint, checked as the handlers check them, and the
/// path ids (`{device}`, `{id}`).
pub fn api_query(data: &[u8]) {
    let q = String::from_utf8_lossy(data);
    let cat = catalogue();
    if let Ok(p) = parse_query::<params::ReadingsParams>(&q) {
        let _ = crate::api::parse_readings_query(q.to_string(), p);
    }
    if let Ok(p) = parse_query::<params::AlarmParams>(&q) {
        let _ = crate::api::parse_alarm_query(None, p);
    }
    if let Ok(p) = parse_query::<params::DeviceAlarmParams>(&q) {
        let _ = crate::api::parse_alarm_query(Some(q.to_string()), p.into());
    }
    if let Ok(p) = parse_query::<params::CaseParams>(&q) {
        let _ = crate::api::parse_case_query(p, cat);
    }
    let _ = parse_query::<params::PeriodParams>(&q);
    let _ = parse_query::<params::NotificationParams>(&q);
}

/// Working amounts (`"3d"`), dates, and deadlines computed from them: never a panic, never a
/// deadline before its start, an amount prints back to itself.
pub fn calendar(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = text.parse::<WorkAmount>() {
        assert_eq!(a.to_string().parse::<WorkAmount>(), Ok(a));
        let cal = &catalogue().calendar;
        let start = 1_762_131_600_000; // 2025-11-03T09:00+08:00
        if let Ok(end) = add_working(start, a, cal) {
            assert!(end >= start);
        }
    }
    if let Ok(d) = text.parse::<Date>() {
        assert_eq!(d.to_string().parse::<Date>(), Ok(d));
    }
}

/// Open311: a POST form, a GET query (both `application/x-www-form-urlencoded`), and W3C
/// date-times.
pub fn open311(data: &[u8]) {
    let cat = catalogue();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    if let Ok(form) = crate::api::open311::RequestForm::from_pairs(pairs.clone()) {
        let _ = crate::api::open311::parse_request(&form, cat);
    }
    let query = pairs.iter().cloned().collect();
    let _ = crate::api::open311::parse_selection(&query, cat, 1_762_131_600_000);
    let text = String::from_utf8_lossy(data);
    if let Some((from, to)) = crate::api::open311::parse_w3c(&text, 480) {
        assert!(to > 0, "{text}: {from} lasts {to}");
    }
    open311_multipart(data);
}

/// A `multipart/form-data` POST with a photo: the first line is the `Content-Type`, the rest
/// the body. Never a panic; what is accepted keeps to the limits (each text part and all of
/// them within [`MAX_FIELDS_BYTES`], the photo within its limit) and its type check never
/// panics either.
///
/// [`MAX_FIELDS_BYTES`]: crate::api::open311::MAX_FIELDS_BYTES
fn open311_multipart(data: &[u8]) {
    use crate::api::open311::{MAX_FIELDS_BYTES, MultipartLimits, multipart_fields, photo_type};
    let (first, body) = split_line(data);
    let content_type = String::from_utf8_lossy(first);
    let limits = MultipartLimits::new(Some(2048));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let stream = axum::body::Body::from(body.to_vec()).into_data_stream();
    if let Ok((pairs, photo)) = rt.block_on(multipart_fields(&content_type, stream, limits)) {
        let text: usize = pairs.iter().map(|(_, v)| v.len()).sum();
        assert!(text as u64 <= MAX_FIELDS_BYTES, "{text} bytes of fields");
        if let Some(p) = photo {
            assert!(
                p.bytes.len() as u64 <= limits.photo,
                "{} bytes",
                p.bytes.len()
            );
            let _ = photo_type(&p);
        }
    }
}

/// Citizens' free text (an Open311 description, a reporter's note) through the personal-data
/// redaction: never a panic, no run of digits long enough to be a phone or ID number left, no
/// `@`-address left, and a second pass changes nothing.
pub fn redact(data: &[u8]) {
    use crate::cases::privacy::{MIN_DIGITS, redact};
    let text = String::from_utf8_lossy(data);
    let r = redact(&text);
    assert_eq!(redact(&r.text).text, r.text, "not idempotent on {text:?}");
    let mut run = 0usize;
    for c in r.text.chars() {
        run = if c.is_ascii_digit() || ('０'..='９').contains(&c) {
            run + 1
        } else {
            0
        };
        assert!(run < MIN_DIGITS, "{MIN_DIGITS} digits left in {:?}", r.text);
    }
    assert_eq!(r.changed(), r.text != text);
}

/// Ingest: a topic (first line) and an `up` or `status` payload (the rest), as the broker
/// delivers them.
pub fn ingest(data: &[u8]) {
    let (topic, payload) = split_line(data);
    let topic = String::from_utf8_lossy(topic);
    let keys = Keys::new([("gw-fuzz".to_string(), FUZZ_KEY.to_vec())]);
    let limits = Limits {
        max_payload_bytes: 1 << 20,
        max_items: 1000,
    };
    let _ = validate::validate_up_or_hello(&topic, payload, &keys, limits);
    let _ = validate::validate_status(&topic, payload, &keys, 1_800_000_000_000);
}

/// DJI Cloud API: a topic (first line) and a payload (the rest), against a registry with one
/// dock and its aircraft. A point that comes out has a position in range and a battery ≤ 100;
/// a dock's position is in range; a reply goes to that dock's reply topic with result 0.
pub fn dji(data: &[u8]) {
    use crate::dji::parse::{Dock, Message, Registry, parse};
    static REG: OnceLock<Registry> = OnceLock::new();
    let reg = REG.get_or_init(|| {
        Registry::new([Dock {
            sn: "4TADKAQ000002J".into(),
            aircraft: vec!["1581F5BKD225D00BP891".into()],
        }])
    });
    let (topic, payload) = split_line(data);
    let topic = String::from_utf8_lossy(topic);
    let Ok(p) = parse(&topic, payload, reg, 1_667_220_880_000) else {
        return;
    };
    // A reply goes to the registered dock's own reply topic, as DJI's struct with result 0.
    if let Some(r) = &p.reply {
        assert!(
            r.topic == "sys/product/4TADKAQ000002J/status_reply"
                || r.topic == "thing/product/4TADKAQ000002J/events_reply",
            "{}",
            r.topic
        );
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("a reply is JSON");
        assert_eq!(v["data"]["result"], 0);
    }
    match p.message {
        Message::Aircraft { point, .. } => {
            assert!((-90.0..=90.0).contains(&point.lat) && (-180.0..=180.0).contains(&point.lon));
            assert!(point.battery_pct.is_none_or(|b| b <= 100));
            assert!(point.heading_deg.is_none_or(|h| (0.0..360.0).contains(&h)));
        }
        Message::Dock {
            position: Some(d), ..
        } => {
            assert!((-90.0..=90.0).contains(&d.lat) && (-180.0..=180.0).contains(&d.lon));
            assert!(d.height_m.is_none_or(f64::is_finite));
        }
        _ => {}
    }
}

/// `POST /api/v1/patrol-finds` bodies, parsed and checked as the handler does
/// ([`crate::api::drones::parse_patrol_find`]). A find that is accepted has a position in
/// range, a title that is not blank and at most 200 characters, a time not after now + 1 min
/// and a drone id by the rule; its own JSON parses back to the same find.
pub fn patrol_find(data: &[u8]) {
    use crate::api::drones::parse_patrol_find;
    const NOW: i64 = 1_762_135_200_000;
    let Ok(f) = parse_patrol_find(data, NOW) else {
        return;
    };
    assert!((-90.0..=90.0).contains(&f.lat) && (-180.0..=180.0).contains(&f.lon));
    assert!(!f.title.trim().is_empty() && f.title.chars().count() <= 200);
    assert!(f.category.chars().count() <= 128 && f.note.chars().count() <= 4000);
    assert!(f.observed_ms <= NOW + 60_000);
    assert!(
        f.drone
            .as_deref()
            .is_none_or(|d| validate::check_drone_id(d).is_ok())
    );
    let json = serde_json::to_vec(&f).expect("a find serialises");
    let back = parse_patrol_find(&json, NOW).expect("a find's own JSON parses");
    assert_eq!(back, f);
}

/// The aggregator's config, a case catalogue and an API tokens file (TOML).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ =
        crate::config::Config::from_source(&Source::new("/nonexistent/fuzz.toml", text.clone()));
    let _ = Catalogue::from_source(&Source::new("fuzz-catalogue.toml", text.clone()));
    let _ = crate::auth::Tokens::from_source(&Source::new("fuzz-tokens.toml", text), catalogue());
}

#[cfg(test)]
mod tests {
    use fumegrid_common::fuzz::{config as pconfig, seeded, seeds};
    use proptest::prelude::*;

    use super::*;

    /// Every target over its whole seed corpus.
    #[test]
    fn seeds_pass() {
        for (name, target) in TARGETS {
            for s in seeds(name) {
                target(&s);
            }
        }
    }

    type Target = (&'static str, fn(&[u8]));

    const TARGETS: [Target; 9] = [
        ("api_body", api_body),
        ("api_query", api_query),
        ("calendar", calendar),
        ("open311", open311),
        ("redact", redact),
        ("ingest", ingest),
        ("config", config),
        ("dji", dji),
        ("patrol_find", patrol_find),
    ];

    proptest! {
        #![proptest_config(pconfig())]
        #[test]
        fn api_body_bounded(d in seeded("api_body")) { api_body(&d) }
        #[test]
        fn api_query_bounded(d in seeded("api_query")) { api_query(&d) }
        #[test]
        fn calendar_bounded(d in seeded("calendar")) { calendar(&d) }
        #[test]
        fn open311_bounded(d in seeded("open311")) { open311(&d) }
        #[test]
        fn redact_bounded(d in seeded("redact")) { redact(&d) }
        #[test]
        fn ingest_bounded(d in seeded("ingest")) { ingest(&d) }
        #[test]
        fn config_bounded(d in seeded("config")) { config(&d) }
        #[test]
        fn dji_bounded(d in seeded("dji")) { dji(&d) }
        #[test]
        fn patrol_find_bounded(d in seeded("patrol_find")) { patrol_find(&d) }
    }
}
