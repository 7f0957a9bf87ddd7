//! Durations as pipelines write them: `250ms`, `90s`, `5m`, `1h30m`, `2h`.
//!
//! A duration is one or more `<digits><unit>` parts, units `h`, `m`, `s`, `ms`, each at
//! most once and largest first; the total must be more than zero. A bare number is refused:
//! "10" could mean seconds or minutes, so the unit must be written.

/// Parses a duration into milliseconds; `Err` is the whole error message.
pub(super) fn parse_duration(text: &str) -> Result<u64, String> {
    let general = || {
        format!("bad duration \"{text}\": use a number and a unit (ms, s, m, h), e.g. \"90s\" or \"1h30m\"")
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad duration \"{text}\": use a unit, e.g. \"{text}s\""));
    }
    // Units largest first: (suffix, milliseconds, rank).
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_rank: Option<usize> = None;
    if rest.is_empty() {
        return Err(general());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(general());
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(general());
        };
        if last_rank.is_some_and(|r| rank <= r) {
            return Err(format!(
                "bad duration \"{text}\": give each unit once, largest first, e.g. \"1h30m\""
            ));
        }
        last_rank = Some(rank);
        let too_long = || format!("bad duration \"{text}\": too long");
        let n: u64 = number.parse().map_err(|_| too_long())?;
        total = n.checked_mul(UNITS[rank].1).and_then(|ms| total.checked_add(ms)).ok_or_else(too_long)?;
        rest = after;
    }
    if total == 0 {
        return Err(format!("bad duration \"{text}\": must be more than zero"));
    }
    Ok(total)
}

/// Milliseconds as the shortest duration text (`900000` → `15m`), for messages.
pub fn format_duration(ms: u64) -> String {
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_duration("0h1s"), Ok(1_000));
        assert_eq!(parse_duration("120m"), Ok(7_200_000));
    }

    #[test]
    fn bad() {
        assert_eq!(parse_duration("10").unwrap_err(), "bad duration \"10\": use a unit, e.g. \"10s\"");
        let general = |t: &str| {
            format!("bad duration \"{t}\": use a number and a unit (ms, s, m, h), e.g. \"90s\" or \"1h30m\"")
        };
        for t in ["", "s", "5x", "1.5h", "-5m", "5 m", "1h 30m", "h1", "5mm", "5M", "1d"] {
            assert_eq!(parse_duration(t).unwrap_err(), general(t), "{t}");
        }
        assert_eq!(parse_duration("0s").unwrap_err(), "bad duration \"0s\": must be more than zero");
        assert_eq!(
            parse_duration("30m1h").unwrap_err(),
            "bad duration \"30m1h\": give each unit once, largest first, e.g. \"1h30m\""
        );
        assert_eq!(
            parse_duration("1m1m").unwrap_err(),
            "bad duration \"1m1m\": give each unit once, largest first, e.g. \"1h30m\""
        );
        assert_eq!(
            parse_duration("99999999999999999999h").unwrap_err(),
            "bad duration \"99999999999999999999h\": too long"
        );
        assert_eq!(
            parse_duration("9999999999999999h").unwrap_err(),
            "bad duration \"9999999999999999h\": too long"
        );
    }

    #[test]
    fn format() {
        assert_eq!(format_duration(900_000), "15m");
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(1_250), "1s250ms");
    }
}
