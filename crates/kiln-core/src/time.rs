//! The UTC wall clock as calendar fields, for run directory names and records (no date crate for
//! a timestamp).

/// A UTC time to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Seconds since midnight.
    pub seconds: u32,
}

impl UtcTime {
    /// Now, from the system clock.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self::from_unix(secs)
    }

    /// The time `secs` seconds after 1970-01-01T00:00:00Z (Howard Hinnant's days-to-civil).
    pub fn from_unix(secs: u64) -> Self {
        let (days, rem) = ((secs / 86_400) as i64, (secs % 86_400) as u32);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self { year, month, day, seconds: rem }
    }

    fn hms(&self) -> (u32, u32, u32) {
        (self.seconds / 3600, self.seconds / 60 % 60, self.seconds % 60)
    }

    /// `YYYYMMDD-HHMMSS`: sorts in time order and is safe in a file name (run directories).
    pub fn stamp(&self) -> String {
        let (h, m, s) = self.hms();
        format!("{:04}{:02}{:02}-{h:02}{m:02}{s:02}", self.year, self.month, self.day)
    }

    /// ISO 8601, `YYYY-MM-DDTHH:MM:SSZ` (records).
    pub fn iso(&self) -> String {
        let (h, m, s) = self.hms();
        format!("{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}Z", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(UtcTime::from_unix(0).iso(), "1970-01-01T00:00:00Z");
        // 2024-02-29 (a leap day) 13:05:09 UTC.
        let t = UtcTime::from_unix(1_709_211_909);
        assert_eq!(t.iso(), "2024-02-29T13:05:09Z");
        assert_eq!(t.stamp(), "20240229-130509");
    }
}
