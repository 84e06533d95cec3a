//! HTTP snapshot cameras: one GET answers one JPEG (Hikvision
//! `/ISAPI/Streaming/channels/101/picture`, Dahua `/cgi-bin/snapshot.cgi`, Axis
//! `/axis-cgi/jpg/image.cgi`, the URL ONVIF's `GetSnapshotUri` names).
//!
//! Authentication answers the camera's `401` challenge: Digest (RFC 7616: MD5 or SHA-256,
//! qop=auth, as Hikvision and Dahua ask) or Basic, with `http-auth` (the crate retina uses for
//! the same challenge over RTSP). Credentials are never sent before the camera asks for them.
//!
//! The body is read chunk by chunk and abandoned as soon as it passes the camera's
//! `max_bytes` (a `Content-Length` above it is refused before reading anything), so a camera
//! that streams an endless or 50 MB "picture" costs at most `max_bytes` of memory.

use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::Media;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};

use super::{CameraError, Capture, jpeg};

/// User name and password for a camera.
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Creds {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// An HTTP client for cameras: rustls (ring), a connect timeout, at most 3 redirects, no
/// cookies, no proxy from the environment (a gateway's camera is on the shop's LAN).
pub fn client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .no_proxy()
        .user_agent(concat!("fumegrid-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only when the TLS backend cannot start; a client without our settings
        // still obeys the overall capture timeout.
        .unwrap_or_default()
}

/// What a bounded request brought back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Sends `method url` with `body`, answers one `401` challenge with `creds`, and reads the
/// answer's body up to `max_bytes`. A `401` after the credentials were sent (or without
/// credentials to send) is [`CameraError::Unauthorized`]; other statuses are returned for the
/// caller to judge, their body read up to the same bound.
pub async fn request(
    client: &reqwest::Client,
    method: Method,
    url: &Url,
    body: &[u8],
    content_type: Option<&str>,
    creds: Option<&Creds>,
    max_bytes: u64,
) -> Result<Answer, CameraError> {
    let send = |authorization: Option<String>| {
        let mut rb = client.request(method.clone(), url.clone());
        if let Some(ct) = content_type {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(a) = authorization {
            rb = rb.header(AUTHORIZATION, a);
        }
        rb.body(body.to_vec()).send()
    };
    let mut resp = send(None).await.map_err(|e| transport_error(&e))?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let Some(creds) = creds else {
            return Err(CameraError::Unauthorized);
        };
        let authorization = answer_challenge(
            resp.headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            creds,
            method.as_str(),
            &request_uri(url),
            body,
        )?;
        resp = send(Some(authorization))
            .await
            .map_err(|e| transport_error(&e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(CameraError::Unauthorized);
        }
    }
    let status = resp.status();
    if let Some(len) = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_bytes
    {
        return Err(CameraError::TooLarge { max: max_bytes });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&e))? {
        if out.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(CameraError::TooLarge { max: max_bytes });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body: out })
}

/// The `Authorization` header answering a camera's `WWW-Authenticate` challenges (Digest
/// preferred over Basic). Pure: the fuzz target calls it with arbitrary challenges.
pub fn answer_challenge<'a>(
    challenges: impl Iterator<Item = &'a str>,
    creds: &Creds,
    method: &str,
    uri: &str,
    body: &[u8],
) -> Result<String, CameraError> {
    let mut builder = http_auth::PasswordClient::builder();
    let mut any = false;
    for c in challenges {
        any = true;
        builder = builder.challenges(c);
    }
    if !any {
        return Err(CameraError::Garbage(
            "401 without a WWW-Authenticate challenge".into(),
        ));
    }
    let mut client = builder.build().map_err(|e| {
        CameraError::Garbage(format!(
            "cannot answer the camera's authentication challenge: {}",
            fumegrid_common::text::clip(&e, 200)
        ))
    })?;
    client
        .respond(&http_auth::PasswordParams {
            username: &creds.user,
            password: &creds.password,
            uri,
            method,
            body: Some(body),
        })
        .map_err(|e| {
            CameraError::Garbage(format!(
                "cannot answer the camera's authentication challenge: {}",
                fumegrid_common::text::clip(&e, 200)
            ))
        })
}

/// The Request-URI a digest response names: path and query, as the request line carries it.
fn request_uri(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// A transport failure, told apart the way an operator acts on it: nothing listening or no
/// route (check the address), the time bound, or something that is not HTTP.
pub(crate) fn transport_error(e: &reqwest::Error) -> CameraError {
    let chain = error_chain(e);
    if e.is_connect() {
        CameraError::Unreachable(chain)
    } else if e.is_timeout() {
        CameraError::Unreachable(format!("timed out: {chain}"))
    } else if chain.contains("parse") || chain.contains("invalid") {
        CameraError::Garbage(format!("not an HTTP answer: {chain}"))
    } else {
        CameraError::Unreachable(chain)
    }
}

/// `e` and its sources on one line, clipped (the text may quote what a peer sent).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    fumegrid_common::text::clip(&s, 300).to_string()
}

/// Runs `fut` within `timeout_ms`; running out is [`CameraError::Timeout`].
pub(crate) async fn bounded<T>(
    timeout_ms: u64,
    fut: impl Future<Output = Result<T, CameraError>>,
) -> Result<T, CameraError> {
    tokio::time::timeout(Duration::from_millis(timeout_ms), fut)
        .await
        .unwrap_or(Err(CameraError::Timeout(timeout_ms)))
}

/// GETs one JPEG from `url` and makes it a [`Capture`]: hashed when complete, timed by `clock`.
pub async fn snapshot(
    client: &reqwest::Client,
    url: &Url,
    creds: Option<&Creds>,
    max_bytes: u64,
    clock: &Clock,
) -> Result<Capture, CameraError> {
    let answer = request(client, Method::GET, url, &[], None, creds, max_bytes).await?;
    if !answer.status.is_success() {
        return Err(CameraError::Status(answer.status.as_u16()));
    }
    let dims = jpeg::scan(&answer.body).map_err(CameraError::Garbage)?;
    Ok(capture(answer.body, Media::Jpeg, dims, clock))
}

/// The one way a [`Capture`] is made: SHA-256 of the bytes as they are, the time they were
/// complete.
pub(crate) fn capture(
    bytes: Vec<u8>,
    media: Media,
    dims: Option<(u32, u32)>,
    clock: &Clock,
) -> Capture {
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    Capture {
        bytes,
        media,
        sha256,
        captured_ms: clock.now_ms(),
        width: dims.map(|d| d.0),
        height: dims.map(|d| d.1),
    }
}

/// A camera that answers a GET of its snapshot URL with a JPEG.
#[derive(Debug)]
pub struct HttpCamera {
    id: String,
    url: Url,
    creds: Option<Creds>,
    timeout_ms: u64,
    max_bytes: u64,
    client: reqwest::Client,
    clock: Clock,
}

impl HttpCamera {
    pub fn new(
        id: &str,
        url: Url,
        creds: Option<Creds>,
        timeout_ms: u64,
        max_bytes: u64,
        clock: Clock,
    ) -> HttpCamera {
        HttpCamera {
            id: id.to_string(),
            url,
            creds,
            timeout_ms,
            max_bytes,
            client: client(Duration::from_millis(timeout_ms)),
            clock,
        }
    }
}

impl super::Camera for HttpCamera {
    fn id(&self) -> &str {
        &self.id
    }

    fn capture(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>> {
        Box::pin(bounded(
            self.timeout_ms,
            snapshot(
                &self.client,
                &self.url,
                self.creds.as_ref(),
                self.max_bytes,
                &self.clock,
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Creds {
        Creds {
            user: "admin".into(),
            password: "12345".into(),
        }
    }

    #[test]
    fn answers_digest_md5_and_sha256_and_basic() {
        let md5 = answer_challenge(
            [r#"Digest realm="IP Camera(C6496)", qop="auth", nonce="4e6a4d", stale="FALSE""#]
                .into_iter(),
            &creds(),
            "GET",
            "/ISAPI/Streaming/channels/101/picture",
            &[],
        )
        .expect("md5");
        assert!(md5.starts_with("Digest "), "{md5}");
        assert!(md5.contains(r#"username="admin""#), "{md5}");
        assert!(md5.contains("qop=auth"), "{md5}");
        assert!(
            md5.contains(r#"uri="/ISAPI/Streaming/channels/101/picture""#),
            "{md5}"
        );
        assert!(!md5.contains("12345"), "the password is hashed: {md5}");

        let sha = answer_challenge(
            [
                r#"Digest realm="cam", qop="auth", algorithm=SHA-256, nonce="abc""#,
                r#"Basic realm="cam""#,
            ]
            .into_iter(),
            &creds(),
            "GET",
            "/snap.jpg",
            &[],
        )
        .expect("sha-256");
        assert!(sha.contains("algorithm=SHA-256"), "{sha}");

        let basic = answer_challenge(
            [r#"Basic realm="cam""#].into_iter(),
            &creds(),
            "GET",
            "/",
            &[],
        )
        .expect("basic");
        assert_eq!(basic, "Basic YWRtaW46MTIzNDU=");
    }

    #[test]
    fn an_unanswerable_challenge_is_a_clear_error() {
        for bad in [
            "",
            "Negotiate",
            "Digest",
            "Digest realm=\"x\", qop=\"auth-foo\"",
        ] {
            let e = answer_challenge([bad].into_iter(), &creds(), "GET", "/", &[]);
            assert!(matches!(e, Err(CameraError::Garbage(_))), "{bad}: {e:?}");
        }
        let e = answer_challenge(std::iter::empty(), &creds(), "GET", "/", &[]);
        assert!(matches!(e, Err(CameraError::Garbage(m)) if m.contains("without")));
    }

    #[test]
    fn the_request_uri_keeps_the_query() {
        let u = Url::parse("http://cam/cgi-bin/snapshot.cgi?channel=1").expect("url");
        assert_eq!(request_uri(&u), "/cgi-bin/snapshot.cgi?channel=1");
    }

    #[test]
    fn creds_do_not_print_the_password() {
        assert!(!format!("{:?}", creds()).contains("12345"));
    }
}
