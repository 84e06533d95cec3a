//! A district in miniature for delivery tests: an aggregator config with one gateway account,
//! a gateway config polling a simulated TCP fleet, and the aggregator's store read back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fumegrid_gateway::outbox::{Outbox, OutboxConfig, SledOutbox};

use crate::*;

pub const KEY: &str = "4f1c2a9be07d3356a8c1f0e2d4b6a8c0e2f4a6b8d0c2e4f6a8b0c2d4e6f8a0b2";
pub const GW: &str = "gw-e2e";
pub const PASS: &str = "gw-e2e-password";

/// API tokens of the site's aggregator (`tokens.toml` holds only their SHA-256).
pub const OPERATOR_TOKEN: &str = "e2e-operator-token-0001";
pub const VIEWER_TOKEN: &str = "e2e-viewer-token-0001";
/// Department `epb` of the built-in catalogue.
pub const EPB_TOKEN: &str = "e2e-epb-token-0001";
/// Department `urban`.
pub const URBAN_TOKEN: &str = "e2e-urban-token-0001";
const TOKENS_TOML: &str = "[[tokens]]\nname = \"desk\"\nrole = \"operator\"\n\
    sha256 = \"9b4851cf4702a05e441db3ba4bd49e46d397dbc5187afe7075bf76e55f401fae\"\n\
    [[tokens]]\nname = \"leader\"\nrole = \"viewer\"\n\
    sha256 = \"bc740880efdeec5316c116a449659a6d1875ebe3b71c4cf5a6441c12f3292cf1\"\n\
    [[tokens]]\nname = \"epb-duty\"\nrole = \"department\"\ndepartment = \"epb\"\n\
    sha256 = \"51c4ae44a4a46ba738a2ce0a5cd57abbd260dd824caf00d8807f34724ed4012c\"\n\
    [[tokens]]\nname = \"urban-duty\"\nrole = \"department\"\ndepartment = \"urban\"\n\
    sha256 = \"6be0fa4c6c16208432b1fbfb467fdc4c670772afd43482649f2d3f49a7282a26\"\n";

/// `curl` of the site's API as `token`: (HTTP status, JSON body or Null).
pub fn api_call(
    api: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("http://127.0.0.1:{api}{path}"));
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// `GET` as the site's viewer; Null when the API does not answer.
pub fn api_get(api: u16, path: &str) -> serde_json::Value {
    api_call(api, "GET", path, Some(VIEWER_TOKEN), None).1
}

#[derive(Debug)]
pub struct Site {
    pub dir: TempDir,
    pub mqtt: u16,
    pub api: u16,
}

impl Site {
    pub fn new(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        std::fs::write(dir.join("gw.key"), KEY).expect("key");
        std::fs::write(dir.join("mqtt.pass"), PASS).expect("pass");
        std::fs::write(
            dir.join("users.toml"),
            format!("[[users]]\nusername = \"{GW}\"\npassword = \"{PASS}\"\n"),
        )
        .expect("users");
        Site {
            dir,
            mqtt: free_port(),
            api: free_port(),
        }
    }

    pub fn aggregator_config(&self, broker: &str) -> PathBuf {
        self.aggregator_config_with(broker, "")
    }

    /// [`Site::aggregator_config`] plus `extra` TOML at the end (e.g. a `[cases]` section).
    pub fn aggregator_config_with(&self, broker: &str, extra: &str) -> PathBuf {
        std::fs::write(self.dir.join("tokens.toml"), TOKENS_TOML).expect("tokens");
        let p = self.dir.join("aggregator.toml");
        std::fs::write(
            &p,
            format!(
                "[aggregator]\nid = \"agg-e2e\"\n[store]\npath = \"agg.sqlite3\"\n[api]\nlisten = \"127.0.0.1:{}\"\n\
                 tokens_file = \"tokens.toml\"\n{broker}\n\
                 [[gateways]]\nid = \"{GW}\"\nkey = \"{KEY}\"\n{extra}",
                self.api
            ),
        )
        .expect("aggregator config");
        p
    }

    pub fn embedded(&self) -> PathBuf {
        self.embedded_with("")
    }

    /// [`Site::embedded`] plus `extra` TOML.
    pub fn embedded_with(&self, extra: &str) -> PathBuf {
        self.aggregator_config_with(
            &format!(
                "[broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{}\"\ncredentials_file = \"users.toml\"\n",
                self.mqtt
            ),
            extra,
        )
    }

    pub fn aggregator(&self, config: &Path) -> Proc {
        let mut cmd = Command::new(bin("fumegrid-aggregator"));
        cmd.args(["run", "--log-format", "json", "--config"])
            .arg(config);
        let mut p = Proc::spawn("fumegrid-aggregator", cmd);
        p.wait_for("broker:", Duration::from_secs(20));
        p
    }

    /// Gateway config: `devices` TCP monitors on consecutive ports from `base`, uplink to `port`;
    /// every poll sent as readings (`[report] strategy = "raw"`): these tests count readings
    /// (periods have their own, `e2e_lifecycle`).
    pub fn gateway_config(
        &self,
        port: u16,
        base: u16,
        devices: u16,
        poll_ms: u64,
        backlog_per_s: u32,
    ) -> PathBuf {
        let mut c = format!(
            "[gateway]\nid = \"{GW}\"\npoll_interval_ms = {poll_ms}\nprobe_interval_ms = 600000\n\
             [outbox]\npath = \"outbox\"\nflush_interval_ms = 200\n\
             [uplink]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"{GW}\"\npassword_file = \"mqtt.pass\"\n\
             key_file = \"gw.key\"\nkeep_alive_s = 5\nack_timeout_s = 3\nbatch_max_items = 300\nbacklog_items_per_s = {backlog_per_s}\ncompress = false\n\
             [report]\nstrategy = \"raw\"\n"
        );
        let profile = root().join("device-profiles/tb-compatible.toml");
        for i in 0..devices {
            c += &format!(
                "[[devices]]\nid = \"m{i:02}\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:{}\"\n",
                profile.display(),
                base + i
            );
        }
        let p = self.dir.join("gateway.toml");
        std::fs::write(&p, c).expect("gateway config");
        p
    }

    /// Writes `catalogue.toml` (the built-in catalogue with `epb`'s webhook pointed at
    /// 127.0.0.1:`hook_port`, then `edit`) and `webhooks.toml` (`epb`'s `secret`), for
    /// `[cases] catalogue` and `webhook_secrets_file`.
    pub fn epb_webhook(&self, hook_port: u16, secret: &str, edit: impl FnOnce(String) -> String) {
        let out = Command::new(bin("fumegrid-aggregator"))
            .arg("print-default-catalogue")
            .output()
            .expect("print-default-catalogue");
        let catalogue = String::from_utf8(out.stdout).expect("utf8").replacen(
            "# webhook_url = \"https://epb.example.gov.cn/hooks/fumegrid\"",
            &format!("webhook_url = \"http://127.0.0.1:{hook_port}/hooks/fumegrid\""),
            1,
        );
        std::fs::write(self.dir.join("catalogue.toml"), edit(catalogue)).expect("catalogue");
        std::fs::write(
            self.dir.join("webhooks.toml"),
            format!("[[webhooks]]\ndepartment = \"epb\"\nsecret = \"{secret}\"\n"),
        )
        .expect("secrets");
    }

    /// Monitor `m00` (profile tb-compatible) playing `scenario` at `speed` with its simulated
    /// HTTP snapshot camera, and a gateway polling it every `poll_ms` with `rules` (TOML tables
    /// put before `[outbox]`, may be empty) and one camera `camera` bound to m00. Returns the
    /// simulator and the gateway.
    pub fn monitor_with_camera(
        &self,
        scenario: &str,
        speed: f64,
        poll_ms: u64,
        rules: &str,
        camera: &str,
    ) -> (Proc, Proc) {
        let port = consecutive_free_ports(1);
        let cams = free_port();
        let profile = root().join("device-profiles/tb-compatible.toml");
        let monitor = sim(&[
            "monitor",
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--profile",
            profile.to_str().expect("path"),
            "--scenario",
            scenario,
            "--speed",
            &speed.to_string(),
            "--duration",
            "900",
            "--cameras",
            &format!("127.0.0.1:{cams}"),
            "--camera",
            "m00=1",
        ]);
        let config = self.gateway_config(self.mqtt, port, 1, poll_ms, 50_000);
        let text = std::fs::read_to_string(&config).expect("gateway config");
        let text = text.replacen("[outbox]", &format!("{rules}[outbox]"), 1)
            + &format!(
                "[[cameras]]\nid = \"{camera}\"\ndevices = [\"m00\"]\n\
                 snapshot_url = \"http://127.0.0.1:{cams}/camera/m00.jpg\"\ntimeout_ms = 5000\n"
            );
        std::fs::write(&config, text).expect("gateway config");
        (monitor, self.gateway(&config))
    }

    pub fn gateway(&self, config: &Path) -> Proc {
        let mut cmd = Command::new(bin("fumegrid-gateway"));
        cmd.args([
            "run",
            "--log-format",
            "json",
            "--log",
            "info,reading=off",
            "--config",
        ])
        .arg(config);
        Proc::spawn("fumegrid-gateway", cmd)
    }

    /// (items stored, lowest seq, highest seq) of the gateway's stream(s) in the aggregator.
    pub fn stored(&self) -> (u64, u64, u64, usize) {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.join("agg.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        );
        let Ok(db) = db else { return (0, 0, 0, 0) };
        let _ = db.busy_timeout(Duration::from_secs(5));
        let row = db.query_row(
            // What each stream holds is a set of seq ranges (schema 15, `store/dedupe.rs`).
            "SELECT coalesce(sum(r.last_seq - r.first_seq + 1), 0), coalesce(min(r.first_seq), 0), \
               coalesce(max(r.last_seq), 0), count(DISTINCT r.stream_id) \
             FROM stream_ranges r JOIN streams ON streams.id = r.stream_id WHERE streams.gateway = ?1",
            [GW],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as usize)),
        );
        row.unwrap_or((0, 0, 0, 0))
    }

    /// Readings stored more than once (by stream and seq) — must be none.
    pub fn duplicate_readings(&self) -> u64 {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.join("agg.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open store");
        db.query_row(
            "SELECT count(*) FROM (SELECT stream_id, seq FROM readings GROUP BY stream_id, seq HAVING count(*) > 1)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("query") as u64
    }

    /// Waits (bounded) until more items are stored than `than`.
    pub fn wait_growth(&self, than: u64, what: &str) {
        wait_until(
            &format!("items stored after {what} (more than {than})"),
            Duration::from_secs(20),
            || {
                let s = self.stored();
                if s.0 > than { Ok(()) } else { Err(s) }
            },
        );
    }

    /// Waits until the stored seqs are contiguous from 1 and have not grown for `quiet`.
    pub fn wait_settled(&self, quiet: Duration, limit: Duration) -> (u64, u64, u64, usize) {
        let mut last = self.stored();
        let mut since = crate::now();
        wait_until("the store to settle (seqs 1..=n, no growth)", limit, || {
            let now = self.stored();
            if now != last {
                (last, since) = (now, crate::now());
            } else if now.0 > 0 && now.0 == now.2 && crate::now() - since >= quiet {
                return Ok(now);
            }
            Err(now)
        })
    }

    pub fn outbox_after_stop(&self) -> (u64, u64) {
        let (o, _) = SledOutbox::open(
            &self.dir.join("outbox"),
            OutboxConfig {
                max_bytes: 256 << 20,
                flush_interval_ms: 1000,
                ..OutboxConfig::default()
            },
        )
        .expect("reopen outbox");
        let s = o.stats();
        (s.items, s.next_seq)
    }
}

pub fn fleet(base: u16, count: u16) -> Proc {
    sim(&[
        "fleet",
        "--tcp",
        &format!("127.0.0.1:{base}"),
        "--count",
        &count.to_string(),
        "--profile",
        root()
            .join("device-profiles/tb-compatible.toml")
            .to_str()
            .expect("path"),
        "--scenario",
        "normal",
        "--duration",
        "300",
    ])
}

pub fn consecutive_free_ports(n: u16) -> u16 {
    loop {
        let base = free_port();
        if base < 60000
            && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// The fenced block after `<!-- {marker} -->` in docs/aggregator-config.md: the tests run
/// mosquitto with exactly what the docs tell an operator to write.
pub fn documented(marker: &str) -> String {
    let doc = std::fs::read_to_string(root().join("docs/aggregator-config.md")).expect("docs");
    let (_, rest) = doc
        .split_once(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("no `{marker}` block in docs/aggregator-config.md"));
    let (_, fenced) = rest.split_once("```").expect("fenced block");
    let (_, body) = fenced.split_once('\n').expect("fence line");
    let (body, _) = body.split_once("```").expect("closing fence");
    body.to_string()
}

/// Writes mosquitto's password file `pw` with these accounts (mosquitto_passwd hashes them).
pub fn mosquitto_passwords(pw: &Path, accounts: &[(&str, &str)]) {
    for (i, (user, pass)) in accounts.iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        let st = c
            .arg(pw)
            .arg(user)
            .arg(pass)
            .status()
            .expect("mosquitto_passwd (scripts/install-test-deps.sh)");
        assert!(st.success());
    }
}

/// mosquitto on `port` with password auth and the documented ACLs and settings (a second wall
/// besides the MAC): accounts for the gateway, the aggregator (`agg-pass`, also written to
/// `agg.pass`), an `intruder`, and a read-only `observer` for the tests' own `mosquitto_sub`.
pub fn mosquitto(site: &Site, port: u16) -> Proc {
    let pw = site.dir.join("mosquitto.passwd");
    mosquitto_passwords(
        &pw,
        &[
            (GW, PASS),
            ("fumegrid-aggregator", "agg-pass"),
            ("intruder", "intruder-pass"),
            ("observer", "observer-pass"),
        ],
    );
    let acl = site.dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        format!(
            "user observer\ntopic read fumegrid/#\n\n{}",
            documented("mosquitto-acl")
        ),
    )
    .expect("acl");
    let conf = site.dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\npassword_file {}\nacl_file {}\npersistence false\n{}",
            pw.display(),
            acl.display(),
            documented("mosquitto-conf")
        ),
    )
    .expect("conf");
    std::fs::write(site.dir.join("agg.pass"), "agg-pass\n").expect("pass");
    let mosq = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto".into()
    } else {
        "mosquitto".to_string()
    };
    let mut cmd = Command::new(mosq);
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn("mosquitto", cmd);
    wait_until("mosquitto to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}
