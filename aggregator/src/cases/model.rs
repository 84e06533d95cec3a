//! The case state machine: [`open`] and [`apply`] are pure functions of
//! `(case, command, actor, now, catalogue)` returning the new case, the events to append and the
//! effects for the caller to carry out. Nothing here reads a clock, a file or a socket.
//!
//! ```text
//!             reject              (terminal)
//! reported ─────────► rejected
//!    │ register
//!    ▼          dispatch                accept              handle             verify            close
//! registered ────────────► dispatched ─────────► accepted ─────────► handled ─────────► verified ───────► closed ─► rate
//!    ▲                      │  ▲  ▲ transfer      │   ▲ ▲                │ fail_verification
//!    └──── return ──────────┴──┼──┼───────────────┘   │ └────────────────┤  (rework: back_to
//!                              │  └─ transfer ────────┘                  │   dispatched or accepted)
//!                              └─────────────────────────────────────────┘
//! ```
//!
//! Side commands that keep the state: `extend` (dispatched/accepted: later handling deadline),
//! `comment` (any state), `link_alarm` (any state: a later transition of an alarm episode joins
//! its case even when the case is closed), the timers `sign_for_overdue`,
//! `handle_overdue` and `escalate` (see [`super::timers`]), and `rate` (closed, once).
//!
//! Who may do what ([`Action::name`] → roles; "own" = the case's current department, or the
//! reporter who filed it):
//!
//! | command | from | to | roles |
//! |---|---|---|---|
//! | register | reported | registered | operator, system |
//! | reject | reported | rejected | operator |
//! | dispatch | registered | dispatched | operator, system |
//! | accept | dispatched | accepted | own department |
//! | return | dispatched, accepted | registered | own department |
//! | transfer | dispatched, accepted | dispatched | operator |
//! | handle | accepted | handled | own department |
//! | verify | handled | verified | operator, system |
//! | fail_verification | handled | dispatched / accepted | operator, system |
//! | close | verified | closed | operator |
//! | extend | dispatched, accepted | = | operator |
//! | rate | closed | = | operator, own reporter |
//! | comment | any | = | operator, system, own department, own reporter |
//! | link_alarm | any | = | system |
//! | aerial_pass | any open | = | system |
//! | sign_for_overdue, handle_overdue, escalate | see timers | = | system |
//!
//! `verify` is refused while a linked alarm episode is still raised
//! ([`CaseError::AlarmStillRaised`]) unless an operator gives an override note (`"override"`),
//! which the `verified` event keeps.
//!
//! Viewers may do nothing. A role not in the row gets [`CaseError::Forbidden`]; an allowed role
//! in the wrong state gets [`CaseError::IllegalTransition`].
//!
//! Deadlines (working time on the catalogue's calendar): `dispatch` and `transfer` set the
//! sign-for deadline (`now + sign_for`) and the handling deadline (`now + handle`) and clear the
//! overdue flags; the first dispatch also sets the escalation instant (`now + escalation.after`),
//! which nothing resets. `return` clears both deadlines (the case is back with the dispatcher).
//! Rework back to `dispatched` sets a new sign-for deadline; the handling deadline stays (a
//! failed fix does not buy time). `extend` moves the handling deadline by an amount from
//! `max(deadline, now)`.
//!
//! Every event carries the case's category, department, site and grid cell at that moment, so
//! statistics need the event log only ([`super::stats`]).

use std::fmt;

use fumegrid_common::wire::{AlarmKind, AlarmPhase};
use serde::{Deserialize, Serialize};

use super::calendar::{BeyondHorizon, WorkAmount, add_working};

/// The most one extension may add: 30 working days or 240 working hours.
pub const MAX_EXTENSION_DAYS: u32 = 30;
pub const MAX_EXTENSION_HOURS: u32 = 240;
/// How far after now an extended deadline may lie (calendar days): repeated extensions cannot
/// push a deadline years out (266 × 10000 d once reached the year 371792).
pub const MAX_DEADLINE_AHEAD_DAYS: i64 = 366;
use super::catalogue::{Catalogue, Category};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// 上报: filed, not yet looked at.
    Reported,
    /// 立案: accepted as a case by the dispatcher.
    Registered,
    /// 不予立案: not a case (terminal).
    Rejected,
    /// 派遣: sent to a department, waiting for it to sign for it.
    Dispatched,
    /// 签收: the department has signed for it.
    Accepted,
    /// 处置/反馈: the department reports it dealt with.
    Handled,
    /// 核查: checked (by an operator, or by normal readings).
    Verified,
    /// 结案 (terminal except for rating).
    Closed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Reported,
        State::Registered,
        State::Rejected,
        State::Dispatched,
        State::Accepted,
        State::Handled,
        State::Verified,
        State::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Reported => "reported",
            State::Registered => "registered",
            State::Rejected => "rejected",
            State::Dispatched => "dispatched",
            State::Accepted => "accepted",
            State::Handled => "handled",
            State::Verified => "verified",
            State::Closed => "closed",
        }
    }

    /// Not rejected and not closed: alarms link to it, timers run.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Rejected | State::Closed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// The dispatch centre (监督指挥中心).
    Operator,
    /// A department, acting on its own cases only.
    Department { department: String },
    /// Read-only.
    Viewer,
    /// The aggregator itself: alarms, timers, automatic verification.
    System,
    /// A citizen (Open311) or hotline reporter, acting on the cases it filed.
    Reporter,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Operator => f.write_str("an operator"),
            Role::Department { department } => write!(f, "department `{department}`"),
            Role::Viewer => f.write_str("a viewer"),
            Role::System => f.write_str("the system"),
            Role::Reporter => f.write_str("a reporter"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// User, token or system component id.
    pub id: String,
    #[serde(flatten)]
    pub role: Role,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            id: "system".into(),
            role: Role::System,
        }
    }
    pub fn operator(id: &str) -> Actor {
        Actor {
            id: id.into(),
            role: Role::Operator,
        }
    }
    pub fn department(id: &str, department: &str) -> Actor {
        Actor {
            id: id.into(),
            role: Role::Department {
                department: department.into(),
            },
        }
    }
}

/// Where rework sends a case whose verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReworkTo {
    /// The department must sign for it again (new sign-for deadline).
    Dispatched,
    /// The department keeps it and handles it again.
    Accepted,
}

/// The derived timers (see [`super::timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    SignFor,
    Handle,
    Escalate,
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimerKind::SignFor => "sign_for",
            TimerKind::Handle => "handle",
            TimerKind::Escalate => "escalate",
        })
    }
}

/// One alarm episode transition linked to a case (the latest one per episode is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRef {
    pub gateway: String,
    /// The episode id (wire `Alarm::id`).
    pub id: String,
    pub phase: AlarmPhase,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Register,
    Reject,
    /// `department`: none = the category's responsible department.
    Dispatch {
        #[serde(default)]
        department: Option<String>,
    },
    Accept,
    Return,
    Transfer {
        department: String,
    },
    Handle,
    /// `override_note`: verify although a linked alarm episode is still raised (operators only;
    /// JSON `"override": "why"`). Without it such a verification is refused
    /// ([`CaseError::AlarmStillRaised`]).
    Verify {
        #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
        override_note: Option<String>,
    },
    FailVerification {
        back_to: ReworkTo,
    },
    Close,
    Extend {
        by: WorkAmount,
    },
    Rate {
        satisfaction: u8,
    },
    Comment,
    LinkAlarm {
        alarm: AlarmRef,
    },
    /// A drone passed near the case's site (issue 15): the pass with its track segment and
    /// photos joins the timeline. Casework's aerial judgment only, on open cases.
    AerialPass {
        pass: AerialRef,
    },
    Timer {
        timer: TimerKind,
    },
}

impl Action {
    /// Plain verification (no override).
    pub fn verify() -> Action {
        Action::Verify {
            override_note: None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::Reject => "reject",
            Action::Dispatch { .. } => "dispatch",
            Action::Accept => "accept",
            Action::Return => "return",
            Action::Transfer { .. } => "transfer",
            Action::Handle => "handle",
            Action::Verify { .. } => "verify",
            Action::FailVerification { .. } => "fail_verification",
            Action::Close => "close",
            Action::Extend { .. } => "extend",
            Action::Rate { .. } => "rate",
            Action::Comment => "comment",
            Action::LinkAlarm { .. } => "link_alarm",
            Action::AerialPass { .. } => "aerial_pass",
            Action::Timer {
                timer: TimerKind::SignFor,
            } => "sign_for_overdue",
            Action::Timer {
                timer: TimerKind::Handle,
            } => "handle_overdue",
            Action::Timer {
                timer: TimerKind::Escalate,
            } => "escalate",
        }
    }
}

/// An action with the actor's note (shown in the timeline): `{"action": "extend", "by": "1d",
/// "note": "..."}`. Strict: a field the action does not take is refused (`serde(flatten)` would
/// silently accept a typo such as `"departmnet"`), see the `Deserialize` impl.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    #[serde(flatten)]
    pub action: Action,
    #[serde(default)]
    pub note: String,
}

impl<'de> Deserialize<'de> for Command {
    /// Reads the object, takes `note` out, reads the rest as an [`Action`], then refuses every
    /// field that the action did not use (the action's own fields are exactly the keys it
    /// serialises back to, so the list of allowed fields cannot drift from the enum).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let note = match map.remove("note") {
            None => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`note` must be a string, not {}",
                    json_kind(&other)
                )));
            }
        };
        let action = Action::deserialize(serde_json::Value::Object(map.clone()))
            .map_err(D::Error::custom)?;
        let used = serde_json::to_value(&action).map_err(D::Error::custom)?;
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| used.get(k.as_str()).is_none())
            .collect();
        unknown.sort_unstable();
        if let Some(k) = unknown.first() {
            let mut allowed: Vec<&str> = used
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            allowed.push("note");
            return Err(D::Error::custom(format!(
                "unknown field `{}` for action `{}`; expected {}",
                fumegrid_common::text::clip(k, 64),
                action.name(),
                allowed.join(", ")
            )));
        }
        Ok(Command { action, note })
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Command {
    pub fn new(action: Action) -> Command {
        Command {
            action,
            note: String::new(),
        }
    }
    pub fn note(action: Action, note: impl Into<String>) -> Command {
        Command {
            action,
            note: note.into(),
        }
    }
}

/// A drone's pass near a case's site, as its timeline keeps it: who flew, when it was within
/// the distance, how close it came, the track segment and the photos taken near the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerialRef {
    pub drone: String,
    /// `mavlink` or `dji`.
    pub source: String,
    /// The site's gateway id.
    pub site: String,
    /// First and last point within the distance (drone time, ms).
    pub start_ms: i64,
    pub end_ms: i64,
    pub min_distance_m: Coord,
    /// The segment (thinned to at most `cases::aerial::MAX_SEGMENT_POINTS`), oldest first.
    pub track: Vec<AerialPoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<AerialPhoto>,
}

/// One point of an [`AerialRef`]'s segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerialPoint {
    pub ts_ms: i64,
    pub lat: Coord,
    pub lon: Coord,
    pub alt_m: Coord,
}

/// A photo of an [`AerialRef`]: its picture is among the case's pictures when `sha256` names
/// one the evidence store holds (or receives later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerialPhoto {
    pub ts_ms: i64,
    pub lat: Coord,
    pub lon: Coord,
    pub index: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// How a case came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum Origin {
    /// A sensor alarm of `kind` on `device` behind `gateway`.
    Alarm {
        gateway: String,
        device: String,
        kind: AlarmKind,
    },
    /// Open311 or the hotline.
    Citizen,
    /// Filed by an operator (inspection, leader's instruction).
    Operator,
    /// Filed from a drone's observation (a patrol find, issue 15): where and when the drone
    /// saw it, and which drone when known. The photo is uploaded to the case.
    Patrol {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drone: Option<String>,
        lat: Coord,
        lon: Coord,
        observed_ms: i64,
    },
}

impl Origin {
    /// The source a case of this origin is counted under.
    pub fn source(&self) -> Source {
        match self {
            Origin::Alarm { .. } => Source::Sensor,
            Origin::Citizen => Source::Citizen,
            Origin::Operator => Source::Inspector,
            Origin::Patrol { .. } => Source::Drone,
        }
    }
}

/// A WGS 84 coordinate in degrees. Compared by its bits, so a case (which is `Eq`) can carry
/// one; it is never NaN (the API refuses one).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Coord(pub f64);

impl PartialEq for Coord {
    fn eq(&self, o: &Coord) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for Coord {}

/// Where a case is: the point a citizen reported (Open311 `lat`/`long`), a drone saw (a patrol
/// find) or an operator filed it at. WGS 84 degrees, checked by whoever files it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub lat: Coord,
    pub lon: Coord,
}

impl Position {
    /// A WGS 84 point: latitude -90 ..= 90 and longitude -180 ..= 180, both finite; else why
    /// not. Pure.
    pub fn checked(lat: f64, lon: f64) -> Result<Position, String> {
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(format!("lat {lat} is not a latitude (-90 ..= 90)"));
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(format!("lon {lon} is not a longitude (-180 ..= 180)"));
        }
        Ok(Position::new(lat, lon))
    }

    pub fn new(lat: f64, lon: f64) -> Position {
        Position {
            lat: Coord(lat),
            lon: Coord(lon),
        }
    }
}

/// How a case came to the platform, for statistics (`by_source`): what share sensors, citizens,
/// drone patrols and grid inspectors found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A sensor alarm (origin `alarm`).
    Sensor,
    /// A citizen report: Open311 or the hotline (origin `citizen`).
    Citizen,
    /// A drone patrol find (origin `patrol`).
    Drone,
    /// A grid inspector or an operator's own finding (origin `operator`).
    Inspector,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Sensor,
        Source::Citizen,
        Source::Drone,
        Source::Inspector,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Sensor => "sensor",
            Source::Citizen => "citizen",
            Source::Drone => "drone",
            Source::Inspector => "inspector",
        }
    }

    pub fn from_name(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// What a new case starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intake {
    pub category: String,
    pub title: String,
    pub origin: Origin,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub grid_cell: Option<String>,
}

/// A case as it stands (the fold of its events; the store keeps both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub category: String,
    pub title: String,
    pub origin: Origin,
    /// How it came in (from its origin; statistics count by it).
    pub source: Source,
    pub state: State,
    /// The reporter's actor id, when a reporter filed it (may rate it).
    pub reporter: Option<String>,
    pub site: Option<String>,
    pub grid_cell: Option<String>,
    /// Its own point, when it was filed with one (a citizen's `lat`/`long`, a patrol find's
    /// position, an operator's point); none for cases at a site only. Cases stored before
    /// schema 17 read as none, and the upgrade fills it where their point is known.
    #[serde(default)]
    pub position: Option<Position>,
    /// The department it is with (dispatched or later); none before dispatch and after return.
    pub department: Option<String>,
    pub reported_ms: i64,
    pub registered_ms: Option<i64>,
    pub first_dispatched_ms: Option<i64>,
    /// The latest dispatch (or transfer, or rework back to dispatched).
    pub dispatched_ms: Option<i64>,
    pub accepted_ms: Option<i64>,
    pub handled_ms: Option<i64>,
    pub verified_ms: Option<i64>,
    pub closed_ms: Option<i64>,
    pub sign_for_deadline_ms: Option<i64>,
    pub handle_deadline_ms: Option<i64>,
    /// When the community stage ends (first dispatch + escalation.after); none without escalation.
    pub escalate_at_ms: Option<i64>,
    pub sign_for_overdue: bool,
    pub handle_overdue: bool,
    pub escalated: bool,
    pub rating: Option<u8>,
    pub transfers: u32,
    pub returns: u32,
    pub reworks: u32,
    pub extensions: u32,
    /// Latest transition of each linked alarm episode.
    pub alarms: Vec<AlarmRef>,
    /// Seq of the last event (events are numbered 1, 2, … per case).
    pub seq: u64,
}

impl Case {
    /// Some linked alarm episode has not cleared.
    pub fn alarm_active(&self) -> bool {
        self.alarms.iter().any(|a| a.phase != AlarmPhase::Cleared)
    }

    /// The ids of the linked episodes that have not cleared.
    pub fn raised_episodes(&self) -> Vec<String> {
        self.alarms
            .iter()
            .filter(|a| a.phase != AlarmPhase::Cleared)
            .map(|a| a.id.clone())
            .collect()
    }

    /// Whether alarm episode `id` from `gateway` is linked to this case.
    pub fn has_episode(&self, gateway: &str, id: &str) -> bool {
        self.alarms
            .iter()
            .any(|a| a.gateway == gateway && a.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Reported,
    Registered,
    Rejected,
    Dispatched,
    Accepted,
    Returned,
    Transferred,
    Handled,
    Verified,
    VerificationFailed,
    Closed,
    Extended,
    Rated,
    Commented,
    AlarmLinked,
    /// A drone passed near the site ([`Action::AerialPass`]).
    AerialPass,
    SignForOverdue,
    HandleOverdue,
    Escalated,
}

/// One append-only timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub case_id: String,
    /// 1, 2, … per case.
    pub seq: u64,
    pub kind: EventKind,
    pub actor: Actor,
    pub ts_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// None for `reported`.
    pub from_state: Option<State>,
    pub to_state: State,
    /// The case's dimensions after the event (statistics group by them).
    pub category: String,
    pub source: Source,
    pub department: Option<String>,
    pub site: Option<String>,
    pub grid_cell: Option<String>,
    /// The handling deadline in force after the event, on `dispatched`, `transferred`,
    /// `extended` and `returned` (none: cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// `transferred`: the department it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_department: Option<String>,
    /// `escalated`: every department notified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<AlarmRef>,
    /// `aerial_pass`: the pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aerial: Option<AerialRef>,
    /// `verified` while an alarm episode was still raised: the operator's reason.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_note: Option<String>,
}

/// What the caller must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Tell `department` (its webhook) about event `seq` of the case.
    Notify {
        department: String,
        case_id: String,
        seq: u64,
        kind: EventKind,
    },
    /// A timer of the case falls due at `at_ms`: wake [`super::timers::due`] then. Only a hint:
    /// timers are derived from the case, so a restart loses nothing (see [`super::timers`]).
    Schedule {
        case_id: String,
        timer: TimerKind,
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("cannot {command} a case that is {from}")]
    IllegalTransition { from: State, command: &'static str },
    #[error("{role} may not {command}: {reason}")]
    Forbidden {
        role: String,
        command: &'static str,
        reason: String,
    },
    #[error("no category `{0}` in the catalogue")]
    UnknownCategory(String),
    #[error("no department `{0}` in the catalogue")]
    UnknownDepartment(String),
    #[error("the case is already with department `{0}`")]
    SameDepartment(String),
    #[error("satisfaction must be 1 to 5, got {0}")]
    BadRating(u8),
    #[error("the case was already rated")]
    AlreadyRated,
    #[error("the {timer} timer is not due")]
    NotDue { timer: TimerKind },
    #[error(
        "cannot verify while alarm episode {episodes} is still raised (the readings are not \
         back to normal); an operator who has checked on site may verify anyway with \
         `\"override\": \"<why>\"`"
    )]
    AlarmStillRaised { episodes: String },
    #[error("an extension adds at most {MAX_EXTENSION_DAYS}d or {MAX_EXTENSION_HOURS}h, not {0}")]
    ExtensionTooLong(WorkAmount),
    #[error(
        "the deadline would move more than {MAX_DEADLINE_AHEAD_DAYS} days ahead \
         (to {deadline_ms} ms); extend by less"
    )]
    DeadlineTooFar { deadline_ms: i64 },
    #[error("cannot set a deadline: {0} (check the catalogue's calendar)")]
    BeyondHorizon(#[from] BeyondHorizon),
}

type Outcome = Result<(Case, Vec<Event>, Vec<Effect>), CaseError>;

fn forbidden(actor: &Actor, command: &'static str, reason: impl Into<String>) -> CaseError {
    CaseError::Forbidden {
        role: actor.role.to_string(),
        command,
        reason: reason.into(),
    }
}

/// Files a new case in state `reported`. Operators, the system and reporters may file.
pub fn open(
    id: &str,
    intake: Intake,
    actor: &Actor,
    note: &str,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Outcome {
    open_at(id, intake, None, actor, note, now_ms, catalogue)
}

/// [`open`] with the case's own point. A patrol find is at its origin's point when none is
/// given.
pub fn open_at(
    id: &str,
    intake: Intake,
    position: Option<Position>,
    actor: &Actor,
    note: &str,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Outcome {
    match actor.role {
        Role::Operator | Role::System | Role::Reporter => {}
        Role::Department { .. } | Role::Viewer => {
            return Err(forbidden(
                actor,
                "report",
                "only operators, reporters and the system file cases",
            ));
        }
    }
    if catalogue.category(&intake.category).is_none() {
        return Err(CaseError::UnknownCategory(intake.category));
    }
    let position = position.or(match &intake.origin {
        Origin::Patrol { lat, lon, .. } => Some(Position {
            lat: *lat,
            lon: *lon,
        }),
        _ => None,
    });
    let case = Case {
        id: id.to_string(),
        position,
        category: intake.category,
        title: intake.title,
        source: intake.origin.source(),
        origin: intake.origin,
        state: State::Reported,
        reporter: (actor.role == Role::Reporter).then(|| actor.id.clone()),
        site: intake.site,
        grid_cell: intake.grid_cell,
        department: None,
        reported_ms: now_ms,
        registered_ms: None,
        first_dispatched_ms: None,
        dispatched_ms: None,
        accepted_ms: None,
        handled_ms: None,
        verified_ms: None,
        closed_ms: None,
        sign_for_deadline_ms: None,
        handle_deadline_ms: None,
        escalate_at_ms: None,
        sign_for_overdue: false,
        handle_overdue: false,
        escalated: false,
        rating: None,
        transfers: 0,
        returns: 0,
        reworks: 0,
        extensions: 0,
        alarms: Vec::new(),
        seq: 1,
    };
    let ev = event(&case, EventKind::Reported, actor, now_ms, note, None);
    Ok((case, vec![ev], Vec::new()))
}

fn event(
    case: &Case,
    kind: EventKind,
    actor: &Actor,
    now_ms: i64,
    note: &str,
    from: Option<State>,
) -> Event {
    Event {
        case_id: case.id.clone(),
        seq: case.seq,
        kind,
        actor: actor.clone(),
        ts_ms: now_ms,
        note: note.to_string(),
        from_state: from,
        to_state: case.state,
        category: case.category.clone(),
        source: case.source,
        department: case.department.clone(),
        site: case.site.clone(),
        grid_cell: case.grid_cell.clone(),
        deadline_ms: None,
        from_department: None,
        departments: Vec::new(),
        rating: None,
        alarm: None,
        aerial: None,
        override_note: None,
    }
}

/// Checks the actor's role for the action on this case (before the state is looked at).
pub fn check_permission(case: &Case, action: &Action, actor: &Actor) -> Result<(), CaseError> {
    let name = action.name();
    let own_department = match &actor.role {
        Role::Department { department } => case.department.as_deref() == Some(department.as_str()),
        _ => false,
    };
    let own_reporter =
        actor.role == Role::Reporter && case.reporter.as_deref() == Some(actor.id.as_str());
    let ok = match action {
        Action::Register
        | Action::Dispatch { .. }
        | Action::Verify { .. }
        | Action::FailVerification { .. } => {
            matches!(actor.role, Role::Operator | Role::System)
        }
        Action::Reject | Action::Transfer { .. } | Action::Close | Action::Extend { .. } => {
            actor.role == Role::Operator
        }
        Action::Accept | Action::Return | Action::Handle => own_department,
        Action::Rate { .. } => actor.role == Role::Operator || own_reporter,
        Action::Comment => {
            matches!(actor.role, Role::Operator | Role::System) || own_department || own_reporter
        }
        Action::LinkAlarm { .. } | Action::AerialPass { .. } | Action::Timer { .. } => {
            actor.role == Role::System
        }
    };
    if ok {
        return Ok(());
    }
    let reason = match (&actor.role, action) {
        (Role::Viewer, _) => "viewers have read-only access".to_string(),
        (
            Role::Department { department },
            Action::Accept | Action::Return | Action::Handle | Action::Comment,
        ) => match &case.department {
            Some(d) => format!("the case is with `{d}`, not `{department}`"),
            None => "the case is not with any department".to_string(),
        },
        (Role::Reporter, Action::Rate { .. } | Action::Comment) => {
            "only the reporter who filed the case".to_string()
        }
        _ => format!("{name} is not allowed for this role"),
    };
    Err(forbidden(actor, name, reason))
}

/// Whether `timer` is due on `case` at `now_ms` (the rule [`super::timers::due`] and
/// `Action::Timer` share).
pub fn timer_due(case: &Case, timer: TimerKind, now_ms: i64) -> bool {
    let passed = |t: Option<i64>| t.is_some_and(|t| t <= now_ms);
    match timer {
        TimerKind::SignFor => {
            case.state == State::Dispatched
                && !case.sign_for_overdue
                && passed(case.sign_for_deadline_ms)
        }
        TimerKind::Handle => {
            matches!(case.state, State::Dispatched | State::Accepted)
                && !case.handle_overdue
                && passed(case.handle_deadline_ms)
        }
        TimerKind::Escalate => {
            matches!(
                case.state,
                State::Registered | State::Dispatched | State::Accepted
            ) && !case.escalated
                && passed(case.escalate_at_ms)
        }
    }
}

/// The state an action leads to from `from`, or `None` when it is not allowed there. Timers
/// are checked separately ([`timer_due`]).
pub fn target(from: State, action: &Action) -> Option<State> {
    use State as S;
    match (action, from) {
        (Action::Register, S::Reported) => Some(S::Registered),
        (Action::Reject, S::Reported) => Some(S::Rejected),
        (Action::Dispatch { .. }, S::Registered) => Some(S::Dispatched),
        (Action::Accept, S::Dispatched) => Some(S::Accepted),
        (Action::Return, S::Dispatched | S::Accepted) => Some(S::Registered),
        (Action::Transfer { .. }, S::Dispatched | S::Accepted) => Some(S::Dispatched),
        (Action::Handle, S::Accepted) => Some(S::Handled),
        (Action::Verify { .. }, S::Handled) => Some(S::Verified),
        (Action::FailVerification { back_to }, S::Handled) => Some(match back_to {
            ReworkTo::Dispatched => S::Dispatched,
            ReworkTo::Accepted => S::Accepted,
        }),
        (Action::Close, S::Verified) => Some(S::Closed),
        (Action::Extend { .. }, S::Dispatched | S::Accepted) => Some(from),
        (Action::Rate { .. }, S::Closed) => Some(from),
        (Action::Comment, _) => Some(from),
        // A later transition of an episode joins its case whatever the case's state.
        (Action::LinkAlarm { .. }, _) => Some(from),
        (Action::AerialPass { .. }, _) if from.is_open() => Some(from),
        (
            Action::Timer {
                timer: TimerKind::SignFor,
            },
            S::Dispatched,
        ) => Some(from),
        (
            Action::Timer {
                timer: TimerKind::Handle,
            },
            S::Dispatched | S::Accepted,
        ) => Some(from),
        (
            Action::Timer {
                timer: TimerKind::Escalate,
            },
            S::Registered | S::Dispatched | S::Accepted,
        ) => Some(from),
        _ => None,
    }
}

/// Applies one command. On error nothing changed; on success the caller stores the new case and
/// appends the events (seq `case.seq + 1 ..`) in one transaction, then carries out the effects.
pub fn apply(
    case: &Case,
    cmd: Command,
    actor: &Actor,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Outcome {
    let name = cmd.action.name();
    check_permission(case, &cmd.action, actor)?;
    let to = target(case.state, &cmd.action).ok_or(CaseError::IllegalTransition {
        from: case.state,
        command: name,
    })?;
    let cat = catalogue
        .category(&case.category)
        .ok_or_else(|| CaseError::UnknownCategory(case.category.clone()))?;
    let cal = &catalogue.calendar;
    let from = case.state;
    let mut c = case.clone();
    c.state = to;
    c.seq += 1;
    let mut effects = Vec::new();
    let note = cmd.note.as_str();
    let rating = match &cmd.action {
        Action::Rate { satisfaction } => Some(*satisfaction),
        _ => None,
    };
    let linked = match &cmd.action {
        Action::LinkAlarm { alarm } => Some(alarm.clone()),
        _ => None,
    };
    let aerial = match &cmd.action {
        Action::AerialPass { pass } => Some(pass.clone()),
        _ => None,
    };
    let mut overridden = None;

    let kind = match cmd.action {
        Action::Register => {
            c.registered_ms = Some(now_ms);
            EventKind::Registered
        }
        Action::Reject => EventKind::Rejected,
        Action::Dispatch { department } => {
            let dep = department.unwrap_or_else(|| cat.department.clone());
            if catalogue.department(&dep).is_none() {
                return Err(CaseError::UnknownDepartment(dep));
            }
            send_to(&mut c, dep, cat, now_ms, catalogue, &mut effects)?;
            EventKind::Dispatched
        }
        Action::Accept => {
            c.accepted_ms = Some(now_ms);
            EventKind::Accepted
        }
        Action::Return => {
            c.department = None;
            c.sign_for_deadline_ms = None;
            c.handle_deadline_ms = None;
            c.sign_for_overdue = false;
            c.handle_overdue = false;
            c.returns += 1;
            EventKind::Returned
        }
        Action::Transfer { department } => {
            if catalogue.department(&department).is_none() {
                return Err(CaseError::UnknownDepartment(department));
            }
            if case.department.as_deref() == Some(department.as_str()) {
                return Err(CaseError::SameDepartment(department));
            }
            c.transfers += 1;
            send_to(&mut c, department, cat, now_ms, catalogue, &mut effects)?;
            EventKind::Transferred
        }
        Action::Handle => {
            c.handled_ms = Some(now_ms);
            EventKind::Handled
        }
        Action::Verify { override_note } => {
            let raised = case.raised_episodes();
            let why = override_note.filter(|n| !n.trim().is_empty());
            if !raised.is_empty() {
                if why.is_none() || actor.role != Role::Operator {
                    return Err(CaseError::AlarmStillRaised {
                        episodes: raised.join(", "),
                    });
                }
                overridden = why;
            }
            c.verified_ms = Some(now_ms);
            EventKind::Verified
        }
        Action::FailVerification { back_to } => {
            c.reworks += 1;
            if back_to == ReworkTo::Dispatched {
                c.dispatched_ms = Some(now_ms);
                c.accepted_ms = None;
                c.sign_for_deadline_ms = Some(add_working(now_ms, cat.sign_for, cal)?);
                c.sign_for_overdue = false;
                push_schedule(&mut effects, &c, TimerKind::SignFor, c.sign_for_deadline_ms);
            }
            push_schedule(&mut effects, &c, TimerKind::Handle, c.handle_deadline_ms);
            if let Some(d) = &c.department {
                effects.push(notify(d, &c, EventKind::VerificationFailed));
            }
            EventKind::VerificationFailed
        }
        Action::Close => {
            c.closed_ms = Some(now_ms);
            EventKind::Closed
        }
        Action::Extend { by } => {
            if match by {
                WorkAmount::Days(d) => d > MAX_EXTENSION_DAYS,
                WorkAmount::Hours(h) => h > MAX_EXTENSION_HOURS,
            } {
                return Err(CaseError::ExtensionTooLong(by));
            }
            let base = c.handle_deadline_ms.unwrap_or(now_ms).max(now_ms);
            let deadline_ms = add_working(base, by, cal)?;
            if deadline_ms - now_ms > MAX_DEADLINE_AHEAD_DAYS * 86_400_000 {
                return Err(CaseError::DeadlineTooFar { deadline_ms });
            }
            c.handle_deadline_ms = Some(deadline_ms);
            c.handle_overdue = false;
            c.extensions += 1;
            push_schedule(&mut effects, &c, TimerKind::Handle, c.handle_deadline_ms);
            EventKind::Extended
        }
        Action::Rate { satisfaction } => {
            if !(1..=5).contains(&satisfaction) {
                return Err(CaseError::BadRating(satisfaction));
            }
            if c.rating.is_some() {
                return Err(CaseError::AlreadyRated);
            }
            c.rating = Some(satisfaction);
            EventKind::Rated
        }
        Action::Comment => EventKind::Commented,
        Action::LinkAlarm { alarm } => {
            match c
                .alarms
                .iter_mut()
                .find(|a| a.gateway == alarm.gateway && a.id == alarm.id)
            {
                Some(a) => *a = alarm,
                None => c.alarms.push(alarm),
            }
            EventKind::AlarmLinked
        }
        Action::AerialPass { .. } => EventKind::AerialPass,
        Action::Timer { timer } => {
            if !timer_due(case, timer, now_ms) {
                return Err(CaseError::NotDue { timer });
            }
            match timer {
                TimerKind::SignFor => {
                    c.sign_for_overdue = true;
                    if let Some(d) = &c.department {
                        effects.push(notify(d, &c, EventKind::SignForOverdue));
                    }
                    EventKind::SignForOverdue
                }
                TimerKind::Handle => {
                    c.handle_overdue = true;
                    if let Some(d) = &c.department {
                        effects.push(notify(d, &c, EventKind::HandleOverdue));
                    }
                    EventKind::HandleOverdue
                }
                TimerKind::Escalate => {
                    c.escalated = true;
                    EventKind::Escalated
                }
            }
        }
    };

    let mut ev = event(&c, kind, actor, now_ms, note, Some(from));
    match kind {
        EventKind::Dispatched
        | EventKind::Transferred
        | EventKind::Extended
        | EventKind::Returned => {
            ev.deadline_ms = c.handle_deadline_ms;
        }
        _ => {}
    }
    if kind == EventKind::Transferred {
        ev.from_department = case.department.clone();
    }
    ev.rating = rating;
    ev.alarm = linked;
    ev.aerial = aerial;
    ev.override_note = overridden;
    if kind == EventKind::Escalated {
        let mut deps: Vec<String> = c.department.iter().cloned().collect();
        for d in cat.escalation.iter().flat_map(|e| e.departments.iter()) {
            if !deps.contains(d) {
                deps.push(d.clone());
            }
        }
        for d in &deps {
            effects.push(notify(d, &c, EventKind::Escalated));
        }
        ev.departments = deps;
    }
    Ok((c, vec![ev], effects))
}

/// Dispatch or transfer to `dep`: new deadlines, flags cleared, department notified.
fn send_to(
    c: &mut Case,
    dep: String,
    cat: &Category,
    now_ms: i64,
    catalogue: &Catalogue,
    effects: &mut Vec<Effect>,
) -> Result<(), CaseError> {
    let cal = &catalogue.calendar;
    c.department = Some(dep.clone());
    c.dispatched_ms = Some(now_ms);
    c.accepted_ms = None;
    c.sign_for_deadline_ms = Some(add_working(now_ms, cat.sign_for, cal)?);
    c.handle_deadline_ms = Some(add_working(now_ms, cat.handle, cal)?);
    c.sign_for_overdue = false;
    c.handle_overdue = false;
    effects.push(notify(&dep, c, EventKind::Dispatched));
    push_schedule(effects, c, TimerKind::SignFor, c.sign_for_deadline_ms);
    push_schedule(effects, c, TimerKind::Handle, c.handle_deadline_ms);
    if c.first_dispatched_ms.is_none() {
        c.first_dispatched_ms = Some(now_ms);
        if let Some(e) = &cat.escalation {
            c.escalate_at_ms = Some(add_working(now_ms, e.after, cal)?);
            push_schedule(effects, c, TimerKind::Escalate, c.escalate_at_ms);
        }
    }
    Ok(())
}

fn notify(department: &str, c: &Case, kind: EventKind) -> Effect {
    Effect::Notify {
        department: department.to_string(),
        case_id: c.id.clone(),
        seq: c.seq,
        kind,
    }
}

fn push_schedule(effects: &mut Vec<Effect>, c: &Case, timer: TimerKind, at: Option<i64>) {
    if let Some(at_ms) = at {
        effects.push(Effect::Schedule {
            case_id: c.id.clone(),
            timer,
            at_ms,
        });
    }
}

/// Convenience for callers and tests: applies several commands in turn, collecting events and
/// effects; stops at the first error.
pub fn apply_all(
    case: &Case,
    cmds: impl IntoIterator<Item = (Command, Actor)>,
    now_ms: i64,
    catalogue: &Catalogue,
) -> Outcome {
    let mut c = case.clone();
    let mut events = Vec::new();
    let mut effects = Vec::new();
    for (cmd, actor) in cmds {
        let (n, ev, ef) = apply(&c, cmd, &actor, now_ms, catalogue)?;
        c = n;
        events.extend(ev);
        effects.extend(ef);
    }
    Ok((c, events, effects))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cat() -> Catalogue {
        Catalogue::builtin().unwrap_or_else(|d| panic!("{d}"))
    }

    /// Wed 2025-10-15 10:00 +08:00.
    pub(crate) const T0: i64 = 1_760_493_600_000;

    pub(crate) fn op() -> Actor {
        Actor::operator("op-1")
    }
    pub(crate) fn epb() -> Actor {
        Actor::department("epb-1", "epb")
    }

    pub(crate) fn new_case(id: &str, category: &str) -> Case {
        let intake = Intake {
            category: category.into(),
            title: "fume at Lao Wang's".into(),
            origin: Origin::Operator,
            site: Some("site-1".into()),
            grid_cell: Some("cell-7".into()),
        };
        open(id, intake, &op(), "", T0, &cat()).expect("open").0
    }

    /// Drives a fresh exceedance case (department epb) to `state` along the main path.
    pub(crate) fn case_in(state: State) -> Case {
        let c = new_case("c1", "exceedance");
        let path: Vec<(Action, Actor)> = vec![
            (Action::Register, op()),
            (Action::Dispatch { department: None }, op()),
            (Action::Accept, epb()),
            (Action::Handle, epb()),
            (Action::verify(), op()),
            (Action::Close, op()),
        ];
        let steps = match state {
            State::Reported => 0,
            State::Registered => 1,
            State::Dispatched => 2,
            State::Accepted => 3,
            State::Handled => 4,
            State::Verified => 5,
            State::Closed => 6,
            State::Rejected => {
                return apply(&c, Command::new(Action::Reject), &op(), T0, &cat())
                    .expect("reject")
                    .0;
            }
        };
        let cmds = path
            .into_iter()
            .take(steps)
            .map(|(a, who)| (Command::new(a), who));
        let (c, _, _) = apply_all(&c, cmds, T0, &cat()).expect("path");
        assert_eq!(c.state, state);
        c
    }

    fn all_actions() -> Vec<Action> {
        vec![
            Action::Register,
            Action::Reject,
            Action::Dispatch { department: None },
            Action::Accept,
            Action::Return,
            Action::Transfer {
                department: "urban".into(),
            },
            Action::Handle,
            Action::verify(),
            Action::FailVerification {
                back_to: ReworkTo::Dispatched,
            },
            Action::FailVerification {
                back_to: ReworkTo::Accepted,
            },
            Action::Close,
            Action::Extend {
                by: WorkAmount::Days(1),
            },
            Action::Rate { satisfaction: 4 },
            Action::Comment,
        ]
    }

    /// An actor allowed by role for the action on a case with department `epb`.
    fn allowed_actor(a: &Action) -> Actor {
        match a {
            Action::Accept | Action::Return | Action::Handle => epb(),
            Action::LinkAlarm { .. } | Action::AerialPass { .. } | Action::Timer { .. } => {
                Actor::system()
            }
            _ => op(),
        }
    }

    /// The legal table, written out independently of [`target`].
    fn expected(from: State, a: &Action) -> Option<State> {
        use State as S;
        let to = match a.name() {
            "register" if from == S::Reported => S::Registered,
            "reject" if from == S::Reported => S::Rejected,
            "dispatch" if from == S::Registered => S::Dispatched,
            "accept" if from == S::Dispatched => S::Accepted,
            "return" if matches!(from, S::Dispatched | S::Accepted) => S::Registered,
            "transfer" if matches!(from, S::Dispatched | S::Accepted) => S::Dispatched,
            "handle" if from == S::Accepted => S::Handled,
            "verify" if from == S::Handled => S::Verified,
            "fail_verification" if from == S::Handled => match a {
                Action::FailVerification {
                    back_to: ReworkTo::Accepted,
                } => S::Accepted,
                _ => S::Dispatched,
            },
            "close" if from == S::Verified => S::Closed,
            "extend" if matches!(from, S::Dispatched | S::Accepted) => from,
            "rate" if from == S::Closed => from,
            "comment" => from,
            _ => return None,
        };
        Some(to)
    }

    #[test]
    fn every_state_times_every_command() {
        let catalogue = cat();
        let mut legal = 0;
        let mut illegal = 0;
        for from in State::ALL {
            for a in all_actions() {
                let mut c = case_in(from);
                if matches!(a, Action::Accept | Action::Return | Action::Handle)
                    && c.department.is_none()
                {
                    // So that the state check, not the department check, decides.
                    c.department = Some("epb".into());
                }
                let who = allowed_actor(&a);
                let r = apply(
                    &c,
                    Command::note(a.clone(), "n"),
                    &who,
                    T0 + 1000,
                    &catalogue,
                );
                match expected(from, &a) {
                    Some(to) => {
                        let (n, ev, _) = r.unwrap_or_else(|e| panic!("{from} {}: {e}", a.name()));
                        assert_eq!(n.state, to, "{from} {}", a.name());
                        assert_eq!(ev.len(), 1);
                        assert_eq!(ev[0].seq, c.seq + 1);
                        assert_eq!(n.seq, c.seq + 1);
                        assert_eq!(ev[0].from_state, Some(from));
                        assert_eq!(ev[0].to_state, to);
                        assert_eq!(ev[0].note, "n");
                        assert_eq!(ev[0].actor, who);
                        assert_eq!(ev[0].ts_ms, T0 + 1000);
                        legal += 1;
                    }
                    None => {
                        assert_eq!(
                            r,
                            Err(CaseError::IllegalTransition {
                                from,
                                command: a.name()
                            }),
                            "{from} {}",
                            a.name()
                        );
                        illegal += 1;
                    }
                }
            }
        }
        assert_eq!(legal + illegal, 8 * 14);
        assert!(legal >= 20, "{legal}");
    }

    #[test]
    fn permissions() {
        let catalogue = cat();
        let urban = Actor::department("u-1", "urban");
        let viewer = Actor {
            id: "v".into(),
            role: Role::Viewer,
        };
        let reporter = Actor {
            id: "citizen-9".into(),
            role: Role::Reporter,
        };
        let forbidden = |c: &Case, a: Action, who: &Actor| {
            let r = apply(c, Command::new(a.clone()), who, T0, &catalogue);
            assert!(
                matches!(r, Err(CaseError::Forbidden { .. })),
                "{} by {:?}: {r:?}",
                a.name(),
                who.role
            );
        };
        // Viewers: nothing, in any state.
        for s in State::ALL {
            for a in all_actions() {
                forbidden(&case_in(s), a, &viewer);
            }
        }
        // Only operators (and the system) register and dispatch; only operators reject, close,
        // extend, transfer.
        forbidden(&case_in(State::Reported), Action::Register, &epb());
        forbidden(&case_in(State::Reported), Action::Reject, &Actor::system());
        forbidden(
            &case_in(State::Registered),
            Action::Dispatch { department: None },
            &epb(),
        );
        forbidden(&case_in(State::Verified), Action::Close, &Actor::system());
        forbidden(&case_in(State::Verified), Action::Close, &epb());
        forbidden(
            &case_in(State::Accepted),
            Action::Extend {
                by: WorkAmount::Days(1),
            },
            &epb(),
        );
        forbidden(
            &case_in(State::Accepted),
            Action::Transfer {
                department: "urban".into(),
            },
            &epb(),
        );
        // Only the case's own department accepts, handles, returns.
        forbidden(&case_in(State::Dispatched), Action::Accept, &urban);
        forbidden(&case_in(State::Dispatched), Action::Accept, &op());
        forbidden(&case_in(State::Accepted), Action::Handle, &urban);
        forbidden(&case_in(State::Accepted), Action::Return, &urban);
        // Departments do not verify their own work.
        forbidden(&case_in(State::Handled), Action::verify(), &epb());
        // Alarms and timers are the system's.
        let alarm = AlarmRef {
            gateway: "g".into(),
            id: "a".into(),
            phase: AlarmPhase::Raised,
            ts_ms: 1,
        };
        forbidden(
            &case_in(State::Accepted),
            Action::LinkAlarm { alarm },
            &op(),
        );
        forbidden(
            &case_in(State::Accepted),
            Action::Timer {
                timer: TimerKind::Handle,
            },
            &op(),
        );
        // A reporter rates only its own case.
        forbidden(
            &case_in(State::Closed),
            Action::Rate { satisfaction: 5 },
            &reporter,
        );
        let mut mine = case_in(State::Closed);
        mine.reporter = Some("citizen-9".into());
        let (rated, ev, _) = apply(
            &mine,
            Command::new(Action::Rate { satisfaction: 5 }),
            &reporter,
            T0,
            &catalogue,
        )
        .expect("own reporter rates");
        assert_eq!((rated.rating, ev[0].rating), (Some(5), Some(5)));
        // The error names role and command.
        let e = apply(
            &case_in(State::Dispatched),
            Command::new(Action::Accept),
            &urban,
            T0,
            &catalogue,
        )
        .expect_err("forbidden");
        assert_eq!(
            e.to_string(),
            "department `urban` may not accept: the case is with `epb`, not `urban`"
        );
    }

    #[test]
    fn open_is_permission_checked() {
        let intake = Intake {
            category: "complaint".into(),
            title: "smoke".into(),
            origin: Origin::Citizen,
            site: None,
            grid_cell: None,
        };
        let dep = epb();
        assert!(matches!(
            open("x", intake.clone(), &dep, "", T0, &cat()),
            Err(CaseError::Forbidden { .. })
        ));
        let reporter = Actor {
            id: "citizen-1".into(),
            role: Role::Reporter,
        };
        let (c, ev, _) = open("x", intake.clone(), &reporter, "", T0, &cat()).expect("open");
        assert_eq!(c.reporter.as_deref(), Some("citizen-1"));
        assert_eq!(
            (ev[0].seq, ev[0].kind, ev[0].from_state),
            (1, EventKind::Reported, None)
        );
        let bad = Intake {
            category: "nope".into(),
            ..intake
        };
        assert_eq!(
            open("x", bad, &reporter, "", T0, &cat()).map(|_| ()),
            Err(CaseError::UnknownCategory("nope".into()))
        );
    }

    #[test]
    fn dispatch_sets_deadlines_and_notifies() {
        let catalogue = cat();
        let c = case_in(State::Registered);
        let (c, ev, ef) = apply(
            &c,
            Command::new(Action::Dispatch { department: None }),
            &op(),
            T0,
            &catalogue,
        )
        .expect("dispatch");
        assert_eq!(c.department.as_deref(), Some("epb"));
        // Exceedance: sign for in 2 working hours, handle in 3 working days, escalate after 3.
        let cal = &catalogue.calendar;
        assert_eq!(c.sign_for_deadline_ms, Some(T0 + 2 * 3_600_000));
        assert_eq!(
            c.handle_deadline_ms,
            add_working(T0, WorkAmount::Days(3), cal).ok()
        );
        assert_eq!(c.escalate_at_ms, c.handle_deadline_ms);
        assert_eq!(ev[0].deadline_ms, c.handle_deadline_ms);
        assert!(ef.contains(&Effect::Notify {
            department: "epb".into(),
            case_id: "c1".into(),
            seq: c.seq,
            kind: EventKind::Dispatched
        }));
        let timers: Vec<TimerKind> = ef
            .iter()
            .filter_map(|e| match e {
                Effect::Schedule { timer, .. } => Some(*timer),
                Effect::Notify { .. } => None,
            })
            .collect();
        assert_eq!(
            timers,
            [TimerKind::SignFor, TimerKind::Handle, TimerKind::Escalate]
        );
        // Unknown department.
        let r = apply(
            &case_in(State::Registered),
            Command::new(Action::Dispatch {
                department: Some("ghost".into()),
            }),
            &op(),
            T0,
            &catalogue,
        );
        assert_eq!(
            r.map(|_| ()),
            Err(CaseError::UnknownDepartment("ghost".into()))
        );
    }

    #[test]
    fn transfer_return_rework_extend_rate() {
        let catalogue = cat();
        let later = T0 + 3_600_000;
        // Transfer: new department, new deadlines, counted, escalation instant kept.
        let c = case_in(State::Accepted);
        let (t, ev, ef) = apply(
            &c,
            Command::note(
                Action::Transfer {
                    department: "urban".into(),
                },
                "misrouted",
            ),
            &op(),
            later,
            &catalogue,
        )
        .expect("transfer");
        assert_eq!(
            (t.state, t.department.as_deref(), t.transfers),
            (State::Dispatched, Some("urban"), 1)
        );
        assert_eq!(ev[0].from_department.as_deref(), Some("epb"));
        assert_eq!(t.escalate_at_ms, c.escalate_at_ms);
        assert!(t.handle_deadline_ms > c.handle_deadline_ms);
        assert!(
            ef.iter()
                .any(|e| matches!(e, Effect::Notify { department, .. } if department == "urban"))
        );
        assert_eq!(
            apply(
                &c,
                Command::new(Action::Transfer {
                    department: "epb".into()
                }),
                &op(),
                later,
                &catalogue
            )
            .map(|_| ()),
            Err(CaseError::SameDepartment("epb".into()))
        );
        // Return: back to the dispatcher, no department, no deadlines.
        let (r, ev, _) = apply(
            &c,
            Command::note(Action::Return, "not ours"),
            &epb(),
            later,
            &catalogue,
        )
        .expect("return");
        assert_eq!(
            (
                r.state,
                r.department.clone(),
                r.handle_deadline_ms,
                r.returns
            ),
            (State::Registered, None, None, 1)
        );
        assert_eq!((ev[0].kind, ev[0].deadline_ms), (EventKind::Returned, None));
        // Rework to dispatched: new sign-for deadline, handling deadline kept.
        let h = case_in(State::Handled);
        let (w, _, ef) = apply(
            &h,
            Command::new(Action::FailVerification {
                back_to: ReworkTo::Dispatched,
            }),
            &op(),
            later,
            &catalogue,
        )
        .expect("rework");
        assert_eq!((w.state, w.reworks), (State::Dispatched, 1));
        assert_eq!(w.handle_deadline_ms, h.handle_deadline_ms);
        assert_eq!(w.sign_for_deadline_ms, Some(later + 2 * 3_600_000));
        assert!(ef.iter().any(|e| matches!(
            e,
            Effect::Notify {
                kind: EventKind::VerificationFailed,
                ..
            }
        )));
        // Extend: one working day after the current deadline.
        let a = case_in(State::Accepted);
        let (x, ev, _) = apply(
            &a,
            Command::new(Action::Extend {
                by: WorkAmount::Days(1),
            }),
            &op(),
            later,
            &catalogue,
        )
        .expect("extend");
        let want = add_working(
            a.handle_deadline_ms.expect("deadline"),
            WorkAmount::Days(1),
            &catalogue.calendar,
        )
        .ok();
        assert_eq!(
            (x.handle_deadline_ms, ev[0].deadline_ms, x.extensions),
            (want, want, 1)
        );
        // One extension adds at most 30 working days; repeated ones cannot push the deadline
        // more than a year ahead (266 × 10000 d once reached the year 371792).
        let too_long = apply(
            &a,
            Command::new(Action::Extend {
                by: WorkAmount::Days(MAX_EXTENSION_DAYS + 1),
            }),
            &op(),
            later,
            &catalogue,
        );
        assert_eq!(
            too_long.err(),
            Some(CaseError::ExtensionTooLong(WorkAmount::Days(
                MAX_EXTENSION_DAYS + 1
            )))
        );
        let mut c = a.clone();
        let mut refused = None;
        for _ in 0..40 {
            match apply(
                &c,
                Command::new(Action::Extend {
                    by: WorkAmount::Days(MAX_EXTENSION_DAYS),
                }),
                &op(),
                later,
                &catalogue,
            ) {
                Ok((next, _, _)) => c = next,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(refused, Some(CaseError::DeadlineTooFar { .. })),
            "{refused:?}"
        );
        let last = c.handle_deadline_ms.expect("deadline");
        assert!(last - later <= MAX_DEADLINE_AHEAD_DAYS * 86_400_000);
        // Rating: 1..5, once.
        let cl = case_in(State::Closed);
        assert_eq!(
            apply(
                &cl,
                Command::new(Action::Rate { satisfaction: 6 }),
                &op(),
                later,
                &catalogue
            )
            .map(|_| ()),
            Err(CaseError::BadRating(6))
        );
        let (rated, _, _) = apply(
            &cl,
            Command::new(Action::Rate { satisfaction: 3 }),
            &op(),
            later,
            &catalogue,
        )
        .expect("rate");
        assert_eq!(
            apply(
                &rated,
                Command::new(Action::Rate { satisfaction: 4 }),
                &op(),
                later,
                &catalogue
            )
            .map(|_| ()),
            Err(CaseError::AlreadyRated)
        );
    }

    #[test]
    fn case_event_and_command_round_trip_as_json() {
        let (c, ev, ef) = apply(
            &case_in(State::Registered),
            Command::note(Action::Dispatch { department: None }, "go"),
            &op(),
            T0,
            &cat(),
        )
        .expect("dispatch");
        let j = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<Case>(&j).expect("case"), c);
        let j = serde_json::to_string(&ev[0]).expect("json");
        assert!(j.contains("\"kind\":\"dispatched\""), "{j}");
        assert!(j.contains("\"role\":\"operator\""), "{j}");
        assert_eq!(serde_json::from_str::<Event>(&j).expect("event"), ev[0]);
        let j = serde_json::to_string(&ef).expect("json");
        assert_eq!(
            serde_json::from_str::<Vec<Effect>>(&j).expect("effects"),
            ef
        );
        let cmd: Command =
            serde_json::from_str(r#"{"action":"transfer","department":"urban","note":"wrong"}"#)
                .expect("command");
        assert_eq!(
            cmd,
            Command::note(
                Action::Transfer {
                    department: "urban".into()
                },
                "wrong"
            )
        );
        let cmd: Command =
            serde_json::from_str(r#"{"action":"extend","by":"2d"}"#).expect("command");
        assert_eq!(
            cmd.action,
            Action::Extend {
                by: WorkAmount::Days(2)
            }
        );
        let who: Actor =
            serde_json::from_str(r#"{"id":"d1","role":"department","department":"epb"}"#)
                .expect("actor");
        assert_eq!(who, epb_as("d1"));
    }

    fn epb_as(id: &str) -> Actor {
        Actor::department(id, "epb")
    }
}
