//! The gate: the embedded broker's public listener (see the parent module for why).
//!
//! One task per client: (TLS handshake,) CONNECT within `connect_timeout`, login, client id and
//! Last Will checked ([`acl`]), then a connection to rumqttd's internal listener with the login
//! password replaced by the internal secret. From then on client packets are parsed one by one
//! with rumqttc's v4 codec and forwarded byte for byte if the account may send them; broker
//! packets are copied back unchanged. Runs on its own thread and runtime, like rumqttd's
//! listeners, so a flood of connections does not slow the ingest or the API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fumegrid_common::clock::Clock;
use fumegrid_common::ratelog::LogLimiter;
use rumqttc::mqttbytes::{self, Protocol, v4::*};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::acl::{self, Refusal};
use super::{Accounts, BrokerError};

/// Largest CONNECT accepted (its Last Will payload is a sealed status of a few hundred bytes):
/// what an unauthenticated client can make us buffer.
const MAX_CONNECT_BYTES: usize = 16 * 1024;
/// How long a refused CONNECT waits for its answer.
const REFUSE_DELAY: Duration = Duration::from_secs(1);
/// Longest piece of client input (a topic, a user name) quoted in a log line.
const LOG_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct GateConfig {
    pub listen: SocketAddr,
    /// rumqttd's internal listener.
    pub upstream: SocketAddr,
    pub internal_secret: String,
    pub accounts: Accounts,
    /// Largest MQTT packet (fixed header excluded) a client may send.
    pub max_packet_bytes: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once; more are closed at once (`busy`).
    pub max_connections: usize,
    /// Time for the TLS handshake and the CONNECT.
    pub connect_timeout: Duration,
    /// For the refusal log's rate limit.
    pub clock: Clock,
}

/// Reads a PEM certificate chain and private key into a rustls server config.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, BrokerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| BrokerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!(
            "{}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| BrokerError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| BrokerError::Tls(format!("certificate and key do not match: {e}")))
}

/// Binds the gate's listener and serves it on its own thread. Returns the bound address.
pub fn start(cfg: GateConfig) -> Result<SocketAddr, BrokerError> {
    let std_listener =
        std::net::TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = std_listener
        .local_addr()
        .and_then(|a| std_listener.set_nonblocking(true).map(|()| a))
        .map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    std::thread::Builder::new()
        .name("mqtt-gate".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "MQTT gate: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve(l, Arc::new(cfg)).await,
                    Err(e) => tracing::error!(error = %e, "MQTT gate: cannot listen"),
                }
            });
        })
        .map_err(BrokerError::Thread)?;
    Ok(addr)
}

async fn serve(listener: TcpListener, cfg: Arc<GateConfig>) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let log = Arc::new(std::sync::Mutex::new(LogLimiter::new(
        LOG_INTERVAL,
        MAX_LOGGED_PAIRS,
    )));
    let tls = cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut accept_errors =
        fumegrid_common::runtime::AcceptErrors::new("mqtt", crate::telemetry::BROKER_ACCEPT_ERRORS);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tokio::time::sleep(accept_errors.failed(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused(
                &log,
                cfg.clock.instant(),
                None,
                Refusal::Busy,
                peer,
                "too many connections",
            );
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (cfg, log, tls) = (cfg.clone(), log.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let outcome = match tls {
                None => client(sock, &cfg).await,
                Some(acceptor) => {
                    match tokio::time::timeout(cfg.connect_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => client(stream, &cfg).await,
                        Ok(Err(e)) => Err((
                            None,
                            Refusal::NoConnect,
                            format!("TLS handshake failed: {e}"),
                        )),
                        Err(_) => Err((None, Refusal::NoConnect, "TLS handshake timed out".into())),
                    }
                }
            };
            if let Err((account, why, detail)) = outcome {
                refused(
                    &log,
                    cfg.clock.instant(),
                    account.as_deref(),
                    why,
                    peer,
                    &detail,
                );
            }
        });
    }
}

/// Who broke which rule, and a bounded detail for the log.
type Refused = (Option<String>, Refusal, String);

/// Serves one client until either side closes. `Err` when the gate closed it for a rule.
async fn client<S>(stream: S, cfg: &GateConfig) -> Result<(), Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::time::timeout(
        cfg.connect_timeout,
        next_packet(&mut rd, &mut buf, MAX_CONNECT_BYTES),
    )
    .await;
    let connect = match first {
        Err(_) => return Err((None, Refusal::NoConnect, "no CONNECT in time".into())),
        Ok(Ok(Some((Packet::Connect(c), _)))) => c,
        Ok(Ok(None)) => return Ok(()), // closed before saying anything: a port scan
        Ok(Ok(Some((p, _)))) => {
            return Err((
                None,
                Refusal::NoConnect,
                format!("first packet {}", kind(&p)),
            ));
        }
        Ok(Err(mqttbytes::Error::InvalidProtocolLevel(l))) => {
            let _ = refuse_connect_slowly(&mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
            return Err((
                None,
                Refusal::Protocol,
                format!("protocol level {l}; only MQTT 3.1.1 (4)"),
            ));
        }
        Ok(Err(e)) => return Err((None, Refusal::Malformed, format!("CONNECT: {e}"))),
    };
    let account = match &connect.login {
        Some(l) if cfg.accounts.check(&l.username, &l.password) => l.username.clone(),
        login => {
            let _ = refuse_connect_slowly(&mut wr, ConnectReturnCode::BadUserNamePassword).await;
            let user = login
                .as_ref()
                .map(|l| acl::bounded(&l.username, LOG_CHARS))
                .unwrap_or_else(|| "(none)".into());
            return Err((None, Refusal::BadLogin, format!("user `{user}`")));
        }
    };
    if connect.protocol != Protocol::V4 {
        let _ = refuse_connect_slowly(&mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
        return Err((Some(account), Refusal::Protocol, "not MQTT 3.1.1".into()));
    }
    let scope = cfg.accounts.scope(&account);
    if scope.client_id(&connect.client_id).is_err() {
        let _ = refuse_connect_slowly(&mut wr, ConnectReturnCode::BadClientId).await;
        let detail = format!(
            "client id `{}` is not the account's",
            acl::bounded(&connect.client_id, LOG_CHARS)
        );
        return Err((Some(account), Refusal::ClientId, detail));
    }
    if let Some(w) = &connect.last_will
        && scope.publish(&w.topic).is_err()
    {
        let _ = refuse_connect_slowly(&mut wr, ConnectReturnCode::NotAuthorized).await;
        let detail = format!("will topic `{}`", acl::bounded(&w.topic, LOG_CHARS));
        return Err((Some(account), Refusal::Will, detail));
    }

    let up = match TcpStream::connect(cfg.upstream).await {
        Ok(s) => s,
        Err(e) => {
            let _ = refuse_connect(&mut wr, ConnectReturnCode::ServiceUnavailable).await;
            tracing::error!(error = %e, "MQTT gate: internal broker unreachable");
            return Ok(());
        }
    };
    let _ = up.set_nodelay(true);
    let (mut up_rd, mut up_wr) = up.into_split();
    let mut inner = connect;
    // rumqttd admits a client id equal to its user name: the client id, which the scope has
    // just bound to this account (a gateway's is the account; a DJI dock's may be its serial).
    inner.login = Some(Login::new(
        inner.client_id.clone(),
        cfg.internal_secret.clone(),
    ));
    let mut out = BytesMut::new();
    if Packet::Connect(inner)
        .write(&mut out, MAX_CONNECT_BYTES)
        .is_err()
        || up_wr.write_all(&out).await.is_err()
    {
        return Ok(());
    }

    let down = async {
        // rumqttd's packets, unchanged; rumqttd closing (keep-alive, kick) ends the client.
        let _ = tokio::io::copy(&mut up_rd, &mut wr).await;
        let _ = wr.shutdown().await;
    };
    let upward = async {
        loop {
            let (packet, frame) = match next_packet(&mut rd, &mut buf, cfg.max_packet_bytes).await {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(()),
                Err(e) => return Err((Refusal::Malformed, e.to_string())),
            };
            allowed(scope, &packet)?;
            if up_wr.write_all(&frame).await.is_err() {
                return Ok(());
            }
        }
    };
    let result = tokio::select! {
        () = down => Ok(()),
        r = upward => r,
    };
    result.map_err(|(why, detail)| (Some(account.clone()), why, detail))
}

/// Whether an account of `scope` may send `packet` once connected.
fn allowed(scope: acl::Scope<'_>, packet: &Packet) -> Result<(), (Refusal, String)> {
    let topic = |t: &str| format!("`{}`", acl::bounded(t, LOG_CHARS));
    match packet {
        Packet::Publish(p) => scope
            .publish(&p.topic)
            .map_err(|r| (r, format!("publish to {}", topic(&p.topic)))),
        Packet::Subscribe(s) => s.filters.iter().try_for_each(|f| {
            scope
                .subscribe(&f.path)
                .map_err(|r| (r, format!("subscribe to {}", topic(&f.path))))
        }),
        Packet::Unsubscribe(u) => u.topics.iter().try_for_each(|f| {
            scope
                .subscribe(f)
                .map_err(|r| (r, format!("unsubscribe from {}", topic(f))))
        }),
        Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::PingReq
        | Packet::Disconnect => Ok(()),
        Packet::Connect(_)
        | Packet::ConnAck(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp => Err((
            Refusal::Malformed,
            format!("a client must not send {}", kind(packet)),
        )),
    }
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// The next whole packet from `rd`, parsed, with its raw bytes; `None` at end of stream. Never
/// buffers more than one packet of at most `max` bytes plus one read.
async fn next_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Packet, BytesMut)>, mqttbytes::Error> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => {
                let frame = buf.split_to(header.frame_length());
                let packet = Packet::read(&mut frame.clone(), max)?;
                return Ok(Some((packet, frame)));
            }
            Err(mqttbytes::Error::InsufficientBytes(n)) => {
                buf.reserve(n.clamp(1, 64 * 1024));
                match rd.read_buf(buf).await {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(_) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A refused CONNECT is answered after [`REFUSE_DELAY`]: a client that tries client ids or
/// passwords one after another gets one try a second per connection instead of thousands,
/// which would otherwise take CPU from the ingest on a small machine.
async fn refuse_connect_slowly<W: AsyncWrite + Unpin>(
    wr: &mut W,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    tokio::time::sleep(REFUSE_DELAY).await;
    refuse_connect(wr, code).await
}

async fn refuse_connect<W: AsyncWrite + Unpin>(
    wr: &mut W,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let _ = ConnAck::new(code, false).write(&mut out);
    wr.write_all(&out).await?;
    wr.shutdown().await
}

/// Counts a refusal and logs it at WARN the first time for its (account, reason), then at most
/// once a minute per pair with the number suppressed in between. Accounts are a fixed set and
/// unauthenticated clients share one key, so the log's memory is bounded.
fn refused(
    log: &std::sync::Mutex<RefusalLog>,
    now: Instant,
    account: Option<&str>,
    why: Refusal,
    peer: SocketAddr,
    detail: &str,
) {
    metrics::counter!(crate::telemetry::BROKER_REFUSED, "reason" => why.name()).increment(1);
    let account = account.unwrap_or("-");
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(suppressed) = log.should_log((account.to_string(), why), now) {
        tracing::warn!(
            account,
            reason = why.name(),
            peer = %peer,
            detail = %acl::bounded(detail, 2 * LOG_CHARS + 64),
            suppressed,
            "MQTT client disconnected by the broker's rules"
        );
    }
}

const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Accounts are a fixed set and unauthenticated clients share one key: far below this.
const MAX_LOGGED_PAIRS: usize = 10_000;

/// (account, reason) of refusals.
type RefusalLog = LogLimiter<(String, Refusal)>;

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;

    #[test]
    fn only_own_topics_pass_and_acks_pings_always_do() {
        let p = |t: &str| Packet::Publish(Publish::new(t, QoS::AtLeastOnce, "x"));
        assert!(allowed(acl::Scope::Gateway("gw-1"), &p("fumegrid/v1/gw-1/up")).is_ok());
        let (why, detail) = allowed(
            acl::Scope::Gateway("gw-1"),
            &p(&format!("fumegrid/v1/{}/up", "y".repeat(30_000))),
        )
        .expect_err("other topic");
        assert_eq!(why, Refusal::Publish);
        assert!(detail.len() < 200, "{detail}");
        let s = Packet::Subscribe(Subscribe::new_many([
            SubscribeFilter::new("fumegrid/v1/gw-1/ack".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("fumegrid/#".into(), QoS::AtLeastOnce),
        ]));
        assert_eq!(
            allowed(acl::Scope::Gateway("gw-1"), &s).map_err(|e| e.0),
            Err(Refusal::Subscribe)
        );
        assert!(allowed(acl::Scope::Gateway("gw-1"), &Packet::PingReq).is_ok());
        assert!(allowed(acl::Scope::Gateway("gw-1"), &Packet::PubAck(PubAck::new(3))).is_ok());
        assert_eq!(
            allowed(
                acl::Scope::Gateway("gw-1"),
                &Packet::Connect(Connect::new("gw-1"))
            )
            .map_err(|e| e.0),
            Err(Refusal::Malformed)
        );
    }

    #[tokio::test]
    async fn packets_are_framed_across_reads_and_oversized_ones_refused() {
        let mut raw = BytesMut::new();
        let mut publish = Publish::new("fumegrid/v1/g/up", QoS::AtLeastOnce, vec![7u8; 3000]);
        publish.pkid = 1;
        Packet::Publish(publish)
            .write(&mut raw, 1 << 20)
            .expect("encode");
        Packet::PingReq.write(&mut raw, 1 << 20).expect("encode");
        let bytes = raw.to_vec();
        // A reader that hands out 100 bytes at a time.
        let (mut a, b) = tokio::io::duplex(100);
        let w = tokio::spawn(async move {
            a.write_all(&bytes).await.expect("write");
        });
        let mut rd = b;
        let mut buf = BytesMut::new();
        let (p, frame) = next_packet(&mut rd, &mut buf, 1 << 20)
            .await
            .expect("parse")
            .expect("packet");
        assert!(matches!(p, Packet::Publish(ref x) if x.payload.len() == 3000));
        assert_eq!(frame.len(), raw.len() - 2);
        let (p, _) = next_packet(&mut rd, &mut buf, 1 << 20)
            .await
            .expect("parse")
            .expect("packet");
        assert_eq!(p, Packet::PingReq);
        w.await.expect("writer");
        assert!(
            next_packet(&mut rd, &mut buf, 1 << 20)
                .await
                .expect("eof")
                .is_none()
        );

        let mut big = BytesMut::new();
        Packet::Publish(Publish::new("t", QoS::AtMostOnce, vec![0u8; 5000]))
            .write(&mut big, 1 << 20)
            .expect("encode");
        let mut buf = BytesMut::new();
        let mut src: &[u8] = &big;
        assert!(matches!(
            next_packet(&mut src, &mut buf, 4096).await,
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(_))
        ));
    }
}
