//! The HTTP API against a real aggregator process: no request crashes it, slow clients do not
//! stop it (nor the broker next to it).

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use fumegrid_tests::site::{OPERATOR_TOKEN, Site, api_call};
use fumegrid_tests::*;

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Regression (issue 11, item 0): `{"action":"extend","by":"1é"}` sliced the amount at a byte
/// index, panicked, and with `panic = "abort"` took the API, broker and ingest down. Now the
/// process answers 400 and carries on; the extension caps are 400/409, never a year 371792.
#[test]
fn a_bad_extension_amount_is_a_400_not_a_crash() {
    let site = Site::new("api-crash");
    let cfg = site.embedded();
    let agg = site.aggregator(&cfg);
    let (s, v) = api_call(
        site.api,
        "POST",
        "/api/v1/cases",
        Some(OPERATOR_TOKEN),
        Some(r#"{"category":"complaint","title":"smoke behind the market"}"#),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["case"]["id"].as_str().expect("case id").to_string();
    let tr = format!("/api/v1/cases/{id}/transitions");
    for (body, want) in [
        (r#"{"action":"register"}"#, 200),
        (r#"{"action":"dispatch"}"#, 200),
        (r#"{"action":"extend","by":"1é"}"#, 400),
        (r#"{"action":"extend","by":"é"}"#, 400),
        (r#"{"action":"extend","by":"10000d"}"#, 400),
        (r#"{"action":"extend","by":"1d","bye":1}"#, 400),
    ] {
        let (s, v) = api_call(site.api, "POST", &tr, Some(OPERATOR_TOKEN), Some(body));
        assert_eq!(s, want, "{body}: {v}");
        if want == 400 {
            assert!(v["error"].is_string(), "{body}: {v}");
        }
    }
    // Unknown case: 404, also alive.
    let (s, _) = api_call(
        site.api,
        "POST",
        "/api/v1/cases/anything/transitions",
        Some(OPERATOR_TOKEN),
        Some(r#"{"action":"extend","by":"1é"}"#),
    );
    assert_eq!(s, 404);
    // Repeated maximal extensions stop at a year ahead with 409; the deadline stays a date.
    let mut last = 0;
    for _ in 0..20 {
        let (s, v) = api_call(
            site.api,
            "POST",
            &tr,
            Some(OPERATOR_TOKEN),
            Some(r#"{"action":"extend","by":"30d"}"#),
        );
        last = s;
        if s == 409 {
            assert!(
                v["error"].as_str().expect("msg").contains("days ahead"),
                "{v}"
            );
            break;
        }
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(last, 409, "extensions must stop within a year");
    assert!(alive(agg.pid()), "the aggregator died");
    let (s, v) = api_call(site.api, "GET", "/healthz", None, None);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
}

/// Connects to the broker with the site's gateway account and publishes once at QoS 1 (waits
/// for the PUBACK): the broker accepts and serves connections.
fn broker_serves(site: &Site) -> bool {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &site.mqtt.to_string(),
            "-u",
            site::GW,
            "-P",
            site::PASS,
            "-i",
            site::GW,
            "-q",
            "1",
            "-t",
            &format!("fumegrid/v1/{}/status", site::GW),
            "-m",
            "probe",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Regression (issue 11, item 3): 1,100 half-open requests (headers never finished) against an
/// aggregator with systemd's default 1024 descriptors used them all up; the API and the broker
/// stopped accepting. Now connections are capped and a client that does not finish its headers
/// in `header_timeout_ms` is dropped.
#[test]
fn a_slowloris_does_not_stop_the_api_or_the_broker() {
    let site = Site::new("api-slowloris");
    let cfg = site.embedded_with("");
    // The [api] section is written by the site; add the timeout in it.
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replacen("[api]\n", "[api]\nheader_timeout_ms = 1000\n", 1);
    std::fs::write(&cfg, text).expect("config");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" run --log-format json --config \"$1\"")
        .arg(bin("fumegrid-aggregator"))
        .arg(&cfg);
    let mut agg = Proc::spawn("fumegrid-aggregator", cmd);
    agg.wait_for("broker:", Duration::from_secs(20));
    assert!(broker_serves(&site), "broker before the attack");

    let mut held = Vec::new();
    for _ in 0..1100 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", site.api)) else {
            break;
        };
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        held.push(s);
    }
    assert_eq!(held.len(), 1100, "the kernel queues every connection");

    // While all 1,100 are still open on our side: the broker and the API answer.
    let deadline = fumegrid_tests::now() + Duration::from_secs(30);
    let mut api_ok = false;
    let mut broker_ok = false;
    while fumegrid_tests::now() < deadline && !(api_ok && broker_ok) {
        broker_ok = broker_ok || broker_serves(&site);
        api_ok = api_ok || api_call(site.api, "GET", "/healthz", None, None).0 == 200;
    }
    assert!(broker_ok, "the broker stopped serving during the slowloris");
    assert!(api_ok, "the API stopped serving during the slowloris");
    assert!(alive(agg.pid()));
    drop(held);
}

/// The OpenAPI document and the server agree (issue 11, item 3): schemathesis (pinned in
/// scripts/install-test-deps.sh) generates requests from `/api/v1/openapi.json` with every
/// role's token and checks every answer's status, content type, headers and schema, that
/// schema-violating requests are refused and that nothing is a 5xx. A bounded run (5 examples
/// per operation); BENCHMARKS.md records longer ones (`FUMEGRID_SCHEMATHESIS_EXAMPLES=100`).
/// Not checked: that every schema-valid request is accepted (`positive_data_acceptance`): the
/// API refuses what a schema cannot say (`from` before `to`, ids that are not in the
/// catalogue, text over its length limit). Open311 is included: its errors are GeoReport
/// `[{code, description}]` lists (XML for `.xml`).
#[test]
fn the_server_answers_as_its_openapi_document_says() {
    let st = venv_python().with_file_name("schemathesis");
    assert!(
        st.exists(),
        "{} missing: run scripts/install-test-deps.sh",
        st.display()
    );
    let site = Site::new("api-schemathesis");
    let cfg = site.embedded();
    let agg = site.aggregator(&cfg);
    let url = format!("http://127.0.0.1:{}/api/v1/openapi.json", site.api);
    // The longer run in BENCHMARKS.md sets FUMEGRID_SCHEMATHESIS_EXAMPLES.
    let examples =
        std::env::var("FUMEGRID_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "5".to_string());
    for token in [
        Some(OPERATOR_TOKEN),
        Some(site::VIEWER_TOKEN),
        Some(site::EPB_TOKEN),
        None,
    ] {
        let mut cmd = Command::new(&st);
        cmd.args([
            "run",
            &url,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            &examples,
            "--seed",
            "1",
            "--no-color",
        ])
        .current_dir(site.dir.path());
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let started = fumegrid_tests::now();
        let out = cmd.output().expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .skip_while(|l| !l.contains("Test cases:"))
            .nth(1)
            .unwrap_or("")
            .trim();
        eprintln!(
            "schemathesis {token:?}: {summary} in {:.0} s",
            (fumegrid_tests::now() - started).as_secs_f64()
        );
        assert!(
            out.status.success(),
            "schemathesis with {token:?} found problems:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(alive(agg.pid()));
}
