//! The exit codes of the contract, in one place. A cron wrapper must tell
//! "fix the data" from "just run it again": every command ends in an [`Exit`],
//! decided from the run's counts (`report::summary::exit`) or from the error
//! that stopped it (`Error::exit`), and `main` turns it into the process's code.

/// How a command ended, as its exit code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: every row created, exists, duplicate, unchanged or changed (or
    /// valid, in a dry run); a command other than `run` that did its job.
    Success,
    /// 1: finished; some rows invalid or rejected: the data needs fixing.
    FixData,
    /// 75 (EX_TEMPFAIL): finished; some rows failed transiently and none
    /// needs fixing: rerun failures.csv later.
    RetryLater,
    /// 2: usage, configuration or unreadable input; nothing sent.
    Usage,
    /// 3: fatal during the run (credentials refused, target unreachable,
    /// circuit breaker); reports flushed.
    Fatal,
    /// 130: interrupted (signal or time budget); reports flushed, resumable.
    Interrupted,
}

impl Exit {
    /// Every exit, for tables and tests.
    const ALL: [Exit; 6] = [
        Exit::Success,
        Exit::FixData,
        Exit::RetryLater,
        Exit::Usage,
        Exit::Fatal,
        Exit::Interrupted,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::FixData => 1,
            Exit::Usage => 2,
            Exit::Fatal => 3,
            Exit::RetryLater => 75,
            Exit::Interrupted => 130,
        }
    }

    /// The exit a code stands for (as read back from summary.json).
    pub(crate) fn from_code(code: u8) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The next step this exit implies, as the terminal prints it after a run.
    pub(crate) fn hint(self) -> Option<&'static str> {
        match self {
            Exit::FixData => Some(
                "some rows need fixing: see failures.csv (error_message), fix them and run it again",
            ),
            Exit::RetryLater => Some("some rows failed transiently: run failures.csv again later"),
            Exit::Interrupted => {
                Some("interrupted: run again with --resume and the same --out to continue")
            }
            Exit::Success | Exit::Usage | Exit::Fatal => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract_and_read_back() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 75, 2, 3, 130]);
        for e in Exit::ALL {
            assert_eq!(Exit::from_code(e.code()), Some(e));
        }
        assert_eq!(Exit::from_code(4), None);
    }
}
