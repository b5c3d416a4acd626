//! The values each delivery setting accepts.
//!
//! A setting is checked as it is read, so an error in a YAML file carries the value's path,
//! line and column; [`crate::ProvidersConfig::apply`] checks again, for settings built in code
//! or read from JSON. Nothing is clamped: a value outside its range is refused, with the range.

use serde::Deserializer;

/// A whole-number setting's range, and the range in words.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub min: u64,
    pub max: u64,
    pub words: &'static str,
}

/// At least one attempt, or nothing is ever sent; the outbox sends again later, so a few
/// attempts per send are plenty.
pub const MAX_ATTEMPTS: Range = Range {
    min: 1,
    max: 20,
    words: "1 to 20 attempts",
};

/// A zero delay would retry a failing provider in a tight loop.
pub const BASE_DELAY_MS: Range = Range {
    min: 1,
    max: 60_000,
    words: "1 ms to 1 minute",
};

pub const MAX_DELAY_MS: Range = Range {
    min: 1,
    max: 3_600_000,
    words: "1 ms to 1 hour, and no shorter than base_delay",
};

/// A bucket of no tokens would make every send wait.
pub const BURST: Range = Range {
    min: 1,
    max: 1_000_000,
    words: "1 to 1,000,000 sends",
};

pub const FAILURE_THRESHOLD: Range = Range {
    min: 1,
    max: 1_000,
    words: "1 to 1,000 failures",
};

/// A circuit that opens for no time never holds anything back.
pub const COOL_DOWN_MS: Range = Range {
    min: 1,
    max: 3_600_000,
    words: "1 ms to 1 hour",
};

/// A call with no time to answer always fails.
pub const TIMEOUT_MS: Range = Range {
    min: 1,
    max: 600_000,
    words: "1 ms to 10 minutes",
};

/// Each pooled connection is a socket held open to the SMTP server.
pub const POOL_SIZE: Range = Range {
    min: 1,
    max: 64,
    words: "1 to 64 connections",
};

/// Port 0 is no port a server listens on.
pub const PORT: Range = Range {
    min: 1,
    max: 65_535,
    words: "a TCP port, 1 to 65535",
};

/// The largest rate accepted, in sends per second.
pub const MAX_RATE: f64 = 1_000_000.0;

impl Range {
    /// `value` if it lies in the range; otherwise why not (the caller names the setting).
    pub fn check(&self, value: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{value} is out of range; {}", self.allowed()))
        }
    }

    fn allowed(&self) -> String {
        format!("allowed {}..={} ({})", self.min, self.max, self.words)
    }

    /// Reads the setting, refusing a value outside the range (a negative one included) while
    /// the reader is still on it.
    pub fn read<'de, D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_i128(Checked(self))
    }
}

/// A rate in sends per second: above 0 and finite.
pub fn check_rate(value: f64) -> Result<f64, String> {
    // NaN fails both comparisons.
    if value > 0.0 && value <= MAX_RATE {
        Ok(value)
    } else {
        Err(format!(
            "{value} is out of range; allowed above 0, at most {MAX_RATE} sends per second"
        ))
    }
}

/// Reads a rate, refusing one out of range while the reader is still on it.
pub fn read_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_f64(Rate)
}

struct Rate;

impl serde::de::Visitor<'_> for Rate {
    type Value = f64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a number of sends per second, above 0, at most {MAX_RATE}"
        )
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        check_rate(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

struct Checked(Range);

impl Checked {
    fn verdict<E: serde::de::Error>(&self, value: i128) -> Result<u64, E> {
        u64::try_from(value)
            .map_err(|_| format!("{value} is out of range; {}", self.0.allowed()))
            .and_then(|v| self.0.check(v))
            .map_err(E::custom)
    }
}

impl serde::de::Visitor<'_> for Checked {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a whole number, {}", self.0.allowed())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        self.verdict(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        self.verdict(i128::from(v))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<u64, E> {
        self.verdict(v)
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<u64, E> {
        self.verdict(i128::try_from(v).unwrap_or(i128::MAX))
    }
}

/// `deserialize_with` functions, one per setting and field type.
macro_rules! bounded {
    ($($fn:ident: $range:ident as $t:ty;)*) => {
        $(
            pub(crate) fn $fn<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let value = $range.read(d)?;
                // The range was chosen to fit the field's type.
                <$t>::try_from(value).map_err(|_| {
                    serde::de::Error::custom(format!("{value} is out of range"))
                })
            }
        )*
    };
}

bounded! {
    read_max_attempts: MAX_ATTEMPTS as u32;
    read_burst: BURST as u32;
    read_failure_threshold: FAILURE_THRESHOLD as u32;
    read_timeout_ms: TIMEOUT_MS as u64;
    read_pool_size: POOL_SIZE as u32;
    read_port: PORT as u16;
}

/// Durations written as whole milliseconds, in their range.
pub(crate) fn read_base_delay<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    BASE_DELAY_MS.read(d).map(std::time::Duration::from_millis)
}

pub(crate) fn read_max_delay<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    MAX_DELAY_MS.read(d).map(std::time::Duration::from_millis)
}

pub(crate) fn read_cool_down<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    COOL_DOWN_MS.read(d).map(std::time::Duration::from_millis)
}

/// A duration as whole milliseconds, saturating, for checking against a [`Range`].
pub(crate) fn millis_of(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
