//! The embedded MQTT broker (rumqttd), configured in code.
//!
//! What rumqttd gives and what it does not (measured, see STYLE.md):
//! - one MQTT 3.1.1 (v4) listener; v5 would need a second listener and is not opened;
//! - authentication is **required**: every CONNECT is checked against the credentials file plus
//!   the ingest client's account, whose random password is minted at every start, so nothing
//!   connects anonymously and a wrong password is refused (the socket is closed, no CONNACK);
//! - no ACLs: any authenticated client may publish on any topic. Authorisation is therefore the
//!   ingest's job: each batch's HMAC must verify with the key of the gateway named by its topic;
//! - no persistence: queued messages die with the process. The gateways' end-to-end acks cover
//!   that (what was not acked is published again);
//! - no graceful stop: the broker threads end with the process;
//! - the payload cap (rumqttd's own default is about 20 KB) is raised to `max_payload_bytes`.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use sha2::{Digest, Sha256};

use crate::config::Secret;

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
}

/// Who may connect: user name → secret. Checked in constant time per user.
#[derive(Clone, Default)]
pub struct Accounts(Arc<BTreeMap<String, Secret>>);

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Accounts")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Accounts {
    pub fn new(users: BTreeMap<String, Secret>) -> Accounts {
        Accounts(Arc::new(users))
    }

    /// True when `password` is `user`'s. Compares SHA-256 digests, so the time taken does not
    /// depend on how much of a guess was right.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(secret) = self.0.get(user) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let want: [u8; 32] = match secret {
            Secret::Plain(p) => Sha256::digest(p.as_bytes()).into(),
            Secret::Sha256(h) => *h,
        };
        given
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
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

/// rumqttd's config for one v4 listener.
fn config(listen: SocketAddr, accounts: Accounts, max_payload_bytes: usize) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |_client_id, user: String, pass: String| {
        let ok = accounts.check(&user, &pass);
        if !ok {
            tracing::warn!(user, "MQTT login refused");
        }
        async move { ok }
    });
    let server = ServerSettings {
        name: "v4-1".into(),
        listen,
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

/// Starts rumqttd on its own threads and waits until it accepts TCP connections. Returns the
/// address it listens on (port 0 resolved).
pub fn start_embedded(
    listen: SocketAddr,
    accounts: Accounts,
    max_payload_bytes: usize,
) -> Result<SocketAddr, BrokerError> {
    let addr = resolve_listen(listen)?;
    let cfg = config(addr, accounts, max_payload_bytes);
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
    // ERROR for a connection without CONNECT at every start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpListener::bind(addr).is_ok() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotReady { addr, secs: 10 });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(addr)
}

/// Random hex string of `bytes` random bytes (the ingest client's password).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness is not something to start a broker on; the caller checks length.
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
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
    }

    #[test]
    fn random_hex_is_random() {
        let (x, y) = (random_hex(16), random_hex(16));
        assert_eq!(x.len(), 32);
        assert_ne!(x, y);
    }
}
