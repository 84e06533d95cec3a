//! ONVIF cameras: the snapshot URL asked from the camera, then an HTTP snapshot.
//!
//! From the device-service address (`http://host/onvif/device_service`), over SOAP 1.2:
//! 1. `GetSystemDateAndTime` (no credentials): the camera's UTC clock, so the UsernameToken's
//!    `Created` is in the camera's time (cameras refuse tokens more than a few seconds off,
//!    and a shop camera's clock is rarely set).
//! 2. `GetCapabilities` (Media): the media service's address (many cameras serve it at
//!    `/onvif/Media`); the device-service address when the camera does not say.
//! 3. `GetProfiles`: the first profile's token (the main stream on Hikvision, Dahua, Uniview).
//! 4. `GetSnapshotUri` for that token: the URL, then fetched like any HTTP snapshot camera with
//!    the same credentials (Hikvision's `/onvif-http/snapshot?Profile_1` asks for Digest).
//!
//! Requests 2–4 carry a WS-Security UsernameToken with a PasswordDigest
//! (`Base64(SHA-1(nonce + created + password))`, ONVIF Core §5.12); a camera that also asks
//! for HTTP Digest gets it (`http::request` answers the 401). The URL is kept until a capture
//! fails; the next capture asks again. The parsers of the camera's XML are pure and fuzzed.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use fumegrid_common::clock::Clock;
use reqwest::{Method, Url};
use sha1::{Digest, Sha1};

use super::http::{Creds, bounded, client, request, snapshot};
use super::{CameraError, Capture};

const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_DEVICE: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_MEDIA: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_SCHEMA: &str = "http://www.onvif.org/ver10/schema";
const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_DIGEST: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// Largest SOAP answer read (a GetProfiles answer of a 16-channel NVR is about 100 KB).
pub const MAX_SOAP_BYTES: u64 = 512 * 1024;

/// A WS-Security UsernameToken header for `creds` at `created_ms` (camera time) with a
/// 16-byte `nonce`.
pub fn security_header(creds: &Creds, nonce: &[u8], created_ms: i64) -> String {
    let created = created(created_ms);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "<wsse:Security s:mustUnderstand=\"1\" xmlns:wsse=\"{NS_WSSE}\" xmlns:wsu=\"{NS_WSU}\">\
         <wsse:UsernameToken><wsse:Username>{}</wsse:Username>\
         <wsse:Password Type=\"{PASSWORD_DIGEST}\">{}</wsse:Password>\
         <wsse:Nonce EncodingType=\"{BASE64_BINARY}\">{}</wsse:Nonce>\
         <wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>",
        fumegrid_common::text::xml_escape(&creds.user),
        password_digest(nonce, &created, &creds.password),
        b64.encode(nonce),
    )
}

/// `Base64(SHA-1(nonce + created + password))` (WS-Security UsernameToken Profile 1.0 §3.1).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// `Created` as cameras expect it: UTC, whole seconds, `Z`.
fn created(ms: i64) -> String {
    fumegrid_common::datetime::w3c(ms, fumegrid_common::datetime::Offset::UTC)
}

/// A SOAP 1.2 envelope around `body`, with `header` (or none).
pub fn envelope(header: Option<&str>, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"{NS_SOAP}\"><s:Header>{}</s:Header><s:Body>{body}</s:Body></s:Envelope>",
        header.unwrap_or("")
    )
}

/// Parses a SOAP answer; a SOAP Fault becomes the error it means (NotAuthorized →
/// [`CameraError::Unauthorized`]).
fn document(xml: &str) -> Result<roxmltree::Document<'_>, CameraError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        CameraError::Garbage(format!(
            "ONVIF answer is not XML: {}",
            fumegrid_common::text::clip(&e.to_string(), 200)
        ))
    })?;
    if let Some(fault) = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_SOAP, "Fault")))
    {
        let texts: Vec<&str> = fault
            .descendants()
            .filter(|n| n.has_tag_name((NS_SOAP, "Value")) || n.has_tag_name((NS_SOAP, "Text")))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        if texts
            .iter()
            .any(|t| t.ends_with(":NotAuthorized") || *t == "NotAuthorized")
        {
            return Err(CameraError::Unauthorized);
        }
        return Err(CameraError::Garbage(format!(
            "ONVIF fault: {}",
            fumegrid_common::text::clip(&texts.join(" / "), 200)
        )));
    }
    Ok(doc)
}

fn text_of<'a>(doc: &'a roxmltree::Document<'_>, ns: &str, name: &str) -> Option<&'a str> {
    doc.descendants()
        .find(|n| n.has_tag_name((ns, name)))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The camera's UTC clock from a `GetSystemDateAndTimeResponse`, ms since the epoch.
pub fn camera_utc_ms(xml: &str) -> Result<i64, CameraError> {
    let doc = document(xml)?;
    let utc = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_SCHEMA, "UTCDateTime")))
        .ok_or_else(|| CameraError::Garbage("GetSystemDateAndTime: no UTCDateTime".into()))?;
    let field = |parent: &str, name: &str| -> Option<u32> {
        utc.descendants()
            .find(|n| n.has_tag_name((NS_SCHEMA, parent)))?
            .children()
            .find(|n| n.has_tag_name((NS_SCHEMA, name)))?
            .text()?
            .trim()
            .parse()
            .ok()
    };
    let get = |p: &str, n: &str| {
        field(p, n)
            .ok_or_else(|| CameraError::Garbage(format!("GetSystemDateAndTime: no valid {p}/{n}")))
    };
    let s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        get("Date", "Year")?,
        get("Date", "Month")?,
        get("Date", "Day")?,
        get("Time", "Hour")?,
        get("Time", "Minute")?,
        get("Time", "Second")?
    );
    fumegrid_common::datetime::parse(&s)
        .and_then(|w| w.to_ms(fumegrid_common::datetime::Offset::UTC))
        .map_err(|e| {
            CameraError::Garbage(format!(
                "GetSystemDateAndTime: {}",
                fumegrid_common::text::clip(&e, 100)
            ))
        })
}

/// The media service's address from a `GetCapabilitiesResponse`, if the camera names one.
pub fn media_xaddr(xml: &str) -> Result<Option<String>, CameraError> {
    let doc = document(xml)?;
    Ok(doc
        .descendants()
        .find(|n| n.has_tag_name((NS_SCHEMA, "Media")))
        .and_then(|m| m.children().find(|n| n.has_tag_name((NS_SCHEMA, "XAddr"))))
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The first profile's token from a `GetProfilesResponse`.
pub fn first_profile(xml: &str) -> Result<String, CameraError> {
    let doc = document(xml)?;
    doc.descendants()
        .find(|n| n.has_tag_name((NS_MEDIA, "Profiles")))
        .and_then(|n| n.attribute("token"))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| CameraError::Garbage("GetProfiles: the camera has no media profile".into()))
}

/// The URL from a `GetSnapshotUriResponse`.
pub fn snapshot_uri(xml: &str) -> Result<String, CameraError> {
    let doc = document(xml)?;
    text_of(&doc, NS_SCHEMA, "Uri")
        .map(str::to_string)
        .ok_or_else(|| CameraError::Garbage("GetSnapshotUri: no Uri in the answer".into()))
}

/// A camera found through ONVIF.
#[derive(Debug)]
pub struct OnvifCamera {
    id: String,
    device: Url,
    creds: Option<Creds>,
    timeout_ms: u64,
    max_bytes: u64,
    client: Result<reqwest::Client, String>,
    clock: Clock,
    /// The snapshot URL found last, until a capture with it fails.
    found: Mutex<Option<Url>>,
}

impl OnvifCamera {
    pub fn new(
        id: &str,
        device: Url,
        creds: Option<Creds>,
        timeout_ms: u64,
        max_bytes: u64,
        clock: Clock,
    ) -> OnvifCamera {
        OnvifCamera {
            id: id.to_string(),
            device,
            creds,
            timeout_ms,
            max_bytes,
            client: client(Duration::from_millis(timeout_ms)),
            clock,
            found: Mutex::new(None),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, CameraError> {
        self.client
            .as_ref()
            .map_err(|e| CameraError::Unreachable(e.clone()))
    }

    /// The snapshot URL this camera found last (for `snapshot` to print).
    pub fn found(&self) -> Option<Url> {
        self.found.lock().ok().and_then(|g| g.clone())
    }

    async fn call(
        &self,
        url: &Url,
        ns: &str,
        action: &str,
        body: &str,
        offset_ms: Option<i64>,
    ) -> Result<String, CameraError> {
        let header = match (&self.creds, offset_ms) {
            (Some(c), Some(offset)) => {
                let mut nonce = [0u8; 16];
                getrandom::fill(&mut nonce).map_err(|e| {
                    CameraError::Unreachable(format!("no randomness for the ONVIF nonce: {e}"))
                })?;
                Some(security_header(
                    c,
                    &nonce,
                    self.clock.now_ms().saturating_add(offset),
                ))
            }
            _ => None,
        };
        let xml = envelope(header.as_deref(), body);
        let content_type = format!("application/soap+xml; charset=utf-8; action=\"{ns}/{action}\"");
        let answer = request(
            self.http()?,
            Method::POST,
            url,
            xml.as_bytes(),
            Some(&content_type),
            self.creds.as_ref(),
            MAX_SOAP_BYTES,
        )
        .await?;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        // SOAP faults come with 400 or 500: let the fault speak when there is one.
        if !answer.status.is_success() {
            return Err(match document(&text) {
                Err(CameraError::Unauthorized) => CameraError::Unauthorized,
                Err(CameraError::Garbage(m)) if m.starts_with("ONVIF fault") => {
                    CameraError::Garbage(m)
                }
                _ => CameraError::Status(answer.status.as_u16()),
            });
        }
        Ok(text)
    }

    /// Asks the camera for its snapshot URL (steps 1–4 of the module doc).
    pub async fn discover(&self) -> Result<Url, CameraError> {
        // A camera that does not answer GetSystemDateAndTime is used with our clock.
        let offset = match self
            .call(
                &self.device,
                NS_DEVICE,
                "GetSystemDateAndTime",
                &format!("<GetSystemDateAndTime xmlns=\"{NS_DEVICE}\"/>"),
                None,
            )
            .await
        {
            Ok(xml) => camera_utc_ms(&xml).map_or(0, |cam| cam - self.clock.now_ms()),
            Err(e @ (CameraError::Unreachable(_) | CameraError::Timeout(_))) => return Err(e),
            Err(_) => 0,
        };
        let caps = self
            .call(
                &self.device,
                NS_DEVICE,
                "GetCapabilities",
                &format!(
                    "<GetCapabilities xmlns=\"{NS_DEVICE}\"><Category>Media</Category></GetCapabilities>"
                ),
                Some(offset),
            )
            .await?;
        let media = match media_xaddr(&caps)? {
            Some(x) => Url::parse(&x).map_err(|e| {
                CameraError::Garbage(format!(
                    "GetCapabilities: media address {:?}: {e}",
                    fumegrid_common::text::clip(&x, 100)
                ))
            })?,
            None => self.device.clone(),
        };
        let profiles = self
            .call(
                &media,
                NS_MEDIA,
                "GetProfiles",
                &format!("<GetProfiles xmlns=\"{NS_MEDIA}\"/>"),
                Some(offset),
            )
            .await?;
        let token = first_profile(&profiles)?;
        let uri = self
            .call(
                &media,
                NS_MEDIA,
                "GetSnapshotUri",
                &format!(
                    "<GetSnapshotUri xmlns=\"{NS_MEDIA}\"><ProfileToken>{}</ProfileToken></GetSnapshotUri>",
                    fumegrid_common::text::xml_escape(&token)
                ),
                Some(offset),
            )
            .await?;
        let uri = snapshot_uri(&uri)?;
        Url::parse(&uri).map_err(|e| {
            CameraError::Garbage(format!(
                "GetSnapshotUri: {:?}: {e}",
                fumegrid_common::text::clip(&uri, 100)
            ))
        })
    }

    async fn take(&self) -> Result<Capture, CameraError> {
        let known = self.found();
        let url = match known {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                if let Ok(mut g) = self.found.lock() {
                    *g = Some(u.clone());
                }
                u
            }
        };
        snapshot(
            self.http()?,
            &url,
            self.creds.as_ref(),
            self.max_bytes,
            &self.clock,
        )
        .await
    }
}

impl super::Camera for OnvifCamera {
    fn id(&self) -> &str {
        &self.id
    }

    fn capture(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Capture, CameraError>> + Send + '_>> {
        Box::pin(async move {
            let r = bounded(self.timeout_ms, self.take()).await;
            // Any failure (the time bound included) may come from a stale URL: ask again next
            // time.
            if r.is_err()
                && let Ok(mut g) = self.found.lock()
            {
                *g = None;
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the WS-Security UsernameToken Profile 1.0 (§3.1) and ONVIF's
    /// Application Programmer's Guide: nonce `LKqI6G/AikKCQrN0zqZFlg==`, created
    /// `2010-09-16T07:50:45Z`, password `userpassword` → `tuOSpGlFlIXsozq4HFNeeGeFLEI=`.
    #[test]
    fn password_digest_matches_the_onvif_guide() {
        let nonce = base64::engine::general_purpose::STANDARD
            .decode("LKqI6G/AikKCQrN0zqZFlg==")
            .expect("nonce");
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn the_header_escapes_the_user_and_uses_camera_time() {
        let c = Creds {
            user: "a<b&".into(),
            password: "pw".into(),
        };
        let h = security_header(&c, &[0; 16], 1_284_623_445_000);
        assert!(
            h.contains("<wsse:Username>a&lt;b&amp;</wsse:Username>"),
            "{h}"
        );
        assert!(
            h.contains("<wsu:Created>2010-09-16T07:50:45Z</wsu:Created>"),
            "{h}"
        );
        assert!(!h.contains(">pw<"), "{h}");
    }

    const PROFILES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">
<env:Body><trt:GetProfilesResponse>
<trt:Profiles token="Profile_1" fixed="true"><tt:Name>mainStream</tt:Name></trt:Profiles>
<trt:Profiles token="Profile_2" fixed="true"><tt:Name>subStream</tt:Name></trt:Profiles>
</trt:GetProfilesResponse></env:Body></env:Envelope>"#;

    #[test]
    fn parses_the_answers_of_a_camera() {
        assert_eq!(first_profile(PROFILES), Ok("Profile_1".into()));
        let uri = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>
<trt:GetSnapshotUriResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">
<trt:MediaUri><tt:Uri>http://192.168.1.64/onvif-http/snapshot?Profile_1</tt:Uri>
<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect></trt:MediaUri>
</trt:GetSnapshotUriResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            snapshot_uri(uri),
            Ok("http://192.168.1.64/onvif-http/snapshot?Profile_1".into())
        );
        let caps = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body>
<tds:GetCapabilitiesResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><tds:Capabilities>
<tt:Media><tt:XAddr>http://192.168.1.64/onvif/Media</tt:XAddr></tt:Media>
</tds:Capabilities></tds:GetCapabilitiesResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            media_xaddr(caps),
            Ok(Some("http://192.168.1.64/onvif/Media".into()))
        );
        let time = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body>
<tds:GetSystemDateAndTimeResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><tds:SystemDateAndTime>
<tt:DateTimeType>Manual</tt:DateTimeType><tt:UTCDateTime><tt:Time><tt:Hour>7</tt:Hour><tt:Minute>50</tt:Minute><tt:Second>45</tt:Second></tt:Time>
<tt:Date><tt:Year>2010</tt:Year><tt:Month>9</tt:Month><tt:Day>16</tt:Day></tt:Date></tt:UTCDateTime>
</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse></s:Body></s:Envelope>"#;
        assert_eq!(camera_utc_ms(time), Ok(1_284_623_445_000));
    }

    #[test]
    fn faults_and_junk_are_clear_errors() {
        let fault = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><s:Body><s:Fault>
<s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value></s:Subcode></s:Code>
<s:Reason><s:Text xml:lang="en">Sender not Authorized</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(first_profile(fault), Err(CameraError::Unauthorized));
        let other = fault.replace("ter:NotAuthorized", "ter:ActionNotSupported");
        assert!(
            matches!(snapshot_uri(&other), Err(CameraError::Garbage(m)) if m.contains("ActionNotSupported"))
        );
        assert!(matches!(
            first_profile("<html>"),
            Err(CameraError::Garbage(_))
        ));
        assert!(matches!(
            first_profile("<a xmlns='x'/>"),
            Err(CameraError::Garbage(m)) if m.contains("no media profile")
        ));
        assert!(matches!(
            camera_utc_ms(PROFILES),
            Err(CameraError::Garbage(_))
        ));
    }
}
