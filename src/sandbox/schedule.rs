//! `--rate-limit-schedule`: a rate limit that changes at fixed offsets from the
//! sandbox's first users request, so a client's rate controller can be tested
//! against a partner whose limit drops or rises mid-run (issue #19).
//!
//! A change keeps what the limiter has already booked (see
//! `RateLimiter::set_per_second`): after a drop from 40 to 13 under the sliding
//! window, the 40 arrivals of the last second still count, and a client has to
//! wait them out. That is the strict reading, as for the limit itself.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::SandboxError;

/// One change of a [`RateSchedule`]: from `at` after the first users request on,
/// the limit is `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleStep {
    /// Offset from the first users request (restarted by `POST /_sandbox/reset`).
    pub at: Duration,
    /// The rate limit from then on (at least 1).
    pub per_second: u32,
}

/// Limit changes at strictly increasing offsets, at least one; built only by
/// [`RateSchedule::new`] or parsed from `30s:13,90s:40`, so it cannot be built wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateSchedule(Vec<ScheduleStep>);

impl RateSchedule {
    /// A schedule of `steps`, which must be non-empty, at strictly increasing
    /// offsets, with limits of at least 1.
    pub(crate) fn new(steps: Vec<ScheduleStep>) -> Result<RateSchedule, SandboxError> {
        let bad = |reason: String| SandboxError::Schedule {
            spec: RateSchedule(steps.clone()).to_string(),
            reason,
        };
        if steps.is_empty() {
            return Err(bad("no step".to_owned()));
        }
        if let Some(s) = steps.iter().find(|s| s.per_second == 0) {
            return Err(bad(format!(
                "the limit at {} is 0; it must be at least 1",
                humantime::format_duration(s.at)
            )));
        }
        if let Some(w) = steps.windows(2).find(|w| w[1].at <= w[0].at) {
            return Err(bad(format!(
                "offsets must increase, but {} follows {}",
                humantime::format_duration(w[1].at),
                humantime::format_duration(w[0].at)
            )));
        }
        Ok(RateSchedule(steps))
    }

    /// The steps, in order of their offsets.
    pub fn steps(&self) -> &[ScheduleStep] {
        &self.0
    }
}

impl fmt::Display for RateSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", humantime::format_duration(s.at), s.per_second)?;
        }
        Ok(())
    }
}

impl FromStr for RateSchedule {
    type Err = SandboxError;

    /// `OFFSET:LIMIT[,OFFSET:LIMIT...]`, offsets as durations (`30s`, `1m 30s`,
    /// `500ms`), e.g. `30s:13,90s:40`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| SandboxError::Schedule {
            spec: spec.to_owned(),
            reason,
        };
        let mut steps = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let (at, limit) = part
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("'{part}' is not OFFSET:LIMIT (e.g. 30s:13)")))?;
            let at = humantime::parse_duration(at.trim())
                .map_err(|e| bad(format!("offset '{}': {e}", at.trim())))?;
            let per_second = limit.trim().parse::<u32>().map_err(|_| {
                bad(format!(
                    "limit '{}' is not a number of requests per second",
                    limit.trim()
                ))
            })?;
            steps.push(ScheduleStep { at, per_second });
        }
        RateSchedule::new(steps).map_err(|e| match e {
            SandboxError::Schedule { reason, .. } => bad(reason),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(secs: u64, per_second: u32) -> ScheduleStep {
        ScheduleStep {
            at: Duration::from_secs(secs),
            per_second,
        }
    }

    #[test]
    fn parses_offsets_and_limits() {
        let s: RateSchedule = "30s:13,90s:40".parse().unwrap();
        assert_eq!(s.steps(), [step(30, 13), step(90, 40)]);
        let s: RateSchedule = " 500ms : 7 , 1m 30s:80 ".parse().unwrap();
        assert_eq!(
            s.steps(),
            [
                ScheduleStep {
                    at: Duration::from_millis(500),
                    per_second: 7
                },
                step(90, 80)
            ]
        );
        // An offset of 0 is the first request itself.
        assert_eq!(
            "0s:5".parse::<RateSchedule>().unwrap().steps(),
            [step(0, 5)]
        );
    }

    #[test]
    fn displays_as_it_parses() {
        let s: RateSchedule = "30s:13,90s:40".parse().unwrap();
        assert_eq!(s.to_string(), "30s:13,1m 30s:40");
        assert_eq!(s.to_string().parse::<RateSchedule>().unwrap(), s);
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (spec, says) in [
            ("", "not OFFSET:LIMIT"),
            ("30s", "not OFFSET:LIMIT"),
            ("30s:", "limit ''"),
            ("soon:13", "offset 'soon'"),
            ("30:13", "offset '30'"),
            ("30s:-1", "limit '-1'"),
            ("30s:1.5", "limit '1.5'"),
            ("30s:0", "must be at least 1"),
            (
                "30s:13,30s:40",
                "offsets must increase, but 30s follows 30s",
            ),
            (
                "90s:13,30s:40",
                "offsets must increase, but 30s follows 1m 30s",
            ),
            ("30s:13,,90s:40", "not OFFSET:LIMIT"),
        ] {
            let err = spec.parse::<RateSchedule>().unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, SandboxError::Schedule { .. }),
                "{spec}: {err:?}"
            );
            assert!(shown.contains(says), "{spec}: {shown}");
            assert!(shown.contains(&format!("'{spec}'")), "{spec}: {shown}");
        }
        assert!(RateSchedule::new(Vec::new()).is_err());
        assert!(RateSchedule::new(vec![step(2, 5), step(1, 6)]).is_err());
    }
}
