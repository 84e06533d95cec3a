//! Harness for fumegrid's end-to-end tests: real processes (our binaries, socat, pymodbus,
//! mbpoll) on real ptys and loopback sockets.
//!
//! `scripts/test.sh` installs the peers and builds the binaries first; it exports
//! `FUMEGRID_BIN_DIR` (our binaries) and `FUMEGRID_TEST_VENV` (pymodbus). Every process started
//! here is killed when its handle drops, and every wait is bounded: a test waits for something
//! to happen with [`wait_until`] (a condition, a deadline, what was seen last), never a fixed sleep.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod camera;
pub mod mqtt;
pub mod site;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn profiles_dir() -> PathBuf {
    root().join("device-profiles")
}

/// Every shipped profile file, sorted.
pub fn shipped_profiles() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(profiles_dir())
        .expect("device-profiles/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// Path of one of our binaries (built by `scripts/test.sh` before the tests run).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("FUMEGRID_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/test.sh (it builds the binaries first)",
        p.display()
    );
    p
}

/// Python of the test venv with pymodbus (made by scripts/install-test-deps.sh).
pub fn venv_python() -> PathBuf {
    let dir = std::env::var_os("FUMEGRID_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/test-venv"));
    let p = dir.join("bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/install-test-deps.sh",
        p.display()
    );
    p
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fumegrid-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a [`wait_until`] probe returns: done (with a value) or not yet (with what it saw, for
/// the failure message). `bool`, `Option<T>` and `Result<T, E: Debug>` are probes.
pub trait Probe<T> {
    fn done(self) -> Result<T, String>;
}

impl Probe<()> for bool {
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Probe<T> for Option<T> {
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: std::fmt::Debug> Probe<T> for Result<T, E> {
    fn done(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// The harness's one clock. End-to-end tests time real processes, so this is the machine's
/// monotonic clock; `clippy.toml` bans reading it anywhere else (the daemons read theirs through
/// `fumegrid_common::clock::Clock`).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// How often [`wait_until`] looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// The one way a test waits for something to happen: calls `probe` every [`POLL`] until it is
/// done and returns its value; after `limit` panics naming `what` and what the probe saw last.
pub fn wait_until<T, P: Probe<T>>(what: &str, limit: Duration, mut probe: impl FnMut() -> P) -> T {
    let deadline = now() + limit;
    loop {
        let last = match probe().done() {
            Ok(v) => return v,
            Err(last) => last,
        };
        assert!(
            now() < deadline,
            "timed out after {limit:?} waiting for {what}; last seen: {}",
            fumegrid_common::text::clip(&last, 4000)
        );
        std::thread::sleep(POLL);
    }
}

/// A free TCP port on loopback (bind to :0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed on drop; its stdout is read line by line in a thread.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::process::ChildStderr>,
}

impl Proc {
    /// Starts `cmd` with stdout piped (and stderr piped unless `inherit_stderr`).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take();
        Proc {
            name: name.to_string(),
            child,
            lines: rx,
            stderr,
        }
    }

    /// Waits for a stdout line containing `needle`; returns it. Panics after `timeout` with
    /// what the process wrote.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let err = self.take_stderr();
        panic!(
            "{}: no `{needle}` within {timeout:?}\nstdout:\n{}\nstderr:\n{err}",
            self.name,
            seen.join("\n")
        );
    }

    /// Everything the process wrote to stderr (waits for it to exit; kill it first if needed).
    pub fn take_stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits for the process to exit by itself within `timeout`; returns (success, stderr).
    pub fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        // Drain stderr in a thread so a chatty process cannot block on a full pipe.
        let stderr = self.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let deadline = now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => break None,
            }
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let err = reader.join().unwrap_or_default();
        match status {
            Some(st) => (st.success(), err),
            None => panic!(
                "{} did not exit within {timeout:?}\nstderr:\n{err}",
                self.name
            ),
        }
    }

    /// Remaining stdout lines (after exit).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pty pair made by socat (independent of our code): write to `a`, read at `b`.
#[derive(Debug)]
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    _socat: Proc,
}

impl PtyPair {
    pub fn new(dir: &TempDir, tag: &str) -> PtyPair {
        let a = dir.join(&format!("{tag}-a"));
        let b = dir.join(&format!("{tag}-b"));
        let mut cmd = Command::new("socat");
        cmd.arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()));
        let socat = Proc::spawn("socat", cmd);
        wait_until(
            &format!("socat to create {} and {}", a.display(), b.display()),
            Duration::from_secs(5),
            || a.exists() && b.exists(),
        );
        PtyPair {
            a,
            b,
            _socat: socat,
        }
    }
}

/// Starts `fumegrid-sim` with `args` and waits for its `ready` line.
pub fn sim(args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("fumegrid-sim"));
    cmd.args(args);
    let mut p = Proc::spawn("fumegrid-sim", cmd);
    p.wait_for("ready", Duration::from_secs(10));
    p
}

/// Starts the pymodbus peer (tests/peers/pymodbus_server.py) and waits for `ready`.
pub fn pymodbus(args: &[&str]) -> Proc {
    let mut cmd = Command::new(venv_python());
    cmd.arg(root().join("tests/peers/pymodbus_server.py"))
        .args(args);
    let mut p = Proc::spawn("pymodbus", cmd);
    p.wait_for("ready", Duration::from_secs(20));
    p
}

/// What one `fumegrid-gateway run` produced.
#[derive(Debug, Default)]
pub struct GatewayRun {
    /// Every `reading` log event (JSON objects with device, metric, value, quality, ts_ms).
    pub readings: Vec<Value>,
    /// Every other log event.
    pub events: Vec<Value>,
    /// The final per-slave counters (`--stats-file`).
    pub stats: Vec<Value>,
}

impl GatewayRun {
    /// Readings of one device and metric, in order.
    pub fn of<'a>(
        &'a self,
        device: &'a str,
        metric: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.readings
            .iter()
            .filter(move |r| r["device"] == device && r["metric"] == metric)
    }

    pub fn stats_of(&self, device: &str) -> &Value {
        self.stats
            .iter()
            .find(|s| s["device"] == device)
            .unwrap_or_else(|| panic!("no stats for {device}: {:?}", self.stats))
    }

    /// Files one JSON log line under readings or events; a periodic `slave stats` line also
    /// replaces that device's entry in `stats`. Returns whether it was such a line, or `None`
    /// when the line is not JSON.
    fn push_log_line(&mut self, line: &str) -> Option<bool> {
        let v = serde_json::from_str::<Value>(line).ok()?;
        if v["target"] == "reading" {
            self.readings.push(v);
            return Some(false);
        }
        let is_stats = v["message"] == "slave stats";
        if is_stats {
            match self.stats.iter_mut().find(|s| s["device"] == v["device"]) {
                Some(s) => *s = v.clone(),
                None => self.stats.push(v.clone()),
            }
        }
        self.events.push(v);
        Some(is_stats)
    }

    fn read_stats_file(&mut self, path: &Path) {
        self.stats =
            serde_json::from_str(&std::fs::read_to_string(path).expect("stats file written"))
                .expect("stats file is JSON");
    }
}

/// Writes a gateway config into `dir` (with its own outbox unless it names one) and returns
/// the `fumegrid-gateway run` command for it, logging JSON and writing its final counters to
/// `stats`.
fn gateway_run_command(dir: &TempDir, config: &str, seconds: f64, stats: &Path) -> Command {
    let cfg = dir.join("gateway.toml");
    // Each run its own outbox (the default is the system's /var/lib/fumegrid/gateway/outbox).
    let config = if config.contains("[outbox]") {
        config.to_string()
    } else {
        format!("{config}\n[outbox]\npath = \"outbox\"\n")
    };
    std::fs::write(&cfg, config).expect("write config");
    let mut cmd = Command::new(bin("fumegrid-gateway"));
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--log-format")
        .arg("json")
        .arg("--stats-file")
        .arg(stats);
    cmd
}

/// Writes a gateway config into `dir` and runs the gateway on it for `seconds`.
pub fn run_gateway(dir: &TempDir, config: &str, seconds: f64) -> GatewayRun {
    let stats = dir.join("stats.json");
    let cmd = gateway_run_command(dir, config, seconds, &stats);
    let mut p = Proc::spawn("fumegrid-gateway", cmd);
    let (ok, stderr) = p.wait_exit(Duration::from_secs_f64(seconds + 20.0));
    assert!(ok, "gateway failed:\n{stderr}");
    let mut run = GatewayRun::default();
    for line in stderr.lines() {
        if run.push_log_line(line).is_none() {
            panic!("gateway wrote a non-JSON log line: {line}");
        }
    }
    run.read_stats_file(&stats);
    run
}

/// Like [`run_gateway`], but for tests that need a number of rare events rather than a fixed
/// time (a loaded machine polls less often): stops the gateway as soon as `enough` holds for
/// what it has logged so far, and after `seconds` at the latest. The stop is a SIGTERM, the
/// clean stop that still writes the final counters. While it runs the gateway logs its
/// counters every second, and `stats` holds each device's latest such line for `enough` to
/// look at; the returned run has the final counters, as [`run_gateway`]'s.
pub fn run_gateway_until(
    dir: &TempDir,
    config: &str,
    seconds: f64,
    mut enough: impl FnMut(&GatewayRun) -> bool,
) -> GatewayRun {
    let stats = dir.join("stats.json");
    let mut cmd = gateway_run_command(dir, config, seconds, &stats);
    cmd.arg("--stats-interval").arg("1");
    let mut p = Proc::spawn("fumegrid-gateway", cmd);
    let stderr = p.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = GatewayRun::default();
    let mut lines = Vec::new();
    let mut stopping = false;
    // The gateway stops by itself after `seconds` (`--duration`); its stderr then ends.
    let deadline = now() + Duration::from_secs_f64(seconds + 20.0);
    while let Some(left) = deadline.checked_duration_since(now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if run.push_log_line(&line) == Some(true) && !stopping && enough(&run) {
            p.term();
            stopping = true;
        }
        lines.push(line);
    }
    let (ok, _) = p.wait_exit(Duration::from_secs(5));
    assert!(ok, "gateway failed:\n{}", lines.join("\n"));
    if let Some(line) = lines
        .iter()
        .find(|l| serde_json::from_str::<Value>(l).is_err())
    {
        panic!("gateway wrote a non-JSON log line: {line}");
    }
    run.read_stats_file(&stats);
    run
}

/// `a` and `b` agree within float tolerance relative to their size (f32 transport).
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Pass,
    /// Keep connections open but forward nothing (a stalled 4G link).
    Freeze,
    /// Refuse new connections (the link is down).
    Refuse,
}

#[derive(Debug)]
struct ProxyShared {
    mode: std::sync::Mutex<ProxyMode>,
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
    stop: std::sync::atomic::AtomicBool,
}

/// A TCP proxy on loopback that a test can freeze, sever and refuse: the uplink between a
/// gateway and its broker.
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    shared: std::sync::Arc<ProxyShared>,
}

impl Proxy {
    pub fn new(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(ProxyShared {
            mode: std::sync::Mutex::new(ProxyMode::Pass),
            conns: std::sync::Mutex::new(Vec::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        if s.mode() == ProxyMode::Refuse {
                            continue; // dropped: connection reset
                        }
                        let Ok(up) = std::net::TcpStream::connect(upstream) else {
                            continue;
                        };
                        let _ = down.set_nonblocking(false);
                        for c in [&down, &up] {
                            let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
                            if let Ok(c) = c.try_clone() {
                                s.conns.lock().map(|mut v| v.push(c)).ok();
                            }
                        }
                        for (from, to) in [
                            (down.try_clone(), up.try_clone()),
                            (up.try_clone(), down.try_clone()),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let s = s.clone();
                                std::thread::spawn(move || pump(from, to, &s));
                            }
                        }
                    }
                    // Non-blocking accept: not a wait in a test, the proxy's idle loop.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, shared }
    }

    pub fn set(&self, mode: ProxyMode) {
        if let Ok(mut m) = self.shared.mode.lock() {
            *m = mode;
        }
    }

    /// Closes every open connection (both sides see a reset).
    pub fn sever(&self) {
        if let Ok(mut conns) = self.shared.conns.lock() {
            for c in conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl ProxyShared {
    fn mode(&self) -> ProxyMode {
        self.mode.lock().map(|m| *m).unwrap_or(ProxyMode::Pass)
    }
}

fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, s: &ProxyShared) {
    use std::io::Write;
    let mut buf = vec![0u8; 64 * 1024];
    while !s.stop.load(std::sync::atomic::Ordering::Relaxed) {
        if s.mode() == ProxyMode::Freeze {
            // Frozen: hold the bytes (the proxy's idle loop, not a wait in a test).
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.sever();
    }
}

impl Proc {
    /// Sends SIGTERM (a clean stop).
    pub fn term(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` with curl (an independent HTTP client), optionally with a bearer token:
/// (HTTP status, body). Status 0 when nothing answered.
pub fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A parsed Prometheus text scrape: every sample as (name, labels, value).
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses the text format (no escaped quotes in our label values).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let labels = body
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once("=\"")?;
                            Some((k.to_string(), v.trim_end_matches('"').to_string()))
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Default::default()),
            };
            samples.push((name, labels, value));
        }
        Scrape { samples }
    }

    /// The value of the one series of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }
}
