//! Time periods of the range partitions: which period an event falls in, its bounds, and
//! the partition's name. All in UTC.

use crate::config::PartitionBy;
use crate::schema::values::{civil_from_days, days_from_civil};

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
/// PostgreSQL's limit on the length of a name, in bytes.
pub const IDENTIFIER_BYTES_MAX: usize = 63;

/// One partition's period: `[start, end)` in Unix microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// The period holding the instant `micros`.
pub fn period_of(by: PartitionBy, micros: i64) -> Period {
    match by {
        PartitionBy::Hour => {
            let start = micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
            Period { start, end: start + MICROS_PER_HOUR }
        }
        PartitionBy::Day => {
            let start = micros.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
            Period { start, end: start + MICROS_PER_DAY }
        }
        PartitionBy::Month => {
            let (year, month, _) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
            let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            Period {
                start: days_from_civil(year, month, 1) * MICROS_PER_DAY,
                end: days_from_civil(next_year, next_month, 1) * MICROS_PER_DAY,
            }
        }
    }
}

/// The period right after `period`.
pub fn next(by: PartitionBy, period: Period) -> Period {
    period_of(by, period.end)
}

/// `_{stream}_{YYYY_MM_DD}` (by day), `..._HH` (by hour) or `_{stream}_{YYYY_MM}` (by month).
/// Stream names never start with `_`, so no partition name is ever a stream's table name.
/// A name past PostgreSQL's 63 bytes keeps the start of the stream name and adds a hash of
/// all of it, so two long stream names still get different partitions.
pub fn partition_name(stream: &str, by: PartitionBy, period: Period) -> String {
    let days = period.start.div_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let suffix = match by {
        PartitionBy::Hour => {
            let hour = period.start.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR;
            format!("{year:04}_{month:02}_{day:02}_{hour:02}")
        }
        PartitionBy::Day => format!("{year:04}_{month:02}_{day:02}"),
        PartitionBy::Month => format!("{year:04}_{month:02}"),
    };
    name_with_suffix(stream, &suffix)
}

/// `_{stream}_default`: rows whose period has no partition of its own.
pub fn default_partition_name(stream: &str) -> String {
    name_with_suffix(stream, "default")
}

fn name_with_suffix(stream: &str, suffix: &str) -> String {
    let name = format!("_{stream}_{suffix}");
    if name.len() <= IDENTIFIER_BYTES_MAX {
        return name;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(stream.as_bytes());
    let hash: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    // `_` + kept + `_` + hash + `_` + suffix; stream names are ASCII, so slicing is safe.
    let keep = IDENTIFIER_BYTES_MAX - suffix.len() - hash.len() - 3;
    format!("_{}_{hash}_{suffix}", &stream[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn periods_cover_their_instant() {
        // 2024-02-29T13:45:00Z
        let t = days_from_civil(2024, 2, 29) * DAY + 13 * MICROS_PER_HOUR + 45 * 60_000_000;
        let hour = period_of(PartitionBy::Hour, t);
        assert_eq!(hour.start, days_from_civil(2024, 2, 29) * DAY + 13 * MICROS_PER_HOUR);
        assert_eq!(partition_name("s", PartitionBy::Hour, hour), "_s_2024_02_29_13");
        let day = period_of(PartitionBy::Day, t);
        assert_eq!(partition_name("s", PartitionBy::Day, day), "_s_2024_02_29");
        let month = period_of(PartitionBy::Month, t);
        assert_eq!(month.start, days_from_civil(2024, 2, 1) * DAY);
        assert_eq!(month.end, days_from_civil(2024, 3, 1) * DAY);
        assert_eq!(partition_name("s", PartitionBy::Month, month), "_s_2024_02");
        let december = period_of(PartitionBy::Month, days_from_civil(1999, 12, 31) * DAY);
        assert_eq!(december.end, days_from_civil(2000, 1, 1) * DAY);
        assert_eq!(next(PartitionBy::Month, december).start, december.end);
        // Before 1970 and at year 0.
        let early = period_of(PartitionBy::Day, days_from_civil(0, 1, 1) * DAY + 5);
        assert_eq!(partition_name("s", PartitionBy::Day, early), "_s_0000_01_01");
    }

    #[test]
    fn long_names_stay_within_63_bytes_and_distinct() {
        let a = "a".repeat(63);
        let b = format!("{}b", "a".repeat(62));
        let period = period_of(PartitionBy::Hour, 0);
        let (name_a, name_b) =
            (partition_name(&a, PartitionBy::Hour, period), partition_name(&b, PartitionBy::Hour, period));
        assert!(name_a.len() <= IDENTIFIER_BYTES_MAX && name_b.len() <= IDENTIFIER_BYTES_MAX);
        assert_ne!(name_a, name_b);
        assert!(name_a.ends_with("_1970_01_01_00"));
        assert!(default_partition_name(&a).len() <= IDENTIFIER_BYTES_MAX);
    }
}
