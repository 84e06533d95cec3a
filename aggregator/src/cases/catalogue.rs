//! The case catalogue: which categories of case exist, who handles each, in what time, to what
//! standard, and when a case escalates; plus the departments and the working calendar.
//!
//! The file is TOML, parsed strictly like every config ([`Catalogue::load`]): unknown keys are
//! refused and *every* problem is reported with file, line and field path (`common::diag`).
//! The format is documented with an example in `docs/cases.md`; the shipped default is
//! `aggregator/catalogue/default.toml` ([`Catalogue::builtin`]).
//!
//! Sub-categories name a `parent` (one level only) and inherit from it every field they leave
//! out, except `alarm_kind`; top-level categories inherit the limits from `[defaults]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fumegrid_common::diag::{Diagnostics, Doc, Source};
use fumegrid_common::id;
use fumegrid_common::wire::AlarmKind;
use serde::{Deserialize, Serialize};

use super::calendar::{Calendar, Date, WorkAmount};

/// The default catalogue shipped with the aggregator.
pub const DEFAULT_TOML: &str = include_str!("../../catalogue/default.toml");

/// `[calendar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarSection {
    /// Working weekdays: `mon` … `sun`. Default `["mon", "tue", "wed", "thu", "fri"]`.
    #[serde(default)]
    working_days: Option<Vec<String>>,
    /// Working hours in local time, `"HH:MM-HH:MM"`. Default `"09:00-18:00"`.
    #[serde(default)]
    working_hours: Option<String>,
    /// Local time = UTC + this many minutes. Default 480 (UTC+08:00).
    #[serde(default)]
    utc_offset_minutes: Option<i32>,
    /// Public holidays (`"YYYY-MM-DD"`): not working days even on a weekday. Default none.
    #[serde(default)]
    holidays: Vec<Date>,
    /// Make-up working days (调休): working days even on a weekend. Default none.
    #[serde(default)]
    makeup_days: Vec<Date>,
}

/// `[defaults]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsSection {
    /// Time for the department to sign for a dispatched case. Default `"2h"`.
    #[serde(default)]
    sign_for: Option<WorkAmount>,
    /// Time from dispatch to handled. Default `"3d"`.
    #[serde(default)]
    handle: Option<WorkAmount>,
    /// The community stage: working time from first dispatch after which an unhandled case
    /// escalates to joint enforcement. Default `"3d"`.
    #[serde(default)]
    escalate_after: Option<WorkAmount>,
    /// Departments notified on escalation (joint enforcement). Default none (no escalation).
    #[serde(default)]
    escalate_to: Option<Vec<String>>,
}

/// `[[departments]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DepartmentEntry {
    /// Stable id used in cases, tokens and webhooks. Required.
    id: String,
    /// Display name (Chinese). Required.
    name: String,
    /// English name. Default: none.
    #[serde(default)]
    name_en: Option<String>,
    /// Where case notifications are POSTed (`http://` or `https://`). Default: none (the
    /// department works in the web UI only).
    #[serde(default)]
    webhook_url: Option<String>,
}

/// `[[categories]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryEntry {
    /// Stable id. Required.
    id: String,
    /// Display name (Chinese). Required.
    name: String,
    /// English name. Default: none.
    #[serde(default)]
    name_en: Option<String>,
    /// Id of the parent category (one level). Default: none (top level).
    #[serde(default)]
    parent: Option<String>,
    /// Sensor alarms of this kind open cases in this category. At most one category per kind.
    /// Not inherited. Default: none (manual and citizen reports only).
    #[serde(default)]
    alarm_kind: Option<AlarmKind>,
    /// Responsible department id. Required at top level; default: the parent's.
    #[serde(default)]
    department: Option<String>,
    /// Default: the parent's, else `[defaults] sign_for`.
    #[serde(default)]
    sign_for: Option<WorkAmount>,
    /// Default: the parent's, else `[defaults] handle`.
    #[serde(default)]
    handle: Option<WorkAmount>,
    /// What "done" means, shown to the department and the verifier. Required at top level;
    /// default: the parent's.
    #[serde(default)]
    closing_standard: Option<String>,
    /// Automatic verification: readings normal for this many hours (wall-clock) verify a
    /// handled case. Default: the parent's, else none (an operator verifies).
    #[serde(default)]
    verify_normal_hours: Option<u32>,
    /// The same in minutes (for short checks and commissioning), instead of the hours.
    #[serde(default)]
    verify_normal_minutes: Option<u32>,
    /// Default: the parent's, else `[defaults] escalate_after`.
    #[serde(default)]
    escalate_after: Option<WorkAmount>,
    /// Default: the parent's, else `[defaults] escalate_to`; `[]` turns escalation off.
    #[serde(default)]
    escalate_to: Option<Vec<String>>,
}

/// A department cases are dispatched to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub name_en: Option<String>,
    pub webhook_url: Option<String>,
}

/// Escalation to joint enforcement after the community stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Escalation {
    /// Working time from the first dispatch.
    pub after: WorkAmount,
    /// Departments notified (the responsible one is notified too).
    pub departments: Vec<String>,
}

/// A resolved category: inheritance applied, every reference checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    pub id: String,
    pub name: String,
    pub name_en: Option<String>,
    pub parent: Option<String>,
    pub alarm_kind: Option<AlarmKind>,
    pub department: String,
    pub sign_for: WorkAmount,
    pub handle: WorkAmount,
    pub closing_standard: String,
    pub verify_normal_hours: Option<u32>,
    /// The time readings must be normal to verify automatically, in minutes (from
    /// `verify_normal_hours` or `verify_normal_minutes`).
    pub verify_normal_minutes: Option<u32>,
    pub escalation: Option<Escalation>,
}

/// A validated catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    pub calendar: Calendar,
    pub departments: Vec<Department>,
    pub categories: Vec<Category>,
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Catalogue, Diagnostics> {
        Catalogue::from_source(&Source::read(path))
    }

    /// The shipped default (`aggregator/catalogue/default.toml`), validated by a test.
    pub fn builtin() -> Result<Catalogue, Diagnostics> {
        Catalogue::from_source(&Source::new("catalogue/default.toml", DEFAULT_TOML))
    }

    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.id == id)
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// The category sensor alarms of `kind` open cases in.
    pub fn category_for_alarm(&self, kind: AlarmKind) -> Option<&Category> {
        self.categories.iter().find(|c| c.alarm_kind == Some(kind))
    }

    pub fn from_source(src: &Source) -> Result<Catalogue, Diagnostics> {
        let mut doc = Doc::new(src);
        if !doc.diags.is_empty() {
            return Err(doc.diags);
        }
        doc.deny_unknown_keys(&["calendar", "defaults", "departments", "categories"]);
        let cal: Option<CalendarSection> = doc.section("calendar", false);
        let defaults: DefaultsSection = doc.section("defaults", false).unwrap_or_default();
        let deps: Vec<(usize, DepartmentEntry)> = doc.array("departments");
        let cats: Vec<(usize, CategoryEntry)> = doc.array("categories");

        let calendar = calendar(&mut doc, cal);

        let mut departments: Vec<Department> = Vec::new();
        for (i, d) in deps {
            let at = |f: &str| format!("departments[{i}].{f}");
            if id::check(&mut doc, &at("id"), &d.id, "") && departments.iter().any(|x| x.id == d.id)
            {
                doc.error(&at("id"), format!("department `{}` is listed twice", d.id));
            }
            if d.name.trim().is_empty() {
                doc.error(&at("name"), "must not be empty");
            }
            if let Some(u) = &d.webhook_url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                doc.error(
                    &at("webhook_url"),
                    format!("`{u}`: expected an http:// or https:// URL"),
                );
            }
            departments.push(Department {
                id: d.id,
                name: d.name,
                name_en: d.name_en,
                webhook_url: d.webhook_url,
            });
        }
        let dep_known = |id: &str| departments.iter().any(|d| d.id == id);

        // Index by id for parent lookups (first occurrence wins; duplicates are reported).
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        for (n, (i, c)) in cats.iter().enumerate() {
            if id::check(&mut doc, &format!("categories[{i}].id"), &c.id, "")
                && by_id.insert(c.id.clone(), n).is_some()
            {
                doc.error(
                    &format!("categories[{i}].id"),
                    format!("category `{}` is listed twice", c.id),
                );
            }
        }
        let mut kinds: BTreeMap<AlarmKind, String> = BTreeMap::new();
        let mut categories = Vec::new();
        for (i, c) in &cats {
            let at = |f: &str| format!("categories[{i}].{f}");
            let parent = match &c.parent {
                None => None,
                Some(p) => {
                    match by_id.get(p).map(|&n| &cats[n].1) {
                        None => {
                            doc.error(
                                &at("parent"),
                                format!("no category `{p}` in this catalogue"),
                            );
                            None
                        }
                        Some(pc) if pc.parent.is_some() => {
                            doc.error(
                            &at("parent"),
                            format!("`{p}` is itself a sub-category: one level of sub-categories only"),
                        );
                            None
                        }
                        Some(pc) if pc.id == c.id => {
                            doc.error(&at("parent"), "a category cannot be its own parent");
                            None
                        }
                        Some(pc) => Some(pc),
                    }
                }
            };
            if c.name.trim().is_empty() {
                doc.error(&at("name"), "must not be empty");
            }
            if let Some(k) = c.alarm_kind
                && let Some(other) = kinds.insert(k, c.id.clone())
            {
                doc.error(
                    &at("alarm_kind"),
                    format!(
                        "`{}` alarms already open cases in category `{other}`",
                        k.name()
                    ),
                );
            }
            let department = c
                .department
                .clone()
                .or_else(|| parent.and_then(|p| p.department.clone()));
            let department = match department {
                None => {
                    doc.error(
                        &at("department"),
                        "missing: every category needs a responsible department",
                    );
                    String::new()
                }
                Some(d) if !dep_known(&d) => {
                    doc.error(
                        &at("department"),
                        format!("no department `{d}` in [[departments]]"),
                    );
                    d
                }
                Some(d) => d,
            };
            let inherit = |own: Option<WorkAmount>,
                           f: fn(&CategoryEntry) -> Option<WorkAmount>,
                           dflt: Option<WorkAmount>,
                           fallback: WorkAmount| {
                own.or_else(|| parent.and_then(f))
                    .or(dflt)
                    .unwrap_or(fallback)
            };
            let sign_for = inherit(
                c.sign_for,
                |p| p.sign_for,
                defaults.sign_for,
                WorkAmount::Hours(2),
            );
            let handle = inherit(c.handle, |p| p.handle, defaults.handle, WorkAmount::Days(3));
            let escalate_after = inherit(
                c.escalate_after,
                |p| p.escalate_after,
                defaults.escalate_after,
                WorkAmount::Days(3),
            );
            for (f, v) in [
                ("sign_for", sign_for),
                ("handle", handle),
                ("escalate_after", escalate_after),
            ] {
                if matches!(v, WorkAmount::Hours(0) | WorkAmount::Days(0)) {
                    doc.error(&at(f), "must be more than zero");
                }
            }
            let closing_standard = c
                .closing_standard
                .clone()
                .or_else(|| parent.and_then(|p| p.closing_standard.clone()))
                .unwrap_or_default();
            if closing_standard.trim().is_empty() {
                doc.error(
                    &at("closing_standard"),
                    "missing: say what a closed case must have achieved",
                );
            }
            if c.verify_normal_hours.is_some() && c.verify_normal_minutes.is_some() {
                doc.error(
                    &at("verify_normal_minutes"),
                    "set `verify_normal_hours` or `verify_normal_minutes`, not both",
                );
            }
            let own_minutes = c
                .verify_normal_minutes
                .or_else(|| c.verify_normal_hours.map(|h| h.saturating_mul(60)));
            let verify_normal_minutes = own_minutes.or_else(|| {
                parent.and_then(|p| {
                    p.verify_normal_minutes
                        .or_else(|| p.verify_normal_hours.map(|h| h.saturating_mul(60)))
                })
            });
            let verify_normal_hours = c
                .verify_normal_hours
                .or_else(|| parent.and_then(|p| p.verify_normal_hours));
            if let Some(h) = c.verify_normal_hours
                && !(1..=720).contains(&h)
            {
                doc.error(
                    &at("verify_normal_hours"),
                    "must be between 1 and 720 hours",
                );
            }
            if let Some(m) = c.verify_normal_minutes
                && !(1..=43_200).contains(&m)
            {
                doc.error(
                    &at("verify_normal_minutes"),
                    "must be between 1 and 43200 minutes (30 days)",
                );
            }
            let escalate_to = c
                .escalate_to
                .clone()
                .or_else(|| parent.and_then(|p| p.escalate_to.clone()))
                .or_else(|| defaults.escalate_to.clone())
                .unwrap_or_default();
            for (j, d) in escalate_to.iter().enumerate() {
                if !dep_known(d) {
                    let path = if c.escalate_to.is_some() {
                        at(&format!("escalate_to[{j}]"))
                    } else {
                        at("id")
                    };
                    doc.error(
                        &path,
                        format!("escalates to `{d}`, which is not in [[departments]]"),
                    );
                }
            }
            categories.push(Category {
                id: c.id.clone(),
                name: c.name.clone(),
                name_en: c.name_en.clone(),
                parent: c.parent.clone(),
                alarm_kind: c.alarm_kind,
                department,
                sign_for,
                handle,
                closing_standard,
                verify_normal_hours,
                verify_normal_minutes,
                escalation: (!escalate_to.is_empty()).then_some(Escalation {
                    after: escalate_after,
                    departments: escalate_to,
                }),
            });
        }
        if let Some(list) = &defaults.escalate_to {
            for (j, d) in list.iter().enumerate() {
                if !dep_known(d) {
                    doc.error(
                        &format!("defaults.escalate_to[{j}]"),
                        format!("no department `{d}` in [[departments]]"),
                    );
                }
            }
        }
        if departments.is_empty() && doc.diags.is_empty() {
            doc.error(
                "departments",
                "at least one [[departments]] entry is needed",
            );
        }
        if categories.is_empty() && doc.diags.is_empty() {
            doc.error("categories", "at least one [[categories]] entry is needed");
        }
        let mut diags = doc.diags;
        // In file order, whichever pass found them.
        diags.0.sort_by_key(|d| (d.line, d.col));
        match calendar {
            Some(calendar) if diags.is_empty() => Ok(Catalogue {
                calendar,
                departments,
                categories,
            }),
            _ => Err(diags),
        }
    }
}

fn calendar(doc: &mut Doc<'_>, s: Option<CalendarSection>) -> Option<Calendar> {
    let mut cal = Calendar::default();
    let Some(s) = s else {
        return Some(cal);
    };
    let mut ok = true;
    if let Some(days) = &s.working_days {
        cal.working_weekdays = [false; 7];
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        for (j, d) in days.iter().enumerate() {
            match NAMES.iter().position(|n| n == d) {
                Some(k) if cal.working_weekdays[k] => {
                    doc.error(
                        &format!("calendar.working_days[{j}]"),
                        format!("`{d}` is listed twice"),
                    );
                    ok = false;
                }
                Some(k) => cal.working_weekdays[k] = true,
                None => {
                    doc.error(
                        &format!("calendar.working_days[{j}]"),
                        format!("`{d}`: expected one of mon, tue, wed, thu, fri, sat, sun"),
                    );
                    ok = false;
                }
            }
        }
        if ok && !cal.working_weekdays.contains(&true) {
            doc.error(
                "calendar.working_days",
                "at least one working weekday is needed",
            );
            ok = false;
        }
    }
    if let Some(h) = &s.working_hours {
        match parse_hours(h) {
            Ok((a, b)) => {
                cal.start_min = a;
                cal.end_min = b;
            }
            Err(m) => {
                doc.error("calendar.working_hours", m);
                ok = false;
            }
        }
    }
    if let Some(o) = s.utc_offset_minutes {
        if !(-720..=840).contains(&o) {
            doc.error(
                "calendar.utc_offset_minutes",
                "must be between -720 and 840",
            );
            ok = false;
        }
        cal.utc_offset_min = o;
    }
    let mut seen = BTreeSet::new();
    for (j, d) in s.holidays.iter().enumerate() {
        if !seen.insert(*d) {
            doc.error(
                &format!("calendar.holidays[{j}]"),
                format!("{d} is listed twice"),
            );
            ok = false;
        }
    }
    cal.holidays = seen;
    let mut seen = BTreeSet::new();
    for (j, d) in s.makeup_days.iter().enumerate() {
        if cal.holidays.contains(d) {
            doc.error(
                &format!("calendar.makeup_days[{j}]"),
                format!("{d} is also a holiday: a day is one or the other"),
            );
            ok = false;
        } else if !seen.insert(*d) {
            doc.error(
                &format!("calendar.makeup_days[{j}]"),
                format!("{d} is listed twice"),
            );
            ok = false;
        }
    }
    cal.makeup_days = seen;
    ok.then_some(cal)
}

fn parse_hours(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}`: expected \"HH:MM-HH:MM\", e.g. \"09:00-18:00\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (a, b) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    if a >= b {
        return Err(format!("`{s}`: the end must be after the start"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Catalogue, Diagnostics> {
        Catalogue::from_source(&Source::new("cat.toml", text))
    }

    #[test]
    fn builtin_catalogue_is_valid_and_maps_every_alarm_kind() {
        let c = Catalogue::builtin().unwrap_or_else(|d| panic!("{d}"));
        for k in [
            AlarmKind::Exceedance,
            AlarmKind::PurifierIdle,
            AlarmKind::PurifierDirty,
            AlarmKind::DeviceOffline,
            AlarmKind::SensorFault,
            AlarmKind::Threshold,
        ] {
            let cat = c.category_for_alarm(k).unwrap_or_else(|| panic!("{k:?}"));
            assert!(c.department(&cat.department).is_some());
        }
        let ex = c
            .category_for_alarm(AlarmKind::Exceedance)
            .expect("exceedance");
        assert_eq!(ex.department, "epb");
        let esc = ex.escalation.as_ref().expect("escalates");
        assert_eq!(esc.after, WorkAmount::Days(3));
        assert!(esc.departments.len() >= 2);
        assert!(c.category("complaint").is_some());
        // Sub-categories inherit.
        let idle = c.category_for_alarm(AlarmKind::PurifierIdle).expect("idle");
        assert_eq!(idle.parent.as_deref(), Some("purifier"));
        assert_eq!(
            c.calendar,
            Calendar {
                holidays: c.calendar.holidays.clone(),
                makeup_days: c.calendar.makeup_days.clone(),
                ..Calendar::default()
            }
        );
        assert_eq!(c.calendar.holidays.len(), 18);
    }

    const MINIMAL: &str = r#"
[[departments]]
id = "epb"
name = "生态环境局"

[[categories]]
id = "exceedance"
name = "超标"
alarm_kind = "exceedance"
department = "epb"
closing_standard = "below the limit"
"#;

    #[test]
    fn minimal_catalogue_gets_the_defaults() {
        let c = load(MINIMAL).unwrap_or_else(|d| panic!("{d}"));
        let cat = &c.categories[0];
        assert_eq!(cat.sign_for, WorkAmount::Hours(2));
        assert_eq!(cat.handle, WorkAmount::Days(3));
        assert_eq!(cat.escalation, None);
        assert_eq!(c.calendar, Calendar::default());
    }

    #[test]
    fn every_problem_is_reported_with_line_and_field() {
        let text = r#"[calendar]
working_days = ["mon", "funday"]
working_hours = "18:00-09:00"
holidays = ["2025-10-01"]
makeup_days = ["2025-10-01"]

[defaults]
handle = "3 days"

[[departments]]
id = "epb"
name = "x"
webhook_url = "ftp://x"

[[departments]]
id = "epb"
name = "y"

[[categories]]
id = "a"
name = "A"
alarm_kind = "exceedance"
department = "nowhere"
closing_standard = "ok"
escalate_to = ["epb", "ghost"]

[[categories]]
id = "b"
name = "B"
parent = "missing"
alarm_kind = "exceedance"
verify_normal_hours = 0
colour = "red"
"#;
        let d = load(text).expect_err("invalid");
        let got: Vec<(usize, &str)> = d.iter().map(|x| (x.line, x.field.as_str())).collect();
        for want in [
            (2, "calendar.working_days[1]"),
            (3, "calendar.working_hours"),
            (5, "calendar.makeup_days[0]"),
            (8, "defaults.handle"),
            (13, "departments[0].webhook_url"),
            (16, "departments[1].id"),
            (23, "categories[0].department"),
            (25, "categories[0].escalate_to[1]"),
            (33, "categories[1].colour"),
        ] {
            assert!(got.contains(&want), "missing {want:?} in\n{d}");
        }
        assert!(d.to_string().contains("cat.toml:8:"), "{d}");
    }

    /// A date that does not exist, or is not YYYY-MM-DD, is an error at its field and line.
    #[test]
    fn bad_calendar_dates_are_errors_at_their_field() {
        for (line, want) in [
            (
                "holidays = [\"2025-02-30\"]",
                "calendar.holidays: `2025-02-30`: no such date",
            ),
            (
                "makeup_days = [\"2025-10-11T00:00\"]",
                "calendar.makeup_days: `2025-10-11T00:00`: expected a date YYYY-MM-DD",
            ),
        ] {
            let d = load(&format!("[calendar]\n{line}\n{MINIMAL}")).expect_err("invalid");
            assert!(d.to_string().contains(want), "{want} missing in\n{d}");
        }
    }

    #[test]
    fn semantic_errors_in_a_parsable_file() {
        let text = format!(
            "{MINIMAL}\n[[categories]]\nid = \"b\"\nname = \"B\"\nparent = \"missing\"\nalarm_kind = \"exceedance\"\nverify_normal_hours = 0\n\n[[categories]]\nid = \"c\"\nname = \"C\"\n"
        );
        let d = load(&text).expect_err("invalid");
        let fields: Vec<&str> = d.iter().map(|x| x.field.as_str()).collect();
        for want in [
            "categories[1].parent",
            "categories[1].alarm_kind",
            "categories[1].department",
            "categories[1].verify_normal_hours",
            "categories[2].department",
            "categories[2].closing_standard",
        ] {
            assert!(fields.contains(&want), "missing {want} in\n{d}");
        }
        assert!(d.iter().all(|x| x.line > 0), "{d}");
    }

    #[test]
    fn nested_sub_categories_and_unknown_sections_are_refused() {
        let text = format!(
            "{MINIMAL}\n[[categories]]\nid = \"b\"\nname = \"B\"\nparent = \"exceedance\"\n\n[[categories]]\nid = \"c\"\nname = \"C\"\nparent = \"b\"\n\n[extra]\nx = 1\n"
        );
        let d = load(&text).expect_err("invalid");
        let fields: Vec<&str> = d.iter().map(|x| x.field.as_str()).collect();
        assert!(fields.contains(&"categories[2].parent"), "{d}");
        assert!(fields.contains(&"extra"), "{d}");
    }
}
