//! The embedded MQTT broker: rumqttd behind our own gate.
//!
//! # Why a gate in front of rumqttd
//!
//! rumqttd 0.20 authenticates (an auth hook sees client id, user, password) but has no
//! publish/subscribe ACLs, lets any client take any client id (it kicks the holder), and keeps
//! state per topic name for ever (measured: one account publishing to 30,000 made-up topics took
//! the aggregator from 28 to 365 MB, never freed; another took the ingest's client id and cut
//! ingest to 5 % of its rate). Its auth hook cannot see PUBLISH or SUBSCRIBE packets, and its
//! router is not extensible, so the rules have to be enforced before packets reach it:
//!
//! - **the gate** ([`gate`]) is the only listener gateways reach (TCP, or TLS with rustls when a
//!   certificate is configured). It parses each client packet with rumqttc's MQTT 3.1.1 codec
//!   (`rumqttc::mqttbytes::v4`; no hand-written parser), checks the login against the accounts,
//!   binds the client id to the account, and lets an account publish only to its own `up` and
//!   `status` and subscribe only to its own `ack` and `cmd` ([`acl`]). A client that breaks a
//!   rule is disconnected, counted (`fumegrid_broker_refused_total{reason}`) and logged with
//!   bounded text; other clients are unaffected. Allowed packets are forwarded byte for byte;
//!   the broker's packets go back to the client unchanged.
//! - **rumqttd** listens on a loopback port chosen at start and accepts only logins carrying a
//!   random secret minted at every start (the gate replaces the client's password with it after
//!   checking it), with the client id equal to the user name. A local process that finds that
//!   port cannot log in, so it cannot get round the gate.
//! - **the ingest** connects to that internal listener as `fumegrid-ingest-{id}` with the
//!   secret. No account may be named `fumegrid-ingest…` (the credentials file refuses it) and
//!   the gate only admits a client id equal to its account, so no client can reach the ingest's
//!   client id. It stays a rumqttc client rather than an in-process `Broker::link`: the same
//!   code then serves the external-broker mode (mosquitto, EMQX) and is tested against both,
//!   and a local link is not protected from a client-id takeover by itself (rumqttd's router
//!   treats link ids like any other client id); the binding above is what protects it.
//!
//! Memory is bounded because no account can name a topic outside its own four, so rumqttd's
//! per-topic state grows with the number of accounts, not with what clients send; the gate keeps
//! no state per topic and at most one packet (`max_payload_bytes` plus headers) per connection.
//!
//! What rumqttd still gives and does not (measured, see STYLE.md):
//! - MQTT 3.1.1 (v4) only; v5 would need a second listener and is not opened;
//! - no persistence: queued messages die with the process. The gateways' end-to-end acks cover
//!   that (what was not acked is published again);
//! - no graceful stop: the broker threads end with the process;
//! - the payload cap (rumqttd's own default is about 20 KB) is raised to `max_payload_bytes`.

pub mod acl;
pub mod gate;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker cannot listen on {addr}: {source} (another broker running?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the embedded MQTT broker thread: {0}")]
    Thread(std::io::Error),
    #[error("embedded MQTT broker did not accept connections on {addr} within {secs} s")]
    NotReady { addr: SocketAddr, secs: u64 },
    #[error("broker TLS: {0}")]
    Tls(String),
}

/// A broker user's secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who may connect: user name → secret, checked in constant time per user; and which of them
/// are DJI accounts, with the serial numbers each may use ([`acl::Scope::Dji`]).
#[derive(Clone, Default)]
pub struct Accounts(
    Arc<BTreeMap<String, Secret>>,
    Arc<BTreeMap<String, Vec<String>>>,
);

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Accounts")
            .field(&self.0.keys().collect::<Vec<_>>())
            .field(&self.1)
            .finish()
    }
}

impl Accounts {
    pub fn new(users: BTreeMap<String, Secret>) -> Accounts {
        Accounts(Arc::new(users), Arc::default())
    }

    /// Adds DJI accounts: user name → (secret, serial numbers). The config has made sure no
    /// name is both a gateway's and a DJI account's.
    pub fn with_dji(mut self, dji: BTreeMap<String, (Secret, Vec<String>)>) -> Accounts {
        let mut users = (*self.0).clone();
        let mut scopes = (*self.1).clone();
        for (user, (secret, serials)) in dji {
            users.insert(user.clone(), secret);
            scopes.insert(user, serials);
        }
        self.0 = Arc::new(users);
        self.1 = Arc::new(scopes);
        self
    }

    /// What `account` (already authenticated) may do.
    pub fn scope<'a>(&'a self, account: &'a str) -> acl::Scope<'a> {
        match self.1.get(account) {
            Some(serials) => acl::Scope::Dji { account, serials },
            None => acl::Scope::Gateway(account),
        }
    }

    /// True when `password` is `user`'s. Compares SHA-256 digests, so the time taken does not
    /// depend on how much of a guess was right.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(secret) = self.0.get(user) else {
            return false;
        };
        let want: [u8; 32] = match secret {
            Secret::Plain(p) => Sha256::digest(p.as_bytes()).into(),
            Secret::Sha256(h) => *h,
        };
        same_digest(password, &want)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// SHA-256 of `given` equals `want`, compared without an early exit.
fn same_digest(given: &str, want: &[u8; 32]) -> bool {
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    given
        .iter()
        .zip(want.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Resolves port 0 to a free port (rumqttd does not report the port it bound) and checks that
/// the address can be bound at all, so that a busy port is an error at start, not a log line
/// from a broker thread.
fn resolve_listen(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let probe = TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    drop(probe);
    Ok(addr)
}

/// rumqttd's config: one v4 listener on loopback that admits only the internal secret, with
/// the client id equal to the user name.
fn config(internal: SocketAddr, secret: String, max_payload_bytes: usize) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let want: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let ok = client_id == user && same_digest(&pass, &want);
        if !ok {
            tracing::warn!("internal MQTT listener: login refused (not through the gate)");
        }
        async move { ok }
    });
    let server = ServerSettings {
        name: "v4-internal".into(),
        listen: internal,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    // The commit log keeps up to max_segment_size * max_segment_count bytes per subscription
    // filter in memory; a subscriber further behind than that loses messages, which the
    // gateways' ack timeout covers.
    let segment = (4 * max_payload_bytes).max(16 * 1024 * 1024);
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: segment,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

/// What the embedded broker needs.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The gate's address (what gateways connect to).
    pub listen: SocketAddr,
    pub accounts: Accounts,
    pub max_payload_bytes: usize,
    /// PEM certificate chain and private key: the gate speaks TLS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The secret the gate (and the ingest) log in to rumqttd with.
    pub internal_secret: String,
    /// The daemon's clock (the gate's log rate limits read it).
    pub clock: fumegrid_common::clock::Clock,
}

/// A started embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Where gateways connect (the gate).
    pub public: SocketAddr,
    /// rumqttd's own listener on loopback (the ingest connects here).
    pub internal: SocketAddr,
    pub tls: bool,
}

/// Starts rumqttd on its own threads, waits until it accepts TCP connections, then starts the
/// gate in front of it.
pub fn start_embedded(e: Embedded) -> Result<Started, BrokerError> {
    // TLS first: a bad certificate must stop us before anything listens.
    let tls = match &e.tls {
        Some((cert, key)) => Some(Arc::new(gate::tls_config(cert, key)?)),
        None => None,
    };
    let internal = resolve_listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let cfg = config(internal, e.internal_secret.clone(), e.max_payload_bytes);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // `start` blocks for the life of the listener threads.
            let mut broker = rumqttd::Broker::new(cfg);
            match broker.start() {
                Ok(()) => tracing::error!("embedded MQTT broker stopped"),
                Err(e) => tracing::error!(error = %e, "embedded MQTT broker failed"),
            }
        })
        .map_err(BrokerError::Thread)?;
    // Ready when the address is taken. Probing with a TCP connect would make rumqttd log an
    // ERROR for a connection without CONNECT at every start. At most 1000 probes 10 ms apart
    // (counted, not timed: no clock read here).
    let mut probes = 0;
    while TcpListener::bind(internal).is_ok() {
        probes += 1;
        if probes > 1000 {
            return Err(BrokerError::NotReady {
                addr: internal,
                secs: 10,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let public = gate::start(gate::GateConfig {
        listen: e.listen,
        upstream: internal,
        internal_secret: e.internal_secret,
        accounts: e.accounts,
        max_packet_bytes: e.max_payload_bytes + 64 * 1024,
        tls: tls.clone(),
        max_connections: 10_000,
        connect_timeout: Duration::from_secs(10),
        clock: e.clock,
    })?;
    Ok(Started {
        public,
        internal,
        tls: tls.is_some(),
    })
}

/// Random hex string of `bytes` random bytes (the ingest client's password).
pub fn random_hex(bytes: usize) -> String {
    // No OS randomness is not something to start a broker on; the caller checks length.
    crate::auth::random_hex(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_check_plain_and_hashed() {
        let h: [u8; 32] = Sha256::digest(b"s3cret-pass").into();
        let a = Accounts::new(BTreeMap::from([
            ("a".to_string(), Secret::Plain("password-a".into())),
            ("b".to_string(), Secret::Sha256(h)),
        ]));
        assert!(a.check("a", "password-a"));
        assert!(!a.check("a", "password-b"));
        assert!(a.check("b", "s3cret-pass"));
        assert!(!a.check("b", ""));
        assert!(!a.check("c", "password-a"));
        assert!(!format!("{a:?}").contains("password"));
        assert_eq!(a.scope("a"), acl::Scope::Gateway("a"));
        let a = a.with_dji(BTreeMap::from([(
            "dock".to_string(),
            (Secret::Plain("dock-secret".into()), vec!["SN1".to_string()]),
        )]));
        assert!(a.check("dock", "dock-secret"));
        assert!(a.check("a", "password-a"));
        assert!(matches!(a.scope("dock"), acl::Scope::Dji { serials, .. } if serials == ["SN1"]));
    }

    #[test]
    fn random_hex_is_random() {
        let (x, y) = (random_hex(16), random_hex(16));
        assert_eq!(x.len(), 32);
        assert_ne!(x, y);
    }
}
