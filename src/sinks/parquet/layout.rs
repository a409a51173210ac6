//! Where Parquet files and dead letters go: the Hive layout of SPEC §6, by the time field in
//! UTC, and the names of files in progress (hidden until committed).

use std::path::{Path, PathBuf};

use crate::schema::values::civil_from_days;

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
const HOURS_PER_DAY: i64 = 24;

/// Hours since the epoch: the partition of an event.
pub fn hour_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR)
}

/// `date=YYYY-MM-DD`.
pub fn date_dir(day: i64) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("date={year:04}-{month:02}-{day:02}")
}

/// `{target}/{stream}/date=YYYY-MM-DD/hour=HH`.
pub fn partition_dir(target: &Path, stream: &str, hour: i64) -> PathBuf {
    let day = hour.div_euclid(HOURS_PER_DAY);
    let hour_of_day = hour.rem_euclid(HOURS_PER_DAY);
    target.join(stream).join(date_dir(day)).join(format!("hour={hour_of_day:02}"))
}

/// `{target}/_dead_letter/{stream}/date=YYYY-MM-DD`.
pub fn dead_letter_dir(target: &Path, stream: &str, received_at_micros: i64) -> PathBuf {
    let day = hour_of(received_at_micros).div_euclid(HOURS_PER_DAY);
    target.join("_dead_letter").join(stream).join(date_dir(day))
}

/// Work in progress starts with `_`, so readers of the dataset skip it.
pub fn in_progress_name(final_name: &str) -> String {
    format!("_{final_name}.inprogress")
}

/// The node whose unfinished output `file_name` is: an in-progress (`_….inprogress`) or
/// temporary (`.….tmp`) copy of `part-{node}-{lsn:020}-{row:06}.parquet` or
/// `dl-{node}-{lsn:020}.ndjson`. Read from the end, so any node id parses unambiguously.
pub fn unfinished_owner(file_name: &str) -> Option<&str> {
    let digits = |text: &str, count: usize| text.len() == count && text.bytes().all(|b| b.is_ascii_digit());
    let core = file_name
        .strip_prefix('_')
        .and_then(|n| n.strip_suffix(".inprogress"))
        .or_else(|| file_name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")))?;
    if let Some(rest) = core.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")) {
        let (rest, row) = rest.rsplit_once('-')?;
        let (node, lsn) = rest.rsplit_once('-')?;
        (digits(row, 6) && digits(lsn, 20)).then_some(node)
    } else {
        let rest = core.strip_prefix("dl-")?.strip_suffix(".ndjson")?;
        let (node, lsn) = rest.rsplit_once('-')?;
        digits(lsn, 20).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_files_name_their_node() {
        let lsn = "00000000000000000042";
        assert_eq!(unfinished_owner(&format!("_part-a1-{lsn}-000000.parquet.inprogress")), Some("a1"));
        assert_eq!(unfinished_owner(&format!("_part-a-1-{lsn}-000007.parquet.inprogress")), Some("a-1"));
        assert_eq!(unfinished_owner(&format!("_dl-n_2-{lsn}.ndjson.inprogress")), Some("n_2"));
        assert_eq!(unfinished_owner(&format!(".part-x-{lsn}-000000.parquet.tmp")), Some("x"));
        assert_eq!(unfinished_owner(&format!("part-x-{lsn}-000000.parquet")), None, "committed");
        assert_eq!(unfinished_owner("_something.inprogress"), None);
        assert_eq!(unfinished_owner(&format!("_part-x-{lsn}-00000.parquet.inprogress")), None);
    }

    #[test]
    fn partitions_follow_utc_hours_also_before_1970() {
        let target = Path::new("/t");
        assert_eq!(partition_dir(target, "s", 0), PathBuf::from("/t/s/date=1970-01-01/hour=00"));
        assert_eq!(partition_dir(target, "s", hour_of(-1)), PathBuf::from("/t/s/date=1969-12-31/hour=23"));
        let may_first_noon = 1_714_564_800_000_000; // 2024-05-01T12:00:00Z
        assert_eq!(
            partition_dir(target, "s", hour_of(may_first_noon)),
            PathBuf::from("/t/s/date=2024-05-01/hour=12")
        );
    }
}
