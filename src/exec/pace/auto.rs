//! What `--rate auto`'s controller (`exec::adapt`) publishes into the pace:
//! its safe rate, the ceiling in force and the 429s it took for noise, read
//! by the summary and the timeline; and its cut after push-back, which also
//! clears the window guard of the requests the partner refused.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Guard, Pace};

/// The controller's last published figures, in thousandths where a rate.
pub(super) struct Published {
    /// The controller's safe rate (the rate itself at a fixed rate).
    safe_milli: AtomicU64,
    /// The ceiling in force (0: none).
    ceiling_milli: AtomicU64,
    /// 429s the controller took for noise, so far.
    noise_429: AtomicU64,
}

impl Published {
    /// Nothing published yet: the safe rate is the starting `rate`.
    pub(super) fn new(rate: f64) -> Published {
        Published {
            safe_milli: AtomicU64::new((rate * 1000.0) as u64),
            ceiling_milli: AtomicU64::new(0),
            noise_429: AtomicU64::new(0),
        }
    }
}

impl Pace {
    /// A rate safe to start the next run from: the rate itself at a fixed
    /// rate, the highest rate held without push-back lately with `--rate auto`.
    pub(crate) fn safe_rate(&self) -> f64 {
        self.auto.safe_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The ceiling `--rate auto` holds under, if any.
    pub(crate) fn ceiling(&self) -> Option<f64> {
        match self.auto.ceiling_milli.load(Ordering::Relaxed) {
            0 => None,
            m => Some(m as f64 / 1000.0),
        }
    }

    /// 429s `--rate auto` took for noise so far.
    pub(crate) fn noise_429(&self) -> u64 {
        self.auto.noise_429.load(Ordering::Relaxed)
    }

    /// What the controller now holds: its safe rate and its ceiling.
    pub(crate) fn note_controller(&self, safe: f64, ceiling: Option<f64>) {
        self.auto
            .safe_milli
            .store((safe * 1000.0) as u64, Ordering::Relaxed);
        self.auto.ceiling_milli.store(
            ceiling.map_or(0, |c| ((c * 1000.0) as u64).max(1)),
            Ordering::Relaxed,
        );
    }

    /// The controller took `n` 429s for noise.
    pub(crate) fn note_noise(&self, n: u64) {
        self.auto.noise_429.fetch_add(n, Ordering::Relaxed);
    }

    /// `--rate auto` cut the rate because the partner pushed back: the 429s
    /// of the last second were its limiter refusing, and leave the window
    /// guard (see `Window`).
    pub(crate) fn cut_rate(&self, rate: f64) {
        if let Guard::Window(w) = &self.guard {
            w.forget_refused();
        }
        self.set_rate(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Pacing;
    use super::*;

    #[test]
    fn the_controller_s_figures_are_kept_for_the_reports() {
        let pace = Pace::new(40.0, Pacing::Window);
        assert_eq!(
            (pace.safe_rate(), pace.ceiling(), pace.noise_429()),
            (40.0, None, 0)
        );
        pace.note_controller(32.5, Some(36.0));
        pace.note_noise(2);
        pace.note_noise(3);
        assert_eq!(
            (pace.safe_rate(), pace.ceiling(), pace.noise_429()),
            (32.5, Some(36.0), 5)
        );
        // A ceiling too small for thousandths still reads as one.
        pace.note_controller(0.5, Some(0.0001));
        assert_eq!(pace.ceiling(), Some(0.001));
        pace.note_controller(0.5, None);
        assert_eq!(pace.ceiling(), None);
    }
}
