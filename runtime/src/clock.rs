//! Wall-clock time as the daemons show and compare it: seconds since the
//! Unix epoch (what certificate dates and CRLs are checked against) and
//! their UTC rendering for people.

use std::time::SystemTime;

/// Seconds since the Unix epoch now (0 for a clock before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the civil calendar from a
/// day count, as in Howard Hinnant's `civil_from_days`).
pub fn utc_text(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_text() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_text(1_780_272_000), "2026-06-01 00:00:00 UTC");
        assert_eq!(super::utc_text(951_825_599), "2000-02-29 11:59:59 UTC");
        assert_eq!(super::utc_text(-1), "1969-12-31 23:59:59 UTC");
    }
}
