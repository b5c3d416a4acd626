//! Instants and spans in milliseconds.
//!
//! Beckon keeps time as whole milliseconds since the Unix epoch: event timestamps carry no more
//! precision than that, integer arithmetic keeps replay deterministic, and an `i64` is cheap to
//! store per event occurrence.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// An instant: milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ts(pub i64);

impl Ts {
    pub const MIN: Ts = Ts(i64::MIN);
    pub const MAX: Ts = Ts(i64::MAX);

    pub fn from_millis(ms: i64) -> Ts {
        Ts(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whether the instant lies within the calendar (years -9999 to 9999): only such an
    /// instant can be written as a timestamp, stored by the scheduler, or ever come due.
    pub fn in_calendar(self) -> bool {
        let min = jiff::Timestamp::MIN.as_millisecond();
        let max = jiff::Timestamp::MAX.as_millisecond();
        (min..=max).contains(&self.0)
    }

    /// Parses an ISO 8601 / RFC 3339 timestamp with an offset (`Z` or `+08:00`, within
    /// -23:59 and +23:59 as RFC 3339 has it). The error shows the whole text, unless it is
    /// longer than any timestamp can be.
    pub fn parse_rfc3339(text: &str) -> Result<Ts, CoreError> {
        let bad = |reason: String| CoreError::BadTimestamp {
            text: shown(text),
            reason,
        };
        if text.len() > LONGEST_TIMESTAMP {
            let n = text.chars().count();
            return Err(bad(format!(
                "{n} characters (the first {LONGEST_TIMESTAMP} shown), longer than any timestamp"
            )));
        }
        let ts = jiff::Timestamp::from_str(text).map_err(|e| bad(e.to_string()))?;

        // The parser takes offsets up to 25:59:59; RFC 3339 stops at 23:59, and an offset
        // past it is a typing mistake, not a place on Earth.
        if !text.ends_with(['Z', 'z'])
            && let Ok(pieces) = jiff::fmt::temporal::Pieces::parse(text)
            && let Some(offset) = pieces.to_numeric_offset()
            && offset.seconds().unsigned_abs() > MAX_OFFSET_SECONDS
        {
            let sign = if offset.is_negative() { '-' } else { '+' };
            let seconds = offset.seconds().unsigned_abs();
            let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
            let mut written = format!("{sign}{h:02}:{m:02}");
            if s != 0 {
                written += &format!(":{s:02}");
            }
            return Err(bad(format!("offset {written} is outside -23:59 to +23:59")));
        }
        Ok(Ts(ts.as_millisecond()))
    }

    /// The instant of a protobuf-style timestamp (whole seconds since the epoch and the
    /// nanoseconds past them), when it lies within years -9999 to 9999. Outside that range
    /// the parts are refused, with why, rather than saturated: a client that sends
    /// nanoseconds where seconds go would otherwise land at the end of time.
    pub fn from_parts(seconds: i64, nanos: i32) -> Result<Ts, String> {
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(format!("nanos {nanos} out of range 0..=999999999"));
        }
        let min = jiff::Timestamp::MIN.as_second();
        let max = jiff::Timestamp::MAX.as_second();
        if !(min..=max).contains(&seconds) {
            return Err(format!(
                "seconds {seconds} out of range {min}..={max} ({} to {})",
                jiff::Timestamp::MIN,
                jiff::Timestamp::MAX
            ));
        }
        Ok(Ts(seconds * 1000 + i64::from(nanos / 1_000_000)))
    }

    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::MAX)
    }

    pub fn saturating_add(self, d: Duration) -> Ts {
        Ts(self.0.saturating_add(d.0))
    }

    pub fn saturating_sub(self, d: Duration) -> Ts {
        Ts(self.0.saturating_sub(d.0))
    }
}

/// The earliest instant an event may carry: 1970-01-01T00:00:00Z. Nothing anyone tracks
/// happened before it, and an earlier time (a year 0 left by a client's default value) would
/// become the user's `first_seen` and start every window from it.
pub const EARLIEST_EVENT: Ts = Ts(0);

/// The latest instant an event may carry: the latest millisecond the calendar represents
/// (late on 9999-12-30 UTC).
pub const LATEST_EVENT: Ts = Ts(MAX_JIFF_MS);

/// The range of event times in words, for refusals.
fn event_range() -> String {
    format!("the supported range is {EARLIEST_EVENT} to {LATEST_EVENT}")
}

/// `at` when an event may carry it; otherwise why not, with the range.
pub fn check_event_time(at: Ts) -> Result<Ts, String> {
    // Quoted like a timestamp written in a line, so both paths read alike. Worded only for a
    // refusal: every accepted event passes through here.
    let quoted = || format!("{:?}", at.to_string());
    if at < EARLIEST_EVENT {
        Err(format!(
            "{} is before {EARLIEST_EVENT}; {}",
            quoted(),
            event_range()
        ))
    } else if at > LATEST_EVENT {
        Err(format!("{} is out of range; {}", quoted(), event_range()))
    } else {
        Ok(at)
    }
}

/// Reads an event's timestamp: ISO 8601 as [`Ts::parse_rfc3339`] takes it, within
/// [`EARLIEST_EVENT`] and [`LATEST_EVENT`]. A refusal shows the text as written; one that is
/// well formed but past the calendar (`9999-12-31T23:59:59.999Z`) is said to be out of range.
pub fn parse_event_time(text: &str) -> Result<Ts, String> {
    let at = match Ts::parse_rfc3339(text) {
        Ok(at) => at,
        Err(_) if past_the_calendar(text) => {
            return Err(format!(
                "{:?} is out of range; {}",
                shown(text),
                event_range()
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    check_event_time(at).map_err(|_| {
        let side = if at < EARLIEST_EVENT {
            format!("before {EARLIEST_EVENT}")
        } else {
            "out of range".to_string()
        };
        format!("{:?} is {side}; {}", shown(text), event_range())
    })
}

/// Whether `text` is a valid date and time with an offset whose instant the calendar cannot
/// hold: its parts read, and only the instant they make fails.
fn past_the_calendar(text: &str) -> bool {
    let well_formed = jiff::fmt::temporal::Pieces::parse(text)
        .is_ok_and(|p| p.offset().is_some() && p.time().is_some());
    well_formed && jiff::Timestamp::from_str(text).is_err()
}

impl fmt::Display for Ts {
    /// RFC 3339 in UTC with millisecond precision, so output sorts and diffs cleanly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match rfc3339_millis(self.0) {
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => write!(f, "{:.3}", self.to_jiff()),
        }
    }
}

/// Longer than any timestamp is written (`-009999-12-31T23:59:59.999999999+23:59` is 38
/// characters), with room to spare; a longer text is shown only in part.
const LONGEST_TIMESTAMP: usize = 64;

/// The widest offset from UTC RFC 3339 allows: 23:59.
const MAX_OFFSET_SECONDS: u32 = 23 * 3600 + 59 * 60;

/// `text` as an error shows it: whole, or its start when it is longer than any timestamp.
fn shown(text: &str) -> String {
    text.chars().take(LONGEST_TIMESTAMP).collect()
}

/// The latest millisecond jiff represents (late on 9999-12-30 UTC); later instants print as it.
const MAX_JIFF_MS: i64 = 253_402_207_200_999;

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` for instants from 1970 to the latest jiff represents,
/// the text jiff prints for them; `None` outside that range, which jiff then prints. Decision
/// reasons and output name instants on every event, and the general formatter cost more
/// than the rest of such a decision.
fn rfc3339_millis(ms: i64) -> Option<[u8; 24]> {
    if !(0..=MAX_JIFF_MS).contains(&ms) {
        return None;
    }
    const DAY: i64 = 86_400_000;
    let (days, of_day) = (ms / DAY, ms % DAY);

    // Civil date from days since 1970-01-01, in 400-year eras starting on March 1st.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);

    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600_000);
    put(14, 2, of_day / 60_000 % 60);
    put(17, 2, of_day / 1_000 % 60);
    put(20, 3, of_day % 1_000);
    Some(out)
}

/// A span of time in milliseconds, written in specs as `90s`, `30m`, `1h`, `2d` or `1d12h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub i64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub fn from_millis(ms: i64) -> Duration {
        Duration(ms)
    }

    pub fn hours(h: i64) -> Duration {
        Duration(h * 3_600_000)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = CoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| CoreError::BadDuration {
            text: text.to_string(),
            reason: why.to_string(),
        };
        let mut total: i64 = 0;
        let mut digits = String::new();
        let mut saw_unit = false;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }

        while let Some(c) = rest.chars().next() {
            if c.is_ascii_digit() {
                digits.push(c);
                rest = &rest[1..];
                continue;
            }

            // "ms" must be tried before "m".
            let (unit_ms, len) = if rest.starts_with("ms") {
                (1, 2)
            } else {
                match c {
                    's' => (1_000, 1),
                    'm' => (60_000, 1),
                    'h' => (3_600_000, 1),
                    'd' => (86_400_000, 1),
                    'w' => (604_800_000, 1),
                    _ => return Err(bad("expected a number followed by ms, s, m, h, d or w")),
                }
            };
            if digits.is_empty() {
                return Err(bad("a unit must follow a number"));
            }
            let n: i64 = digits.parse().map_err(|_| bad("number too large"))?;
            let part = n.checked_mul(unit_ms).ok_or_else(|| bad("too long"))?;
            total = total.checked_add(part).ok_or_else(|| bad("too long"))?;
            digits.clear();
            saw_unit = true;
            rest = &rest[len..];
        }

        if !digits.is_empty() || !saw_unit {
            return Err(bad("a number needs a unit (ms, s, m, h, d or w)"));
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed while the reader stands on the text, so a refusal carries its place.
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 90s, 30m, 1h or 2d")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                text.parse().map_err(E::custom)
            }
        }

        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jiff_text(ms: i64) -> String {
        format!("{:.3}", Ts(ms).to_jiff())
    }

    #[test]
    fn offsets_stop_at_23_59_and_refusals_show_the_whole_text() {
        for ok in [
            "2026-03-02T09:00:00+23:59",
            "2026-03-02T09:00:00-23:59",
            "2026-03-02T09:00:00.123456789+05:30",
            "2026-03-02T09:00:00z",
        ] {
            assert!(Ts::parse_rfc3339(ok).is_ok(), "{ok}");
        }
        for (text, offset) in [
            ("2026-03-02T09:00:00+25:00", "+25:00"),
            ("2026-03-02T09:00:00-24:00", "-24:00"),
            ("2026-03-02T09:00:00+23:59:30", "+23:59:30"),
        ] {
            let e = Ts::parse_rfc3339(text).expect_err("refused").to_string();
            assert_eq!(
                e,
                format!(
                    "timestamp \"{text}\" is not ISO 8601: offset {offset} is outside -23:59 \
                     to +23:59"
                )
            );
        }

        // Out of range: the text and the whole reason.
        let e = Ts::parse_rfc3339("-009999-01-01T00:00:00Z").expect_err("refused");
        let e = e.to_string();
        assert!(
            e.starts_with("timestamp \"-009999-01-01T00:00:00Z\""),
            "{e}"
        );
        assert!(e.ends_with("-377705023201..=253402207200"), "{e}");

        // Longer than any timestamp: its start, and how long it was.
        let huge = format!("2026-03-02T09:00:00.{}Z", "1".repeat(100_000));
        let e = Ts::parse_rfc3339(&huge).expect_err("refused").to_string();
        assert!(e.len() < 200, "{e}");
        assert!(
            e.ends_with("100021 characters (the first 64 shown), longer than any timestamp"),
            "{e}"
        );
    }

    #[test]
    fn instants_print_as_jiff_prints_them() {
        let day = 86_400_000;
        let edges = [
            0,
            1,
            day - 1,
            day,
            951_782_400_000,       // 2000-02-29
            68_169_600_000,        // 1972-02-29
            4_107_542_400_000 - 1, // the last millisecond before 2100-03-01
            4_107_542_400_000,     // 2100-03-01, not after a leap day
            1_511_568_000_123,     // 2017-11-25T00:00:00.123Z
            MAX_JIFF_MS,
            MAX_JIFF_MS + 1, // outside the fast path
            253_402_300_799_999,
            -1,
            i64::MIN,
            i64::MAX,
        ];
        for ms in edges {
            assert_eq!(Ts(ms).to_string(), jiff_text(ms), "at {ms}");
        }

        assert_eq!(jiff::Timestamp::MAX.as_millisecond(), MAX_JIFF_MS);

        // A fixed pseudo-random walk over the whole range of the fast path.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let ms = (x >> 1) as i64 % (MAX_JIFF_MS + 1);
            assert_eq!(Ts(ms).to_string(), jiff_text(ms), "at {ms}");
        }
    }

    #[test]
    fn event_times_run_from_1970_to_the_end_of_the_calendar() {
        let range = "the supported range is 1970-01-01T00:00:00.000Z to 9999-12-30T22:00:00.999Z";
        assert_eq!(parse_event_time("1970-01-01T00:00:00Z"), Ok(EARLIEST_EVENT));
        assert_eq!(
            parse_event_time("9999-12-30T22:00:00.999Z"),
            Ok(LATEST_EVENT)
        );
        assert_eq!(
            parse_event_time("0000-01-01T00:00:00Z"),
            Err(format!(
                "\"0000-01-01T00:00:00Z\" is before 1970-01-01T00:00:00.000Z; {range}"
            ))
        );
        assert_eq!(
            parse_event_time("1969-12-31T23:59:59.999Z"),
            Err(format!(
                "\"1969-12-31T23:59:59.999Z\" is before 1970-01-01T00:00:00.000Z; {range}"
            ))
        );
        // An offset can put a time written in 1970 before it.
        assert!(parse_event_time("1970-01-01T00:30:00+01:00").is_err());
        for late in [
            "9999-12-31T23:59:59.999Z",
            "9999-12-30T22:00:01Z",
            "9999-12-31T00:00:00-01:00",
        ] {
            assert_eq!(
                parse_event_time(late),
                Err(format!("{late:?} is out of range; {range}"))
            );
        }
        // Other mistakes keep the parser's own reasons.
        for (text, why) in [
            ("2017-02-30T00:00:00Z", "not ISO 8601"),
            ("2017-11-25T00:00:00", "not ISO 8601"),
            ("2017-11-25T00:00:00+25:00", "outside -23:59 to +23:59"),
        ] {
            let e = parse_event_time(text).expect_err(text);
            assert!(
                e.contains(why) && !e.contains("supported range"),
                "{text}: {e}"
            );
        }

        assert_eq!(check_event_time(Ts(0)), Ok(Ts(0)));
        assert_eq!(
            check_event_time(Ts(-1)),
            Err(format!(
                "\"1969-12-31T23:59:59.999Z\" is before 1970-01-01T00:00:00.000Z; {range}"
            ))
        );
        assert!(check_event_time(Ts(MAX_JIFF_MS + 1)).is_err());
    }

    #[test]
    fn timestamp_parts_outside_the_calendar_are_refused() {
        assert_eq!(
            Ts::from_parts(1_511_568_000, 123_000_000),
            Ok(Ts(1_511_568_000_123))
        );
        assert_eq!(Ts::from_parts(-1, 999_000_000), Ok(Ts(-1)));
        for (seconds, nanos) in [(i64::MAX, 0), (i64::MIN, 0), (1 << 60, 0), (0, -1)] {
            let err = Ts::from_parts(seconds, nanos).expect_err("refused");
            assert!(err.contains("out of range"), "{err}");
        }
        let max = jiff::Timestamp::MAX.as_second();
        assert!(Ts::from_parts(max, 999_999_999).is_ok());
        assert!(Ts::from_parts(max + 1, 0).is_err());
        assert!(Ts::from_parts(max, 999_999_999).is_ok_and(Ts::in_calendar));
        assert!(!Ts((max + 1) * 1000).in_calendar());
        assert!(!Ts::MAX.in_calendar() && !Ts::MIN.in_calendar());
    }

    #[test]
    fn durations_parse_compound_units() {
        assert_eq!("1h".parse::<Duration>().ok(), Some(Duration(3_600_000)));
        assert_eq!(
            "1d12h".parse::<Duration>().ok(),
            Some(Duration(129_600_000))
        );
        assert_eq!("250ms".parse::<Duration>().ok(), Some(Duration(250)));
        assert!("12".parse::<Duration>().is_err());
        assert!("h".parse::<Duration>().is_err());
        assert!("3 days".parse::<Duration>().is_err());
    }

    #[test]
    fn timestamps_round_trip_with_offsets() {
        let a = Ts::parse_rfc3339("2017-11-25T08:00:00.000+08:00").ok();
        let b = Ts::parse_rfc3339("2017-11-25T00:00:00Z").ok();
        assert_eq!(a, b);
        assert_eq!(
            b.map(|t| t.to_string()).as_deref(),
            Some("2017-11-25T00:00:00.000Z")
        );
        assert!(Ts::parse_rfc3339("25/11/2017").is_err());
    }
}
