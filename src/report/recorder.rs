//! The recorder: the only writer of reports during a run.
