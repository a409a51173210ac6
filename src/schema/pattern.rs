//! A string field's `pattern`: a compiled regular expression (linear time, the `regex`
//! crate), with a fast path for the most common shape, one ASCII character class repeated
//! over the whole string (`^[0-9a-f]{32}$`, `^[A-Za-z0-9_]+$`, ...): a table lookup per byte
//! instead of a regex search, with the same answers.

use regex::Regex;

#[derive(Clone, Debug)]
pub struct Pattern {
    regex: Regex,
    /// Set when the pattern is `^[class]{n}$`, `{n,m}`, `+` or `*` with an ASCII class.
    class_run: Option<ClassRun>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ClassRun {
    /// Bit `b` of `allowed[b / 64]` is set when byte `b` is in the class (ASCII only).
    allowed: [u64; 2],
    /// The same class as ranges of bytes, when there are few: checked eight bytes at a time.
    ranges: Option<Vec<(u8, u8)>>,
    min: usize,
    max: usize,
}

impl Pattern {
    pub fn new(regex: Regex) -> Pattern {
        let class_run = class_run(regex.as_str());
        Pattern { regex, class_run }
    }

    /// Whether `value` matches, searched as in JSON Schema (anchor it with `^…$`).
    pub fn is_match(&self, value: &str) -> bool {
        match &self.class_run {
            Some(run) => run.matches(value.as_bytes()),
            None => self.regex.is_match(value),
        }
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

/// Beyond this many ranges, a table lookup per byte is cheaper than checking words.
const WORD_RANGES_MAX: usize = 4;

impl ClassRun {
    fn new(allowed: [u64; 2], min: usize, max: usize) -> ClassRun {
        let member = |b: u8| allowed[usize::from(b >> 6)] & (1 << (b & 63)) != 0;
        let mut ranges: Vec<(u8, u8)> = Vec::new();
        for b in (0..128).filter(|&b| member(b)) {
            match ranges.last_mut() {
                Some((_, high)) if *high + 1 == b => *high = b,
                _ => ranges.push((b, b)),
            }
        }
        let ranges = (ranges.len() <= WORD_RANGES_MAX).then_some(ranges);
        ClassRun { allowed, ranges, min, max }
    }

    fn matches(&self, bytes: &[u8]) -> bool {
        // Every byte must be an ASCII member, so the byte count is the character count.
        if !(self.min..=self.max).contains(&bytes.len()) {
            return false;
        }
        let Some(ranges) = &self.ranges else {
            return bytes.iter().all(|&b| self.is_member(b));
        };
        let mut words = bytes.chunks_exact(8);
        words.all(|word| word_in_ranges(u64::from_le_bytes(word.try_into().expect("8 bytes")), ranges))
            && words.remainder().iter().all(|&b| self.is_member(b))
    }

    fn is_member(&self, b: u8) -> bool {
        b < 128 && self.allowed[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

/// Whether each of the eight bytes of `word` is ASCII and within one of `ranges` (ASCII).
fn word_in_ranges(word: u64, ranges: &[(u8, u8)]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    if word & HIGH_BITS != 0 {
        return false;
    }
    // Bytes below 128 plus at most 128 stay below 256: no carry crosses into the next byte.
    // Byte b + (128 - low) sets its high bit iff b >= low; b + (127 - high) iff b > high.
    let inside = ranges.iter().fold(0, |inside, &(low, high)| {
        let at_least_low = word + ONES * u64::from(128 - low);
        let above_high = word + ONES * u64::from(127 - high);
        inside | (at_least_low & !above_high)
    });
    inside & HIGH_BITS == HIGH_BITS
}

/// Recognises `^[class]{n}$`, `^[class]{n,m}$`, `^[class]+$` and `^[class]*$`, where the
/// class is a list of ASCII letters, digits and `_`, and ranges between two of them.
/// Anything else (escapes, negation, flags, other characters) keeps the regex.
fn class_run(pattern: &str) -> Option<ClassRun> {
    let inner = pattern.strip_prefix("^[")?.strip_suffix('$')?;
    let (class, repeat) = inner.split_once(']')?;
    let allowed = class_table(class.as_bytes())?;
    let (min, max) = match repeat {
        "+" => (1, usize::MAX),
        "*" => (0, usize::MAX),
        _ => {
            let counts = repeat.strip_prefix('{')?.strip_suffix('}')?;
            let number = |text: &str| -> Option<usize> {
                (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
            };
            match counts.split_once(',') {
                None => {
                    let n = number(counts)?;
                    (n, n)
                }
                Some((low, high)) => (number(low)?, number(high)?),
            }
        }
    };
    (min <= max).then(|| ClassRun::new(allowed, min, max))
}

fn class_table(class: &[u8]) -> Option<[u64; 2]> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut allowed = [0u64; 2];
    let mut add = |b: u8| allowed[usize::from(b >> 6)] |= 1 << (b & 63);
    let mut i = 0;
    if class.is_empty() {
        return None;
    }
    while i < class.len() {
        let first = class[i];
        if !plain(first) {
            return None;
        }
        if class.get(i + 1) == Some(&b'-') {
            let last = *class.get(i + 2)?;
            if !plain(last) || last < first {
                return None;
            }
            (first..=last).for_each(&mut add);
            i += 3;
        } else {
            add(first);
            i += 1;
        }
    }
    Some(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::new(Regex::new(text).unwrap())
    }

    #[test]
    fn simple_classes_take_the_fast_path_and_others_do_not() {
        for text in ["^[0-9a-f]{32}$", "^[A-Za-z0-9_]+$", "^[a-z]*$", "^[0-9]{2,4}$", "^[x]{0}$"] {
            assert!(pattern(text).class_run.is_some(), "{text}");
        }
        let ranges = |text: &str| pattern(text).class_run.unwrap().ranges;
        assert_eq!(ranges("^[0-9a-f]{32}$"), Some(vec![(b'0', b'9'), (b'a', b'f')]));
        assert_eq!(ranges("^[a-cb-d_]+$"), Some(vec![(b'_', b'_'), (b'a', b'd')]));
        assert_eq!(ranges("^[acegikmoqsuwy]+$"), None, "many ranges: a table lookup per byte");
        for text in [
            "[0-9a-f]{32}",
            "^[0-9a-f]{32}",
            "^[^a-z]+$",
            "^[a-z\\d]+$",
            "^[a-z]{3}x$",
            "(?i)^[a-f]+$",
            "^[a-z-]+$",
            "^[z-a]+$",
            "^[a-z]{4,2}$",
            "^[é]+$",
            "^[a-z]{+}$",
        ] {
            assert!(Regex::new(text).is_err() || pattern(text).class_run.is_none(), "{text}");
        }
    }

    #[test]
    fn the_fast_path_answers_as_the_regex_does() {
        let patterns = [
            "^[0-9a-f]{32}$",
            "^[A-Za-z0-9_]+$",
            "^[a-c]*$",
            "^[0-9]{2,4}$",
            "^[acegikmoqsuwy]+$",
            "^[0-9A-F_z]{1,40}$",
        ];
        let mut values = vec![
            "",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "abc",
            "abcd",
            "a_b",
            "12",
            "12345",
            "é",
            "aé",
            "ab\n",
            "\u{0}",
        ];
        // Every byte at every place of a word and of the tail, around each range's ends.
        let edges = [
            b'/', b'0', b'9', b':', b'@', b'A', b'F', b'G', b'Z', b'[', b'^', b'_', b'`', b'a', b'c', b'd',
            b'f', b'g', b'y', b'z', b'{', 0x7f, 0x80, 0xff, 0,
        ];
        let mut owned = Vec::new();
        for length in [8, 11, 32] {
            for at in 0..length {
                for &edge in &edges {
                    let mut bytes = vec![b'a'; length];
                    bytes[at] = edge;
                    owned.push(String::from_utf8_lossy(&bytes).into_owned());
                    bytes.fill(b'7');
                    bytes[at] = edge;
                    owned.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        values.extend(owned.iter().map(String::as_str));
        for text in patterns {
            let fast = pattern(text);
            let regex = Regex::new(text).unwrap();
            for &value in &values {
                assert_eq!(fast.is_match(value), regex.is_match(value), "{text} on {value:?}");
            }
        }
    }
}
