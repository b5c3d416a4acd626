//! Local time of day in a user's time zone, with the IANA database bundled by jiff.
//!
//! Rule for daylight-saving changes, used by every local-time computation (waits until a time
//! of day, calendar-day delays, quiet hours and send windows):
//! - a local time that does not exist (skipped by a spring-forward gap) moves forward to the
//!   first valid instant after the gap: 02:30 on a day New York jumps from 02:00 to 03:00
//!   becomes 03:00 EDT;
//! - a local time that happens twice (a fall-back repeat) means the earlier instant: 01:30 on
//!   the day New York falls back is 01:30 EDT, not 01:30 EST.
//!
//! A user without a valid time-zone trait is in the policy's default zone (UTC unless set).

use std::fmt;

use beckon_core::Ts;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A time of day written `HH:MM` in specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime {
    pub hour: i8,
    pub minute: i8,
}

impl LocalTime {
    pub fn parse(text: &str) -> Result<LocalTime, String> {
        let bad = || format!("expected a time of day as HH:MM, found {text:?}");
        let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
        let hour: i8 = h.parse().map_err(|_| bad())?;
        let minute: i8 = m.parse().map_err(|_| bad())?;
        if !(0..24).contains(&hour) || !(0..60).contains(&minute) || m.len() != 2 {
            return Err(bad());
        }
        Ok(LocalTime { hour, minute })
    }

    fn time(self) -> Time {
        Time::constant(self.hour, self.minute, 0, 0)
    }

    fn minutes(self) -> i32 {
        i32::from(self.hour) * 60 + i32::from(self.minute)
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A span of the local day, `from` inclusive to `to` exclusive; wraps past midnight when
/// `to` is earlier than `from` (quiet hours 21:00 to 08:00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hours {
    pub from: LocalTime,
    pub to: LocalTime,
}

impl Hours {
    fn contains(self, t: LocalTime) -> bool {
        let (f, e, x) = (self.from.minutes(), self.to.minutes(), t.minutes());
        if f <= e {
            f <= x && x < e
        } else {
            x >= f || x < e
        }
    }
}

/// The zone named `name`, if the IANA database knows it.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

/// The instant of a local date and time in `tz`, by the gap and repeat rule above.
pub fn resolve(tz: &TimeZone, dt: DateTime) -> Ts {
    let amb = tz.to_ambiguous_timestamp(dt);
    let ts = match amb.offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, after } => {
            let a = before.to_timestamp(dt).ok();
            let b = after.to_timestamp(dt).ok();
            a.into_iter().chain(b).min()
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset in force after the gap, the local time lands before the
            // transition; the transition itself is the first valid instant.
            let before_gap = after.to_timestamp(dt).ok();
            before_gap.and_then(|t| tz.following(t).next().map(|tr| tr.timestamp()))
        }
    };
    ts.map_or(Ts::MAX, |t| Ts(t.as_millisecond()))
}

fn local(now: Ts, tz: &TimeZone) -> DateTime {
    tz.to_datetime(now.to_jiff())
}

/// The first instant strictly after `now` at which local time in `tz` is `at`.
pub fn next_local_time(now: Ts, tz: &TimeZone, at: LocalTime) -> Ts {
    let mut day = local(now, tz).date();
    // Two days always suffice; a third guards against a zone skipping a whole day.
    for _ in 0..3 {
        let t = resolve(tz, day.to_datetime(at.time()));
        if t > now {
            return t;
        }
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    Ts::MAX
}

/// `days` calendar days after `now`, at the same local time of day.
pub fn add_days(now: Ts, tz: &TimeZone, days: u32) -> Ts {
    let dt = local(now, tz);
    match dt
        .date()
        .checked_add(jiff::Span::new().days(i64::from(days)))
    {
        Ok(date) => resolve(tz, date.to_datetime(dt.time())),
        Err(_) => Ts::MAX,
    }
}

/// The instant of a local date at `at` (midnight when absent).
pub fn on_date(date: Date, tz: &TimeZone, at: Option<LocalTime>) -> Ts {
    let time = at.map_or(Time::midnight(), LocalTime::time);
    resolve(tz, date.to_datetime(time))
}

/// When `now` falls inside `hours`, the instant they end; `None` outside them.
pub fn inside(now: Ts, tz: &TimeZone, hours: Hours) -> Option<Ts> {
    let dt = local(now, tz);
    let t = LocalTime {
        hour: dt.hour(),
        minute: dt.minute(),
    };
    hours
        .contains(t)
        .then(|| next_local_time(now, tz, hours.to))
}

/// When `now` falls outside the window `hours`, the instant it next opens.
pub fn outside(now: Ts, tz: &TimeZone, hours: Hours) -> Option<Ts> {
    let closed = Hours {
        from: hours.to,
        to: hours.from,
    };
    inside(now, tz, closed)
}

/// `08:00 Europe/Berlin`, for explanations.
pub fn describe(at: Ts, tz: &TimeZone) -> String {
    let dt = local(at, tz);
    let name = tz.iana_name().unwrap_or("UTC");
    let today = local(at, tz).date();
    format!("{} {:02}:{:02} {name}", today, dt.hour(), dt.minute())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        zone("America/New_York").unwrap_or(TimeZone::UTC)
    }

    fn utc(text: &str) -> Ts {
        Ts::parse_rfc3339(text).unwrap_or(Ts::MIN)
    }

    fn lt(text: &str) -> LocalTime {
        LocalTime::parse(text).unwrap_or(LocalTime { hour: 0, minute: 0 })
    }

    #[test]
    fn spring_forward_gap_moves_to_the_first_valid_instant() {
        // 2026-03-08: New York jumps from 02:00 EST to 03:00 EDT (07:00Z).
        let now = utc("2026-03-08T05:00:00Z");
        assert_eq!(
            next_local_time(now, &ny(), lt("02:30")),
            utc("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            next_local_time(now, &ny(), lt("09:00")),
            utc("2026-03-08T13:00:00Z")
        );
        assert_eq!(
            next_local_time(now, &ny(), lt("01:59")),
            utc("2026-03-08T06:59:00Z")
        );
    }

    #[test]
    fn fall_back_repeat_takes_the_earlier_instant() {
        // 2026-11-01: New York falls back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
        let now = utc("2026-11-01T04:00:00Z");
        assert_eq!(
            next_local_time(now, &ny(), lt("01:30")),
            utc("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            next_local_time(now, &ny(), lt("09:00")),
            utc("2026-11-01T14:00:00Z")
        );
    }

    #[test]
    fn calendar_days_keep_the_local_time_across_changes() {
        let fri = utc("2026-03-06T14:00:00Z"); // 09:00 EST
        assert_eq!(add_days(fri, &ny(), 2), utc("2026-03-08T13:00:00Z")); // 09:00 EDT
        let sat = utc("2026-10-31T13:00:00Z"); // 09:00 EDT
        assert_eq!(add_days(sat, &ny(), 1), utc("2026-11-01T14:00:00Z")); // 09:00 EST
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let berlin = zone("Europe/Berlin").unwrap_or(TimeZone::UTC);
        let quiet = Hours {
            from: lt("21:00"),
            to: lt("08:00"),
        };
        let late = utc("2026-06-01T21:30:00Z"); // 23:30 in Berlin
        assert_eq!(
            inside(late, &berlin, quiet),
            Some(utc("2026-06-02T06:00:00Z"))
        );
        assert_eq!(inside(utc("2026-06-01T10:00:00Z"), &berlin, quiet), None);
        assert_eq!(
            describe(utc("2026-06-02T06:00:00Z"), &berlin),
            "2026-06-02 08:00 Europe/Berlin"
        );
    }
}
