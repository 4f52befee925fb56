//! Printing the protocol's times (milliseconds since the Unix epoch, UTC) for people and
//! for JSON: one spelling for the CLI, the bridge and the web client. Formatting only; this
//! module reads no clock.

/// `HH:MM:SS` of a time, UTC.
pub fn clock(ms: i64) -> String {
    let secs_of_day = ms.div_euclid(1_000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs_of_day / 3_600, secs_of_day % 3_600 / 60, secs_of_day % 60)
}

/// RFC 3339 UTC time with milliseconds, e.g. `2024-05-01T10:31:05.123Z`.
///
/// The bridge writes one or two of these into every message it delivers, so the years
/// 0 to 9999 are written digit by digit, without the formatting machinery.
pub fn rfc3339(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    if !(0..=9_999).contains(&y) {
        return formatted(ms);
    }
    let secs_of_day = ms.div_euclid(1_000).rem_euclid(86_400);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, y),
        (5, 2, m),
        (8, 2, d),
        (11, 2, secs_of_day / 3_600),
        (14, 2, secs_of_day % 3_600 / 60),
        (17, 2, secs_of_day % 60),
        (20, 3, ms.rem_euclid(1_000)),
    ] {
        let mut v = value;
        for i in (at..at + width).rev() {
            // A digit: `v % 10` is in 0..10.
            out[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
        }
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// [`rfc3339`] through `format!`, for any year.
fn formatted(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}T{}.{:03}Z", clock(ms), ms.rem_euclid(1_000))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(86_399_999), "23:59:59");
        assert_eq!(clock(-1_000), "23:59:59");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    /// The digit-by-digit spelling is the formatted one, around every kind of boundary,
    /// and outside the years it handles the formatted one is used.
    #[test]
    fn the_fast_spelling_is_the_formatted_one() {
        let mut ms = -62_167_219_200_000 - 86_400_000; // the day before 0000-01-01
        while ms < 253_402_300_800_000 + 86_400_000 {
            // The day after 9999-12-31.
            for probe in [ms, ms + 999, ms + 59_999, ms + 86_399_999] {
                assert_eq!(rfc3339(probe), formatted(probe), "{probe}");
            }
            ms += 7_777_777_777;
        }
        assert_eq!(rfc3339(-62_167_219_200_001), "-001-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }
}
