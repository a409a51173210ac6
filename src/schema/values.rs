//! Strict parsers and formatters for the scalar field types of a stream schema:
//! RFC 3339 and epoch timestamps, calendar dates, exact decimals and UUIDs.
//!
//! What this module promises, for every input:
//!
//! - **No panics.** Input bytes are never indexed or unwrapped (enforced by the lints
//!   below) and all arithmetic that input can drive is checked or saturating.
//! - **No heap allocation.** Parsers read borrowed bytes and return plain values;
//!   formatters only append to the caller's `String`.
//! - **No floating point.** Decimals are parsed and compared digit by digit, so a value
//!   is either kept exactly or refused, never rounded.
//! - **Bounded work.** Cost is linear in the input length; an exponent such as
//!   `1e999999999` is reasoned about arithmetically, never looped over.
//! - **No silent coercion.** Anything outside the contract's strict forms is an error.
//!   Errors are short, lowercase, static reasons meant for a person, so rejecting an
//!   event costs no allocation either.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::cmp::Ordering;
use std::iter;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The first accepted instant, 0000-01-01T00:00:00Z, in microseconds since the Unix epoch.
pub const MIN_TIMESTAMP_MICROS: i64 = days_from_civil(0, 1, 1) * MICROS_PER_DAY;
/// The last accepted instant, 9999-12-31T23:59:59.999999Z, in microseconds since the Unix epoch.
pub const MAX_TIMESTAMP_MICROS: i64 = days_from_civil(10_000, 1, 1) * MICROS_PER_DAY - 1;

const TIMESTAMP_SHAPE: &str =
    "timestamp is not RFC 3339 (expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM)";
const TIMESTAMP_SEPARATOR: &str = "timestamp must separate date and time with 'T'";
const HOUR_RANGE: &str = "timestamp hour must be 00-23";
const MINUTE_RANGE: &str = "timestamp minute must be 00-59";
const SECOND_RANGE: &str = "timestamp second must be 00-59 (leap seconds are refused)";
const EMPTY_FRACTION: &str = "timestamp has a '.' without fractional digits";
const LONG_FRACTION: &str = "timestamp has more than 9 fractional digits";
const SUB_MICROSECOND: &str = "timestamp has non-zero sub-microsecond digits";
const NO_OFFSET: &str = "timestamp has no UTC offset";
const OFFSET_SHAPE: &str = "timestamp offset must be Z or ±HH:MM";
const OFFSET_HOUR_RANGE: &str = "timestamp offset hour must be 00-23";
const OFFSET_MINUTE_RANGE: &str = "timestamp offset minute must be 00-59";
const TIMESTAMP_RANGE: &str = "timestamp is outside years 0000-9999";
const DATE_SHAPE: &str = "date is not YYYY-MM-DD";
const MONTH_RANGE: &str = "date has a month outside 01-12";
const DAY_RANGE: &str = "date has a day that does not exist in its month";
const NOT_JSON_NUMBER: &str = "decimal is not a JSON number";
const NOT_PLAIN_NUMERAL: &str =
    "decimal string is not a plain numeral (optional sign, digits, optional fraction)";
const TOO_MANY_FRACTION_DIGITS: &str = "decimal has more fractional digits than the scale allows";
const TOO_MANY_INTEGER_DIGITS: &str = "decimal has more integer digits than precision - scale allows";
const BOUND_NOT_JSON_NUMBER: &str = "bound is not a JSON number";
const UUID_SHAPE: &str = "uuid is not in the hyphenated 8-4-4-4-12 hex form";

// ---------------------------------------------------------------------------
// Timestamps and dates
// ---------------------------------------------------------------------------

/// Unit of an integer epoch timestamp, as set by a field's `epoch_unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// Microseconds since the Unix epoch, UTC, from an RFC 3339 string's bytes (without quotes).
///
/// Format: `YYYY-MM-DD('T'|'t')HH:MM:SS[.f{1,9}](Z|z|(+|-)HH:MM)`. The calendar is
/// checked (leap years included), hours are 00-23, minutes and seconds 00-59 (a leap
/// second is refused), offset hours 00-23 and minutes 00-59. Digits past the sixth
/// fractional digit must be `0`. The result is normalised to UTC, so it may fall
/// outside years 0000-9999 by up to the offset.
pub fn parse_rfc3339_micros(text: &[u8]) -> Result<i64, &'static str> {
    parse_rfc3339_micros_cached(text, &mut DayCache::default())
}

/// The last date `parse_rfc3339_micros_cached` read and its day number: the timestamps of a
/// request mostly fall on one day, whose calendar checks and arithmetic are then done once.
#[derive(Clone, Copy, Debug, Default)]
pub struct DayCache {
    last: Option<([u8; 10], i64)>,
}

/// `parse_rfc3339_micros`, reusing the day number of the date read last when it is the same.
pub fn parse_rfc3339_micros_cached(text: &[u8], cache: &mut DayCache) -> Result<i64, &'static str> {
    let (date, rest) = text.split_first_chunk::<10>().ok_or(TIMESTAMP_SHAPE)?;
    let days = match cache.last {
        Some((last, days)) if last == *date => days,
        _ => {
            let days = parse_ymd(date, TIMESTAMP_SHAPE)?;
            cache.last = Some((*date, days));
            days
        }
    };
    let (time, rest) = rest.split_first_chunk::<9>().ok_or(TIMESTAMP_SHAPE)?;
    let seconds = parse_time_of_day(time)?;
    let (fraction_micros, rest) = parse_fraction(rest)?;
    let offset_seconds = parse_offset(rest)?;
    // Local time = UTC + offset, so UTC = local time - offset.
    Ok(days * MICROS_PER_DAY + (seconds - offset_seconds) * MICROS_PER_SECOND + fraction_micros)
}

/// Converts an integer epoch in `unit` to microseconds.
///
/// Refuses values outside years 0000-9999 (including those that overflow on the way)
/// and, for nanoseconds, values with non-zero sub-microsecond digits.
pub fn epoch_to_micros(value: i64, unit: EpochUnit) -> Result<i64, &'static str> {
    let micros = match unit {
        EpochUnit::Seconds => value.checked_mul(MICROS_PER_SECOND),
        EpochUnit::Millis => value.checked_mul(1_000),
        EpochUnit::Micros => Some(value),
        EpochUnit::Nanos if value % 1_000 != 0 => return Err(SUB_MICROSECOND),
        EpochUnit::Nanos => Some(value / 1_000),
    };
    micros
        .filter(|micros| (MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(micros))
        .ok_or(TIMESTAMP_RANGE)
}

/// Days since 1970-01-01 from exactly `YYYY-MM-DD` (10 bytes, a valid calendar date).
pub fn parse_date_days(text: &[u8]) -> Result<i32, &'static str> {
    let date: &[u8; 10] = text.try_into().map_err(|_| DATE_SHAPE)?;
    let days = parse_ymd(date, DATE_SHAPE)?;
    // Four-digit years keep the day count within about ±3 million.
    i32::try_from(days).map_err(|_| DATE_SHAPE)
}

/// Writes `micros` as an RFC 3339 UTC string with exactly 6 fractional digits,
/// e.g. `2024-05-01T12:00:00.000000Z`.
///
/// Instants outside years 0000-9999 (reachable through a parsed offset) are written
/// with a signed, expanded year such as `-0001-12-31T23:00:00.000000Z`, as ISO 8601
/// does, since RFC 3339 has no form for them.
pub fn format_rfc3339_micros(micros: i64, out: &mut String) {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    // rem_euclid is never negative, so unsigned_abs is just a lossless conversion.
    let micros_of_day = micros.rem_euclid(MICROS_PER_DAY).unsigned_abs();
    let seconds_of_day = micros_of_day / 1_000_000;
    push_year(out, year);
    out.push('-');
    push_padded(out, u64::from(month), 2);
    out.push('-');
    push_padded(out, u64::from(day), 2);
    out.push('T');
    push_padded(out, seconds_of_day / 3_600, 2);
    out.push(':');
    push_padded(out, seconds_of_day / 60 % 60, 2);
    out.push(':');
    push_padded(out, seconds_of_day % 60, 2);
    out.push('.');
    push_padded(out, micros_of_day % 1_000_000, 6);
    out.push('Z');
}

/// Civil date `(year, month 1-12, day 1-31)` of a day number (days since 1970-01-01),
/// by Howard Hinnant's algorithm. Exact for every `i64`.
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // The algorithm counts from 0000-03-01, 719_468 days before the Unix epoch. Adding
    // that directly could overflow near i64::MAX, so split into 400-year eras first:
    // 719_468 = 4 eras + 135_080 days.
    let shifted = days.rem_euclid(146_097) + 135_080;
    let era = days.div_euclid(146_097) + 4 + shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    // Years start in March here, so January and February belong to the next civil year.
    let year = era * 400 + year_of_era + if month <= 2 { 1 } else { 0 };
    // Month and day are in 1..=31 here; `as` because TryFrom is not callable in a const fn.
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a civil date, by Howard Hinnant's algorithm.
///
/// Exact for every valid date whose day number fits in `i64`; beyond that the result
/// saturates. Out-of-range months or days give an unspecified value, never a panic.
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March so that a leap day is the last day of its year.
    let year = if month <= 2 { year.saturating_sub(1) } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = ((month % 12 + 9) % 12) as i64;
    let day_of_year = (153 * month_from_march + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // Widen so that dates near the ends of the i64 day range stay exact, then saturate.
    let days = era as i128 * 146_097 + (day_of_era - 719_468) as i128;
    if days > i64::MAX as i128 {
        i64::MAX
    } else if days < i64::MIN as i128 {
        i64::MIN
    } else {
        days as i64
    }
}

/// Day number of a `YYYY-MM-DD` date, calendar-checked; `shape` is the error for a bad form.
fn parse_ymd(date: &[u8; 10], shape: &'static str) -> Result<i64, &'static str> {
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *date else {
        return Err(shape);
    };
    let year = number(&[y0, y1, y2, y3]).ok_or(shape)?;
    let month = number(&[m0, m1]).ok_or(shape)?;
    let day = number(&[d0, d1]).ok_or(shape)?;
    let year = i64::from(year);
    if !(1..=12).contains(&month) {
        return Err(MONTH_RANGE);
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(DAY_RANGE);
    }
    Ok(days_from_civil(year, month, day))
}

/// Seconds since midnight from `THH:MM:SS` (the date/time separator included).
fn parse_time_of_day(time: &[u8; 9]) -> Result<i64, &'static str> {
    let [separator, h0, h1, b':', m0, m1, b':', s0, s1] = *time else {
        return Err(TIMESTAMP_SHAPE);
    };
    let hour = number(&[h0, h1]).ok_or(TIMESTAMP_SHAPE)?;
    let minute = number(&[m0, m1]).ok_or(TIMESTAMP_SHAPE)?;
    let second = number(&[s0, s1]).ok_or(TIMESTAMP_SHAPE)?;
    if !matches!(separator, b'T' | b't') {
        return Err(TIMESTAMP_SEPARATOR);
    }
    if hour > 23 {
        return Err(HOUR_RANGE);
    }
    if minute > 59 {
        return Err(MINUTE_RANGE);
    }
    if second > 59 {
        return Err(SECOND_RANGE);
    }
    Ok(i64::from(hour * 3_600 + minute * 60 + second))
}

/// Microseconds of an optional `.f{1,9}` fraction, and the bytes after it.
fn parse_fraction(rest: &[u8]) -> Result<(i64, &[u8]), &'static str> {
    let [b'.', after_point @ ..] = rest else {
        return Ok((0, rest));
    };
    let (digits, rest) = split_digits(after_point);
    if digits.is_empty() {
        return Err(EMPTY_FRACTION);
    }
    if digits.len() > 9 {
        return Err(LONG_FRACTION);
    }
    let (micro_digits, sub_micro_digits) = digits.split_at_checked(6).unwrap_or((digits, &[]));
    if sub_micro_digits.iter().any(|&digit| digit != b'0') {
        return Err(SUB_MICROSECOND);
    }
    let value = micro_digits.iter().fold(0, |acc, &digit| acc * 10 + i64::from(digit - b'0'));
    // ".5" means 500000 microseconds: pad the digits read to six places.
    let micros = (micro_digits.len()..6).fold(value, |acc, _| acc * 10);
    Ok((micros, rest))
}

/// Offset east of UTC in seconds from `Z`, `z` or `±HH:MM`, which must end the text.
fn parse_offset(rest: &[u8]) -> Result<i64, &'static str> {
    match *rest {
        [b'Z' | b'z'] => Ok(0),
        [sign @ (b'+' | b'-'), h0, h1, b':', m0, m1] => {
            let hours = number(&[h0, h1]).ok_or(OFFSET_SHAPE)?;
            let minutes = number(&[m0, m1]).ok_or(OFFSET_SHAPE)?;
            if hours > 23 {
                return Err(OFFSET_HOUR_RANGE);
            }
            if minutes > 59 {
                return Err(OFFSET_MINUTE_RANGE);
            }
            let seconds = i64::from(hours * 3_600 + minutes * 60);
            Ok(if sign == b'-' { -seconds } else { seconds })
        }
        [] => Err(NO_OFFSET),
        _ => Err(OFFSET_SHAPE),
    }
}

const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Value of a short run of ASCII digits (at most 4, so it cannot overflow), or None.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |acc, &byte| byte.is_ascii_digit().then(|| acc * 10 + u32::from(byte - b'0')))
}

/// Writes a year as four digits, adding a sign (ISO 8601 expanded form) outside 0000-9999.
fn push_year(out: &mut String, year: i64) {
    if year < 0 {
        out.push('-');
    } else if year > 9_999 {
        out.push('+');
    }
    push_padded(out, year.unsigned_abs(), 4);
}

/// Writes `value` in decimal, zero-padded on the left to at least `width` digits.
fn push_padded(out: &mut String, value: u64, width: u32) {
    let count = value.checked_ilog10().map_or(1, |log| log + 1);
    out.extend(iter::repeat_n('0', width.saturating_sub(count) as usize));
    out.extend((0..count).rev().map(|place| char::from(b'0' + (value / 10u64.pow(place) % 10) as u8)));
}

// ---------------------------------------------------------------------------
// Decimals
// ---------------------------------------------------------------------------

/// Where a decimal's text came from, which decides the grammar it must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecimalSource {
    /// A JSON number token: `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`.
    JsonNumber,
    /// The (already unescaped) contents of a JSON string: a plain numeral
    /// `[+-]?\d+(\.\d+)?`, leading zeros allowed, no exponent.
    String,
}

/// Exact decimal: the unscaled `i128` value at `scale` (`value × 10^scale`), parsed
/// from `text` without floating point.
///
/// Fractional digits beyond `scale` are accepted only when they are zeros (`1.2300` at
/// scale 2 is 123), since they change no value. Integer digits, leading zeros not
/// counted, may not exceed `precision - scale`. An exponent is applied exactly. The
/// caller guarantees `precision` in 1..=38 and `scale <= precision`; other values give
/// an error or a meaningless result, never a panic.
pub fn parse_decimal(
    text: &[u8],
    source: DecimalSource,
    precision: u8,
    scale: u8,
) -> Result<i128, &'static str> {
    let numeral = match source {
        DecimalSource::JsonNumber => scan_json_number(text).ok_or(NOT_JSON_NUMBER)?,
        DecimalSource::String => scan_plain_numeral(text).ok_or(NOT_PLAIN_NUMERAL)?,
    };
    let Some(significant) = numeral.significant() else {
        return Ok(0);
    };
    if significant.integer_digits() > i64::from(precision.saturating_sub(scale)) {
        return Err(TOO_MANY_INTEGER_DIGITS);
    }
    let fraction_digits = significant.fraction_digits();
    if fraction_digits > i64::from(scale) {
        return Err(TOO_MANY_FRACTION_DIGITS);
    }
    // Both checks passed, so at most `precision` digits remain to be read: the loop is
    // short and, for precision <= 38, the value fits in i128.
    let digits = numeral
        .significant_digits(&significant)
        .try_fold(0i128, |acc, digit| acc.checked_mul(10)?.checked_add(i128::from(digit - b'0')));
    let shift = u32::try_from(i64::from(scale) - fraction_digits).ok();
    let unscaled = digits
        .zip(shift)
        .and_then(|(digits, shift)| digits.checked_mul(10i128.checked_pow(shift)?))
        .ok_or(TOO_MANY_INTEGER_DIGITS)?;
    Ok(if numeral.negative { -unscaled } else { unscaled })
}

/// Writes the decimal `unscaled` at `scale` as plain text with exactly `scale`
/// fractional digits and at least one integer digit: `-12.3400`, `0.50`, `7`.
pub fn format_decimal(unscaled: i128, scale: u8, out: &mut String) {
    if unscaled < 0 {
        out.push('-');
    }
    let digits = digits_of(unscaled.unsigned_abs());
    let count = digits.len();
    let scale = usize::from(scale);
    if count > scale {
        out.extend(digits.clone().take(count - scale).map(char::from));
    } else {
        out.push('0');
    }
    if scale > 0 {
        out.push('.');
        out.extend(iter::repeat_n('0', scale.saturating_sub(count)));
        out.extend(digits.skip(count.saturating_sub(scale)).map(char::from));
    }
}

/// Compares the exact decimal `unscaled × 10^-scale` with a bound given as JSON number
/// text (any exponent, any number of digits), for schema `min`/`max`.
///
/// Returns the ordering of the value relative to the bound, exactly.
pub fn compare_decimal_to_bound(
    unscaled: i128,
    scale: u8,
    bound_text: &[u8],
) -> Result<Ordering, &'static str> {
    let bound = scan_json_number(bound_text).ok_or(BOUND_NOT_JSON_NUMBER)?;
    let value_sign = unscaled.cmp(&0);
    let Some(significant) = bound.significant() else {
        return Ok(value_sign);
    };
    let bound_sign = if bound.negative { Ordering::Less } else { Ordering::Greater };
    if value_sign != bound_sign {
        return Ok(value_sign.cmp(&bound_sign));
    }
    let magnitude = compare_magnitudes(unscaled.unsigned_abs(), scale, &bound, &significant);
    Ok(if bound.negative { magnitude.reverse() } else { magnitude })
}

/// 16 bytes from the canonical hyphenated 8-4-4-4-12 hex form, in either (or mixed)
/// case; exactly 36 bytes.
pub fn parse_uuid(text: &[u8]) -> Result<[u8; 16], &'static str> {
    if text.len() != 36 {
        return Err(UUID_SHAPE);
    }
    let mut value: u128 = 0;
    for (position, &byte) in text.iter().enumerate() {
        if matches!(position, 8 | 13 | 18 | 23) {
            if byte != b'-' {
                return Err(UUID_SHAPE);
            }
        } else {
            let nibble = char::from(byte).to_digit(16).ok_or(UUID_SHAPE)?;
            // 32 nibbles fill the 128 bits exactly, most significant first.
            value = value << 4 | u128::from(nibble);
        }
    }
    Ok(value.to_be_bytes())
}

/// A numeral split into borrowed parts: `±(int ++ frac) × 10^(exponent - frac.len())`.
struct Numeral<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exponent: i64,
}

/// Where the non-zero digits of a non-zero numeral sit, as positions in its digit
/// string `int ++ frac`: digits `first..end` run from the first to the last non-zero
/// digit, and the decimal point falls before position `point` (which the exponent may
/// move anywhere, including far outside the string).
struct Significant {
    first: usize,
    end: usize,
    point: i64,
}

impl Significant {
    /// Power of ten just above the first non-zero digit: the value is `0.d1d2… × 10^magnitude`.
    fn magnitude(&self) -> i64 {
        self.point.saturating_sub(as_i64(self.first))
    }

    /// Digits left of the point, leading zeros not counted.
    fn integer_digits(&self) -> i64 {
        self.magnitude().max(0)
    }

    /// Digits right of the point needed to reach the last non-zero digit (negative
    /// when that digit sits left of the point).
    fn fraction_digits(&self) -> i64 {
        as_i64(self.end).saturating_sub(self.point)
    }
}

impl<'a> Numeral<'a> {
    fn digits(&self) -> impl DoubleEndedIterator<Item = u8> + Clone + 'a {
        self.int.iter().chain(self.frac).copied()
    }

    /// None when the numeral is zero, whatever its sign, digits or exponent.
    fn significant(&self) -> Option<Significant> {
        let first = self.digits().position(|digit| digit != b'0')?;
        let trailing_zeros = self.digits().rev().position(|digit| digit != b'0').unwrap_or(0);
        Some(Significant {
            first,
            end: self.int.len() + self.frac.len() - trailing_zeros,
            // Exponents were saturated while scanning; saturating here keeps every
            // out-of-range numeral out of range instead of wrapping it back in.
            point: as_i64(self.int.len()).saturating_add(self.exponent),
        })
    }

    fn significant_digits(&self, significant: &Significant) -> impl Iterator<Item = u8> + Clone + 'a {
        self.digits().skip(significant.first).take(significant.end - significant.first)
    }
}

/// Compares two non-zero magnitudes: first by power of ten, then digit by digit.
fn compare_magnitudes(value: u128, scale: u8, bound: &Numeral<'_>, significant: &Significant) -> Ordering {
    let value_magnitude = i64::from(digit_count(value)) - i64::from(scale);
    // With trailing zeros dropped on both sides, a digit string that is a prefix of the
    // other is the smaller one, so plain lexicographic order is numeric order.
    let mut trimmed = value;
    while trimmed != 0 && trimmed.is_multiple_of(10) {
        trimmed /= 10;
    }
    value_magnitude
        .cmp(&significant.magnitude())
        .then_with(|| digits_of(trimmed).cmp(bound.significant_digits(significant)))
}

/// Scans a JSON number token: `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`.
fn scan_json_number(text: &[u8]) -> Option<Numeral<'_>> {
    let (negative, rest) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let (int, rest) = split_digits(rest);
    // JSON forbids an empty integer part and leading zeros.
    if int.is_empty() || matches!(int, [b'0', _, ..]) {
        return None;
    }
    let (frac, rest) = split_fraction(rest)?;
    let (exponent, rest) = match rest {
        [b'e' | b'E', after @ ..] => scan_exponent(after)?,
        _ => (0, rest),
    };
    rest.is_empty().then_some(Numeral { negative, int, frac, exponent })
}

/// Scans a plain numeral as allowed inside a JSON string: `[+-]?\d+(\.\d+)?`.
fn scan_plain_numeral(text: &[u8]) -> Option<Numeral<'_>> {
    let (negative, rest) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let (int, rest) = split_digits(rest);
    if int.is_empty() {
        return None;
    }
    let (frac, rest) = split_fraction(rest)?;
    rest.is_empty().then_some(Numeral { negative, int, frac, exponent: 0 })
}

/// Splits an optional `.digits` fraction off the front; None for a `.` without digits.
fn split_fraction(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    match rest {
        [b'.', after_point @ ..] => {
            let (frac, rest) = split_digits(after_point);
            (!frac.is_empty()).then_some((frac, rest))
        }
        _ => Some((&[], rest)),
    }
}

/// Scans `[+-]?\d+` after an `e`. The value saturates: past ±10^18 every non-zero
/// numeral is far outside any decimal's range, so the exact size no longer matters.
fn scan_exponent(text: &[u8]) -> Option<(i64, &[u8])> {
    let (negative, rest) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let (digits, rest) = split_digits(rest);
    if digits.is_empty() {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |acc, &digit| acc.saturating_mul(10).saturating_add(i64::from(digit - b'0')));
    Some((if negative { -magnitude } else { magnitude }, rest))
}

/// Splits the leading run of ASCII digits off `text`.
fn split_digits(text: &[u8]) -> (&[u8], &[u8]) {
    let count = text.iter().take_while(|byte| byte.is_ascii_digit()).count();
    text.split_at_checked(count).unwrap_or((text, &[]))
}

/// Number of decimal digits of `value` (1 for zero).
fn digit_count(value: u128) -> u32 {
    value.checked_ilog10().map_or(1, |log| log + 1)
}

/// ASCII decimal digits of `value`, most significant first, without leading zeros.
fn digits_of(value: u128) -> impl ExactSizeIterator<Item = u8> + Clone {
    (0..digit_count(value)).rev().map(move |place| b'0' + (value / 10u128.pow(place) % 10) as u8)
}

fn as_i64(length: usize) -> i64 {
    i64::try_from(length).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: i64 = MICROS_PER_SECOND;
    const MAY_FIRST_2024_NOON: i64 = 1_714_564_800 * SECOND;

    fn formatted_timestamp(micros: i64) -> String {
        let mut out = String::new();
        format_rfc3339_micros(micros, &mut out);
        out
    }

    fn formatted_decimal(unscaled: i128, scale: u8) -> String {
        let mut out = String::new();
        format_decimal(unscaled, scale, &mut out);
        out
    }

    fn pow10(exponent: u32) -> i128 {
        10i128.pow(exponent)
    }

    #[test]
    fn valid_rfc3339_timestamps_are_accepted_and_normalised_to_utc() {
        let cases: &[(&str, i64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.999999Z", -1),
            ("2024-05-01T12:00:00Z", MAY_FIRST_2024_NOON),
            ("2024-05-01t12:00:00z", MAY_FIRST_2024_NOON),
            ("2024-05-01T12:00:00.5Z", MAY_FIRST_2024_NOON + 500_000),
            ("2024-05-01T12:00:00.000001Z", MAY_FIRST_2024_NOON + 1),
            ("2024-05-01T12:00:00.123456Z", MAY_FIRST_2024_NOON + 123_456),
            ("2024-05-01T12:00:00.1234560Z", MAY_FIRST_2024_NOON + 123_456),
            ("2024-05-01T12:00:00.12345600Z", MAY_FIRST_2024_NOON + 123_456),
            ("2024-05-01T12:00:00.123456000Z", MAY_FIRST_2024_NOON + 123_456),
            ("2024-05-01T12:00:00.000000000Z", MAY_FIRST_2024_NOON),
            ("2024-05-01T14:00:00+02:00", MAY_FIRST_2024_NOON),
            ("2024-05-01T06:30:00-05:30", MAY_FIRST_2024_NOON),
            ("2024-05-01T12:00:00+00:00", MAY_FIRST_2024_NOON),
            ("2024-05-01T12:00:00-00:00", MAY_FIRST_2024_NOON),
            ("2024-05-01T00:00:00+14:00", 1_714_471_200 * SECOND),
            ("2024-05-01T00:00:00-23:59", 1_714_607_940 * SECOND),
            ("2000-02-29T00:00:00Z", 951_782_400 * SECOND),
            ("2024-02-29T00:00:00Z", 1_709_164_800 * SECOND),
            ("1900-03-01T00:00:00Z", -2_203_891_200 * SECOND),
            ("0000-01-01T00:00:00Z", MIN_TIMESTAMP_MICROS),
            ("9999-12-31T23:59:59.999999Z", MAX_TIMESTAMP_MICROS),
            ("0000-01-01T00:00:00+01:00", MIN_TIMESTAMP_MICROS - 3_600 * SECOND),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_rfc3339_micros(text.as_bytes()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn invalid_rfc3339_timestamps_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("2024-05-01T12:00:00", NO_OFFSET),
            ("2024-05-01T12:00:00.123", NO_OFFSET),
            ("2024-05-01 12:00:00Z", TIMESTAMP_SEPARATOR),
            ("2024-05-01_12:00:00Z", TIMESTAMP_SEPARATOR),
            ("2023-02-29T00:00:00Z", DAY_RANGE),
            ("1900-02-29T00:00:00Z", DAY_RANGE),
            ("2024-04-31T00:00:00Z", DAY_RANGE),
            ("2024-01-00T00:00:00Z", DAY_RANGE),
            ("2024-13-01T00:00:00Z", MONTH_RANGE),
            ("2024-00-01T00:00:00Z", MONTH_RANGE),
            ("2024-05-01T24:00:00Z", HOUR_RANGE),
            ("2024-05-01T12:60:00Z", MINUTE_RANGE),
            ("2024-05-01T23:59:60Z", SECOND_RANGE),
            ("2024-05-01T12:00:00.1234567Z", SUB_MICROSECOND),
            ("2024-05-01T12:00:00.12345601Z", SUB_MICROSECOND),
            ("2024-05-01T12:00:00.123456001Z", SUB_MICROSECOND),
            ("2024-05-01T12:00:00.1234560000Z", LONG_FRACTION),
            ("2024-05-01T12:00:00.Z", EMPTY_FRACTION),
            ("2024-05-01T12:00:00+24:00", OFFSET_HOUR_RANGE),
            ("2024-05-01T12:00:00+01:60", OFFSET_MINUTE_RANGE),
            ("2024-05-01T12:00:00+0100", OFFSET_SHAPE),
            ("2024-05-01T12:00:00+1:00", OFFSET_SHAPE),
            ("2024-05-01T12:00:00UTC", OFFSET_SHAPE),
            ("2024-05-01T12:00:00Z ", OFFSET_SHAPE),
            ("2024-05-01T12:00:00ZZ", OFFSET_SHAPE),
            ("2024-05-01T12:00:00,5Z", OFFSET_SHAPE),
            ("", TIMESTAMP_SHAPE),
            ("2024-05-01", TIMESTAMP_SHAPE),
            ("2024-05-01T12:00Z", TIMESTAMP_SHAPE),
            ("2024-5-01T12:00:00Z", TIMESTAMP_SHAPE),
            ("24-05-01T12:00:00Z", TIMESTAMP_SHAPE),
            ("+2024-05-01T12:00:00Z", TIMESTAMP_SHAPE),
            ("10000-01-01T00:00:00Z", TIMESTAMP_SHAPE),
            ("2024-05-01T1:00:00Z", TIMESTAMP_SHAPE),
            ("2024-05-01T12:0a:00Z", TIMESTAMP_SHAPE),
            (" 2024-05-01T12:00:00Z", TIMESTAMP_SHAPE),
            ("２０２４-05-01T12:00:00Z", TIMESTAMP_SHAPE),
        ];
        for &(text, reason) in cases {
            assert_eq!(parse_rfc3339_micros(text.as_bytes()), Err(reason), "{text}");
        }
    }

    #[test]
    fn epoch_integers_convert_to_micros_within_years_0000_to_9999() {
        let cases: &[(i64, EpochUnit, Result<i64, &str>)] = &[
            (0, EpochUnit::Seconds, Ok(0)),
            (1_714_564_800, EpochUnit::Seconds, Ok(MAY_FIRST_2024_NOON)),
            (1_714_564_800_123, EpochUnit::Millis, Ok(MAY_FIRST_2024_NOON + 123_000)),
            (1_714_564_800_123_456, EpochUnit::Micros, Ok(MAY_FIRST_2024_NOON + 123_456)),
            (1_714_564_800_123_456_000, EpochUnit::Nanos, Ok(MAY_FIRST_2024_NOON + 123_456)),
            (1_714_564_800_123_456_001, EpochUnit::Nanos, Err(SUB_MICROSECOND)),
            (-1_000, EpochUnit::Nanos, Ok(-1)),
            (-1_001, EpochUnit::Nanos, Err(SUB_MICROSECOND)),
            (i64::MIN, EpochUnit::Nanos, Err(SUB_MICROSECOND)),
            (-62_167_219_200, EpochUnit::Seconds, Ok(MIN_TIMESTAMP_MICROS)),
            (-62_167_219_201, EpochUnit::Seconds, Err(TIMESTAMP_RANGE)),
            (253_402_300_799, EpochUnit::Seconds, Ok(MAX_TIMESTAMP_MICROS - 999_999)),
            (253_402_300_800, EpochUnit::Seconds, Err(TIMESTAMP_RANGE)),
            (MAX_TIMESTAMP_MICROS, EpochUnit::Micros, Ok(MAX_TIMESTAMP_MICROS)),
            (MAX_TIMESTAMP_MICROS + 1, EpochUnit::Micros, Err(TIMESTAMP_RANGE)),
            (MIN_TIMESTAMP_MICROS - 1, EpochUnit::Micros, Err(TIMESTAMP_RANGE)),
            (i64::MAX, EpochUnit::Seconds, Err(TIMESTAMP_RANGE)),
            (i64::MIN, EpochUnit::Millis, Err(TIMESTAMP_RANGE)),
            (i64::MAX, EpochUnit::Micros, Err(TIMESTAMP_RANGE)),
        ];
        for &(value, unit, expected) in cases {
            assert_eq!(epoch_to_micros(value, unit), expected, "{value} {unit:?}");
        }
    }

    #[test]
    fn timestamp_range_constants_are_the_first_and_last_instants_of_years_0000_to_9999() {
        assert_eq!(formatted_timestamp(MIN_TIMESTAMP_MICROS), "0000-01-01T00:00:00.000000Z");
        assert_eq!(formatted_timestamp(MAX_TIMESTAMP_MICROS), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn dates_are_parsed_to_days_since_1970_with_the_calendar_checked() {
        let cases: &[(&str, Result<i32, &str>)] = &[
            ("1970-01-01", Ok(0)),
            ("1969-12-31", Ok(-1)),
            ("2000-02-29", Ok(11_016)),
            ("2024-02-29", Ok(19_782)),
            ("2024-05-01", Ok(19_844)),
            ("0000-01-01", Ok(-719_528)),
            ("9999-12-31", Ok(2_932_896)),
            ("1900-02-29", Err(DAY_RANGE)),
            ("2023-02-29", Err(DAY_RANGE)),
            ("2024-06-31", Err(DAY_RANGE)),
            ("2024-12-32", Err(DAY_RANGE)),
            ("2024-13-01", Err(MONTH_RANGE)),
            ("2024-2-29", Err(DATE_SHAPE)),
            ("2024/02/29", Err(DATE_SHAPE)),
            ("20240229", Err(DATE_SHAPE)),
            (" 2024-02-29", Err(DATE_SHAPE)),
            ("2024-02-29T00:00:00Z", Err(DATE_SHAPE)),
            ("-024-02-29", Err(DATE_SHAPE)),
            ("", Err(DATE_SHAPE)),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_date_days(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn timestamps_are_formatted_in_utc_with_six_fractional_digits() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000000Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (MAY_FIRST_2024_NOON + 123_456, "2024-05-01T12:00:00.123456Z"),
            (951_782_400 * SECOND + 1, "2000-02-29T00:00:00.000001Z"),
            (MIN_TIMESTAMP_MICROS - 1, "-0001-12-31T23:59:59.999999Z"),
            (MAX_TIMESTAMP_MICROS + 1, "+10000-01-01T00:00:00.000000Z"),
        ];
        for &(micros, expected) in cases {
            assert_eq!(formatted_timestamp(micros), expected, "{micros}");
        }
        // The extremes of i64 still format without panicking.
        assert!(formatted_timestamp(i64::MIN).starts_with("-2"));
        assert!(formatted_timestamp(i64::MAX).starts_with("+2"));
    }

    #[test]
    fn the_day_cache_changes_no_answer() {
        let texts = [
            "2024-02-29T12:00:00Z",
            "2024-02-29T23:59:59.5+01:00",
            "2023-02-29T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T00:00:00Z",
            "2024-03-01T00:00:00Z",
            "2024-03-01",
            "2024-03-01X00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29T00:00:00Z",
        ];
        let mut cache = DayCache::default();
        for text in texts {
            let cached = parse_rfc3339_micros_cached(text.as_bytes(), &mut cache);
            assert_eq!(cached, parse_rfc3339_micros(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn civil_dates_and_day_numbers_convert_both_ways() {
        let cases: &[(i64, (i64, u32, u32))] = &[
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (11_016, (2000, 2, 29)),
            (19_782, (2024, 2, 29)),
            (-25_508, (1900, 3, 1)),
            (-719_528, (0, 1, 1)),
            (-719_529, (-1, 12, 31)),
            (2_932_896, (9999, 12, 31)),
        ];
        for &(days, (year, month, day)) in cases {
            assert_eq!(civil_from_days(days), (year, month, day), "{days}");
            assert_eq!(days_from_civil(year, month, day), days, "{days}");
        }
    }

    #[test]
    fn calendar_conversions_do_not_panic_at_the_extremes() {
        for days in [i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX] {
            let (year, month, day) = civil_from_days(days);
            assert!((1..=12).contains(&month) && (1..=31).contains(&day));
            assert_eq!(days_from_civil(year, month, day), days);
        }
        for year in [i64::MIN, i64::MAX] {
            for (month, day) in [(1, 1), (2, 29), (12, 31), (0, 0), (u32::MAX, u32::MAX)] {
                let _ = days_from_civil(year, month, day);
            }
        }
    }

    #[test]
    fn decimals_in_range_are_parsed_exactly() {
        use DecimalSource::{JsonNumber, String};
        let nines_38 = "9".repeat(38);
        let zeros_after_point = format!("0.{}", "0".repeat(10_000));
        let one_with_zeros = format!("1.{}", "0".repeat(10_000));
        let smallest_38 = format!("0.{}1", "0".repeat(37));
        let one_then_37_zeros = format!("1{}", "0".repeat(37));
        let cases: Vec<(&str, DecimalSource, u8, u8, i128)> = vec![
            ("0", JsonNumber, 1, 0, 0),
            ("-0", JsonNumber, 1, 0, 0),
            ("-0", String, 1, 0, 0),
            ("0.000", JsonNumber, 1, 0, 0),
            ("0.000", String, 3, 3, 0),
            ("0e999999999", JsonNumber, 1, 0, 0),
            ("-0.0E-99999999999999999999999", JsonNumber, 1, 0, 0),
            ("1", JsonNumber, 1, 0, 1),
            ("+1", String, 1, 0, 1),
            ("007", String, 1, 0, 7),
            ("-00.50", String, 2, 2, -50),
            ("1.2300", String, 5, 2, 123),
            ("1.2300", JsonNumber, 5, 2, 123),
            ("12.34", String, 4, 2, 1_234),
            ("0.5", String, 1, 1, 5),
            ("1.5e2", JsonNumber, 3, 0, 150),
            ("1.5E+2", JsonNumber, 5, 2, 15_000),
            ("15e-1", JsonNumber, 2, 1, 15),
            ("1500e-3", JsonNumber, 2, 1, 15),
            ("0.0015e3", JsonNumber, 3, 1, 15),
            ("-1e-2", JsonNumber, 2, 2, -1),
            ("1e37", JsonNumber, 38, 0, pow10(37)),
            ("99999999999999.9999", String, 18, 4, 999_999_999_999_999_999),
            ("-99999999999999.9999", JsonNumber, 18, 4, -999_999_999_999_999_999),
            (&nines_38, String, 38, 0, pow10(38) - 1),
            (&nines_38, JsonNumber, 38, 0, pow10(38) - 1),
            (&one_then_37_zeros, JsonNumber, 38, 0, pow10(37)),
            (&smallest_38, String, 38, 38, 1),
            (&zeros_after_point, String, 1, 0, 0),
            (&zeros_after_point, JsonNumber, 1, 0, 0),
            (&one_with_zeros, JsonNumber, 1, 0, 1),
        ];
        for (text, source, precision, scale, expected) in cases {
            let parsed = parse_decimal(text.as_bytes(), source, precision, scale);
            assert_eq!(parsed, Ok(expected), "{text} {source:?} ({precision},{scale})");
        }
        let negative_nines = format!("-0.{nines_38}");
        assert_eq!(parse_decimal(negative_nines.as_bytes(), JsonNumber, 38, 38), Ok(-(pow10(38) - 1)));
    }

    #[test]
    fn decimals_out_of_range_or_malformed_are_refused() {
        use DecimalSource::{JsonNumber, String};
        let nines_39 = "9".repeat(39);
        let tiny_38 = format!("0.{}1", "0".repeat(38));
        let cases: Vec<(&str, DecimalSource, u8, u8, &str)> = vec![
            ("100000000000000", String, 18, 4, TOO_MANY_INTEGER_DIGITS),
            ("100000000000000", JsonNumber, 18, 4, TOO_MANY_INTEGER_DIGITS),
            ("10", String, 2, 1, TOO_MANY_INTEGER_DIGITS),
            ("1", String, 1, 1, TOO_MANY_INTEGER_DIGITS),
            (&nines_39, JsonNumber, 38, 0, TOO_MANY_INTEGER_DIGITS),
            ("1e38", JsonNumber, 38, 0, TOO_MANY_INTEGER_DIGITS),
            ("1e999999999", JsonNumber, 38, 0, TOO_MANY_INTEGER_DIGITS),
            ("1e99999999999999999999999999", JsonNumber, 38, 0, TOO_MANY_INTEGER_DIGITS),
            ("1.23", String, 3, 1, TOO_MANY_FRACTION_DIGITS),
            ("0.001", String, 2, 2, TOO_MANY_FRACTION_DIGITS),
            ("1.5", JsonNumber, 5, 0, TOO_MANY_FRACTION_DIGITS),
            ("15e-2", JsonNumber, 5, 1, TOO_MANY_FRACTION_DIGITS),
            (&tiny_38, String, 38, 38, TOO_MANY_FRACTION_DIGITS),
            ("1e-999999999", JsonNumber, 38, 38, TOO_MANY_FRACTION_DIGITS),
            ("1e-99999999999999999999999999", JsonNumber, 38, 38, TOO_MANY_FRACTION_DIGITS),
            ("1.5e2", String, 5, 0, NOT_PLAIN_NUMERAL),
            ("1e2", String, 5, 0, NOT_PLAIN_NUMERAL),
            (".5", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("5.", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("-", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("+", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("+-1", String, 5, 2, NOT_PLAIN_NUMERAL),
            (" 1", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("1 ", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("1,5", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("1_000", String, 5, 0, NOT_PLAIN_NUMERAL),
            ("NaN", String, 5, 2, NOT_PLAIN_NUMERAL),
            ("+1", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            (".5", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("5.", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("-", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("01", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("-01", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("1e", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("1e+", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("1.e2", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("1.2.3", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("0x10", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("Infinity", JsonNumber, 5, 2, NOT_JSON_NUMBER),
            ("1 ", JsonNumber, 5, 2, NOT_JSON_NUMBER),
        ];
        for (text, source, precision, scale, reason) in cases {
            let parsed = parse_decimal(text.as_bytes(), source, precision, scale);
            assert_eq!(parsed, Err(reason), "{text} {source:?} ({precision},{scale})");
        }
    }

    #[test]
    fn decimals_are_formatted_with_exactly_scale_fractional_digits() {
        let cases: &[(i128, u8, &str)] = &[
            (0, 0, "0"),
            (0, 2, "0.00"),
            (7, 0, "7"),
            (50, 2, "0.50"),
            (5, 3, "0.005"),
            (-5, 3, "-0.005"),
            (-123_400, 4, "-12.3400"),
            (999_999_999_999_999_999, 4, "99999999999999.9999"),
            (pow10(38) - 1, 38, "0.99999999999999999999999999999999999999"),
            (i128::MAX, 0, "170141183460469231731687303715884105727"),
            (i128::MIN, 38, "-1.70141183460469231731687303715884105728"),
            (1, 40, "0.0000000000000000000000000000000000000001"),
        ];
        for &(unscaled, scale, expected) in cases {
            assert_eq!(formatted_decimal(unscaled, scale), expected, "{unscaled} {scale}");
        }
        let mut out = String::from("price=");
        format_decimal(150, 2, &mut out);
        assert_eq!(out, "price=1.50", "formatting appends to what is already there");
    }

    #[test]
    fn decimals_compare_exactly_with_json_number_bounds() {
        use Ordering::{Equal, Greater, Less};
        let max_text = i128::MAX.to_string();
        let cases: Vec<(i128, u8, &str, Ordering)> = vec![
            (0, 0, "0", Equal),
            (0, 2, "-0.0e5", Equal),
            (0, 0, "-0.0001", Greater),
            (0, 0, "1e-999999999", Less),
            (1, 0, "-1", Greater),
            (-1, 0, "1", Less),
            (150, 2, "1.5", Equal),
            (150, 2, "1.5e0", Equal),
            (150, 2, "15e-1", Equal),
            (150, 2, "0.015e2", Equal),
            (150, 2, "1.50000000001", Less),
            (150, 2, "1.4999999999", Greater),
            (150, 2, "2", Less),
            (150, 2, "1", Greater),
            (-150, 2, "-1.5", Equal),
            (-150, 2, "-1.4", Less),
            (-150, 2, "-1.6", Greater),
            (10, 1, "1", Equal),
            (100, 0, "1e2", Equal),
            (100, 0, "99.99999", Greater),
            (100, 0, "100.00001", Less),
            (5, 0, "1e999999999", Less),
            (-5, 0, "-1e999999999", Greater),
            (5, 0, "1e-999999999", Greater),
            (1, 38, "1e-38", Equal),
            (1, 38, "1e-39", Greater),
            (i128::MAX, 0, &max_text, Equal),
            (i128::MAX, 0, "1.7e38", Greater),
            (i128::MIN, 0, "-1.8e38", Greater),
        ];
        for (unscaled, scale, bound, expected) in cases {
            let compared = compare_decimal_to_bound(unscaled, scale, bound.as_bytes());
            assert_eq!(compared, Ok(expected), "{unscaled} scale {scale} vs {bound}");
        }
        for bound in ["", "+1", "1.", ".5", "01", "abc", "1e", "\"1\""] {
            let compared = compare_decimal_to_bound(1, 0, bound.as_bytes());
            assert_eq!(compared, Err(BOUND_NOT_JSON_NUMBER), "{bound}");
        }
    }

    #[test]
    fn uuids_are_parsed_from_the_hyphenated_form_in_either_case() {
        let expected =
            [0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0xab];
        for text in [
            "123e4567-e89b-12d3-a456-4266141740ab",
            "123E4567-E89B-12D3-A456-4266141740AB",
            "123e4567-E89b-12D3-a456-4266141740Ab",
        ] {
            assert_eq!(parse_uuid(text.as_bytes()), Ok(expected), "{text}");
        }
        for text in [
            "",
            "123e4567e89b12d3a4564266141740ab",
            "{123e4567-e89b-12d3-a456-4266141740ab}",
            "urn:uuid:123e4567-e89b-12d3-a456-4266141740ab",
            "123e4567-e89b-12d3-a456-4266141740ab\n",
            "123e4567-e89b-12d3-a456-4266141740a",
            "123e456-7e89b-12d3-a456-4266141740ab",
            "123e4567-e89b-12d3-a456_4266141740ab",
            "123g4567-e89b-12d3-a456-4266141740ab",
            "+23e4567-e89b-12d3-a456-4266141740ab",
        ] {
            assert_eq!(parse_uuid(text.as_bytes()), Err(UUID_SHAPE), "{text}");
        }
    }

    proptest! {
        #[test]
        fn formatted_timestamps_parse_back_to_the_same_micros(
            micros in MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS,
        ) {
            let text = formatted_timestamp(micros);
            prop_assert_eq!(parse_rfc3339_micros(text.as_bytes()), Ok(micros));
        }

        #[test]
        fn formatted_decimals_parse_back_to_the_same_value(
            (precision, scale) in (1u8..=38).prop_flat_map(|precision| (Just(precision), 0..=precision)),
            raw in any::<i128>(),
        ) {
            let unscaled = raw % pow10(u32::from(precision));
            let text = formatted_decimal(unscaled, scale);
            let parsed = parse_decimal(text.as_bytes(), DecimalSource::String, precision, scale);
            prop_assert_eq!(parsed, Ok(unscaled), "{}", text);
            let parsed = parse_decimal(text.as_bytes(), DecimalSource::JsonNumber, precision, scale);
            prop_assert_eq!(parsed, Ok(unscaled), "{}", text);
        }

        #[test]
        fn decimals_compare_with_bounds_as_their_unscaled_values_do(
            scale in 0u8..=38,
            value in any::<i128>(),
            bound in any::<i128>(),
        ) {
            let bound_text = formatted_decimal(bound, scale);
            let compared = compare_decimal_to_bound(value, scale, bound_text.as_bytes());
            prop_assert_eq!(compared, Ok(value.cmp(&bound)), "{}", bound_text);
        }

        #[test]
        fn day_numbers_survive_a_trip_through_the_civil_calendar(
            days in -1_000_000_000_000i64..1_000_000_000_000,
        ) {
            let (year, month, day) = civil_from_days(days);
            prop_assert!((1..=12).contains(&month));
            prop_assert!(day >= 1 && day <= days_in_month(year, month));
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }

        #[test]
        fn civil_dates_survive_a_trip_through_day_numbers(
            year in -1_000_000_000i64..1_000_000_000,
            month in 1u32..=12,
            day in 1u32..=31,
        ) {
            let day = day.min(days_in_month(year, month));
            prop_assert_eq!(civil_from_days(days_from_civil(year, month, day)), (year, month, day));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(
            text in proptest::collection::vec(any::<u8>(), 0..64),
            precision in any::<u8>(),
            scale in any::<u8>(),
        ) {
            let _ = parse_decimal(&text, DecimalSource::JsonNumber, precision, scale);
            let _ = parse_decimal(&text, DecimalSource::String, precision, scale);
            let _ = compare_decimal_to_bound(0, scale, &text);
            let _ = parse_rfc3339_micros(&text);
            let _ = parse_date_days(&text);
            let _ = parse_uuid(&text);
        }

        #[test]
        fn decimal_parsing_never_panics_on_number_like_text(
            text in "[-+]?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][-+]?[0-9]{0,25})?",
            precision in 1u8..=38,
            scale_fraction in 0u8..=100,
            value in any::<i128>(),
        ) {
            let scale = (u16::from(precision) * u16::from(scale_fraction) / 100) as u8;
            for source in [DecimalSource::JsonNumber, DecimalSource::String] {
                if let Ok(unscaled) = parse_decimal(text.as_bytes(), source, precision, scale) {
                    prop_assert!(unscaled.unsigned_abs() < 10u128.pow(u32::from(precision)));
                    // An accepted value compares equal to the text it came from.
                    if source == DecimalSource::JsonNumber {
                        let compared = compare_decimal_to_bound(unscaled, scale, text.as_bytes());
                        prop_assert_eq!(compared, Ok(Ordering::Equal));
                    }
                }
            }
            let _ = compare_decimal_to_bound(value, scale, text.as_bytes());
        }
    }
}
