//! The broker's rules for one account, as pure decisions (DESIGN.md §3): a client id is the
//! account name, an account publishes only to its own `up` and `status` and subscribes only to
//! its own `ack` and `cmd`. No wildcards, no other topic, no other client id; so nothing an
//! account sends can make the broker keep state for a topic name it made up.
//!
//! A DJI account (a registered dock or DJI Pilot 2 remote controller, docs/drones.md "DJI
//! Cloud API") has its own scope instead: the serial numbers registered under it (the dock
//! and its aircraft). Its client id is the account or one of those serial numbers (a dock
//! picks its own); it publishes only DJI's device-to-cloud topics of those serial numbers
//! (`thing/product/{sn}/osd|state|services_reply|events|requests|property/set_reply|drc/up`,
//! `sys/product/{sn}/status`) and subscribes only to their cloud-to-device ones, by exact
//! name. The topic set is fixed per account, so the broker's memory stays bounded here too.

use fumegrid_common::wire::{self, Channel};

/// Why the gate refused a client. The `name` is the `reason` label of
/// `fumegrid_broker_refused_total` and the `reason` field of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The first packet was not a CONNECT, or it did not arrive in time.
    NoConnect,
    /// Not MQTT 3.1.1 (the only protocol the embedded broker speaks).
    Protocol,
    /// No user name or password, or a wrong one.
    BadLogin,
    /// The client id is not the account's name.
    ClientId,
    /// The Last Will is not on the account's own `status` topic.
    Will,
    /// A PUBLISH to a topic other than the account's `up` or `status`.
    Publish,
    /// A SUBSCRIBE (or UNSUBSCRIBE) to a filter other than the account's `ack` or `cmd`.
    Subscribe,
    /// A packet a client must not send (a second CONNECT, a CONNACK, ...), or one that does not
    /// parse, or one over the size limit.
    Malformed,
    /// Too many connections at once.
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::NoConnect,
        Refusal::Protocol,
        Refusal::BadLogin,
        Refusal::ClientId,
        Refusal::Will,
        Refusal::Publish,
        Refusal::Subscribe,
        Refusal::Malformed,
        Refusal::Busy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::NoConnect => "no_connect",
            Refusal::Protocol => "protocol",
            Refusal::BadLogin => "bad_login",
            Refusal::ClientId => "client_id",
            Refusal::Will => "will",
            Refusal::Publish => "publish",
            Refusal::Subscribe => "subscribe",
            Refusal::Malformed => "malformed",
            Refusal::Busy => "busy",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The client id must be the account (the user name it logged in with).
pub fn client_id(account: &str, client_id: &str) -> Result<(), Refusal> {
    if client_id == account {
        Ok(())
    } else {
        Err(Refusal::ClientId)
    }
}

/// Whether `account` may publish on `topic` (a Last Will included): its own `up` or `status`.
pub fn publish(account: &str, topic: &str) -> Result<(), Refusal> {
    match wire::parse_topic(topic) {
        Some((gw, Channel::Up | Channel::Status)) if gw == account => Ok(()),
        _ => Err(Refusal::Publish),
    }
}

/// Whether `account` may subscribe to (or unsubscribe from) `filter`: exactly its own `ack` or
/// `cmd`, no wildcard.
pub fn subscribe(account: &str, filter: &str) -> Result<(), Refusal> {
    match wire::parse_topic(filter) {
        Some((gw, Channel::Ack | Channel::Cmd)) if gw == account => Ok(()),
        _ => Err(Refusal::Subscribe),
    }
}

/// What an account may do: a gateway's own topics, or a DJI account's serial numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Gateway(&'a str),
    Dji {
        account: &'a str,
        serials: &'a [String],
    },
}

impl Scope<'_> {
    /// The client id must be the account's name, or (DJI) one of its serial numbers.
    pub fn client_id(&self, client_id: &str) -> Result<(), Refusal> {
        match self {
            Scope::Gateway(account) => self::client_id(account, client_id),
            Scope::Dji { account, serials } => {
                if client_id == *account || serials.iter().any(|s| s == client_id) {
                    Ok(())
                } else {
                    Err(Refusal::ClientId)
                }
            }
        }
    }

    pub fn publish(&self, topic: &str) -> Result<(), Refusal> {
        match self {
            Scope::Gateway(account) => self::publish(account, topic),
            Scope::Dji { serials, .. } => dji_topic(serials, topic, &DJI_PUBLISH)
                .then_some(())
                .ok_or(Refusal::Publish),
        }
    }

    pub fn subscribe(&self, filter: &str) -> Result<(), Refusal> {
        match self {
            Scope::Gateway(account) => self::subscribe(account, filter),
            Scope::Dji { serials, .. } => dji_topic(serials, filter, &DJI_SUBSCRIBE)
                .then_some(())
                .ok_or(Refusal::Subscribe),
        }
    }
}

/// DJI's device-to-cloud topics (`{root}/product/{sn}/{leaf}`), as (root, leaf).
const DJI_PUBLISH: [(&str, &str); 8] = [
    ("thing", "osd"),
    ("thing", "state"),
    ("thing", "services_reply"),
    ("thing", "events"),
    ("thing", "requests"),
    ("thing", "property/set_reply"),
    ("thing", "drc/up"),
    ("sys", "status"),
];

/// DJI's cloud-to-device topics.
const DJI_SUBSCRIBE: [(&str, &str); 6] = [
    ("thing", "services"),
    ("thing", "events_reply"),
    ("thing", "requests_reply"),
    ("thing", "property/set"),
    ("thing", "drc/down"),
    ("sys", "status_reply"),
];

/// `topic` is `{root}/product/{sn}/{leaf}` with `sn` one of `serials` and (root, leaf) in
/// `allowed`. Wildcards never match (`+` and `#` are not serial numbers nor leaves).
fn dji_topic(serials: &[String], topic: &str, allowed: &[(&str, &str)]) -> bool {
    let mut parts = topic.splitn(4, '/');
    let (Some(root), Some("product"), Some(sn), Some(leaf)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    serials.iter().any(|s| s == sn) && allowed.contains(&(root, leaf))
}

/// At most `max` characters of something a client sent, for a log line.
pub fn bounded(s: &str, max: usize) -> String {
    let clipped = fumegrid_common::text::clip(s, max);
    if clipped.len() < s.len() {
        format!("{clipped}… ({} bytes)", s.len())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_the_account() {
        assert_eq!(client_id("gw-1", "gw-1"), Ok(()));
        assert_eq!(client_id("gw-1", "gw-2"), Err(Refusal::ClientId));
        assert_eq!(client_id("gw-1", ""), Err(Refusal::ClientId));
        assert_eq!(
            client_id("gw-1", "fumegrid-ingest-x"),
            Err(Refusal::ClientId)
        );
    }

    #[test]
    fn an_account_publishes_to_its_own_up_and_status_only() {
        assert_eq!(publish("gw-1", "fumegrid/v1/gw-1/up"), Ok(()));
        assert_eq!(publish("gw-1", "fumegrid/v1/gw-1/status"), Ok(()));
        for t in [
            "fumegrid/v1/gw-2/up",
            "fumegrid/v1/gw-1/ack",
            "fumegrid/v1/gw-1/cmd",
            "fumegrid/v1/gw-1/up/x",
            "fumegrid/v1/+/up",
            "fumegrid/#",
            "fumegrid/v1/gw-1",
            "other",
            "",
        ] {
            assert_eq!(publish("gw-1", t), Err(Refusal::Publish), "{t}");
        }
    }

    #[test]
    fn an_account_subscribes_to_its_own_ack_and_cmd_only() {
        assert_eq!(subscribe("gw-1", "fumegrid/v1/gw-1/ack"), Ok(()));
        assert_eq!(subscribe("gw-1", "fumegrid/v1/gw-1/cmd"), Ok(()));
        for f in [
            "fumegrid/#",
            "#",
            "fumegrid/v1/+/ack",
            "fumegrid/v1/gw-1/+",
            "fumegrid/v1/gw-1/#",
            "fumegrid/v1/gw-2/ack",
            "fumegrid/v1/gw-1/up",
            "$share/g/fumegrid/v1/gw-1/ack",
        ] {
            assert_eq!(subscribe("gw-1", f), Err(Refusal::Subscribe), "{f}");
        }
    }

    #[test]
    fn a_dji_account_uses_its_own_serials_and_dji_topics_only() {
        let serials = ["DOCK1".to_string(), "AIR1".to_string()];
        let dji = Scope::Dji {
            account: "dock-east",
            serials: &serials,
        };
        for id in ["dock-east", "DOCK1", "AIR1"] {
            assert_eq!(dji.client_id(id), Ok(()), "{id}");
        }
        for id in ["gw-1", "DOCK2", "fumegrid-ingest-x", ""] {
            assert_eq!(dji.client_id(id), Err(Refusal::ClientId), "{id}");
        }
        for t in [
            "thing/product/AIR1/osd",
            "thing/product/DOCK1/osd",
            "thing/product/DOCK1/property/set_reply",
            "sys/product/DOCK1/status",
        ] {
            assert_eq!(dji.publish(t), Ok(()), "{t}");
        }
        for t in [
            "thing/product/OTHER/osd",
            "thing/product/AIR1/services",
            "thing/product/AIR1/osd/x",
            "thing/product/+/osd",
            "thing/product/AIR1/madeup",
            "sys/product/DOCK1/status_reply",
            "fumegrid/v1/dock-east/up",
            "thing/product",
            "",
        ] {
            assert_eq!(dji.publish(t), Err(Refusal::Publish), "{t}");
        }
        assert_eq!(dji.subscribe("thing/product/DOCK1/services"), Ok(()));
        assert_eq!(dji.subscribe("sys/product/DOCK1/status_reply"), Ok(()));
        for f in [
            "thing/product/+/services",
            "thing/product/#",
            "#",
            "thing/product/DOCK1/osd",
            "thing/product/OTHER/services",
        ] {
            assert_eq!(dji.subscribe(f), Err(Refusal::Subscribe), "{f}");
        }
        // A gateway's scope is unchanged.
        let gw = Scope::Gateway("gw-1");
        assert_eq!(gw.publish("fumegrid/v1/gw-1/up"), Ok(()));
        assert_eq!(gw.publish("thing/product/AIR1/osd"), Err(Refusal::Publish));
        assert_eq!(gw.client_id("AIR1"), Err(Refusal::ClientId));
    }

    #[test]
    fn bounded_cuts_long_input() {
        assert_eq!(bounded("abc", 5), "abc");
        let long = "x".repeat(30_000);
        let b = bounded(&long, 64);
        assert!(b.len() < 100, "{b}");
        assert!(b.ends_with("(30000 bytes)"));
        assert_eq!(bounded("ééé", 2), "éé… (6 bytes)");
    }
}
