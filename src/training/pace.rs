//! How many training steps one submission records: about [`SUBMISSION_SECONDS`] of them on this adapter, as
//! measured while it trains, and never past the next log point.
//!
//! Ctrl-C is checked between submissions, and a submission, once made, runs to its end. A fixed count of steps
//! per submission (the log interval, 50 by default) made Ctrl-C wait up to 17 s on lavapipe, where a step of the
//! default model takes about 0.35 s on a 2-core machine, and a whole epoch where the epoch was shorter than the
//! log interval. Sized by time, the host is never more than two submissions (about half a second, or two steps
//! where one step alone takes longer) ahead of what the GPU has finished. On a GPU, where a step takes
//! microseconds, a submission still holds every step up to the next log point, as before.

/// The GPU time one submission should hold. The trainer keeps one more submission queued behind the one running
/// (so the GPU never waits for the host), so Ctrl-C waits at most about twice this, or two steps where a step
/// alone takes longer.
pub const SUBMISSION_SECONDS: f64 = 0.25;

/// The submissions' size, from the measured time of the last one.
#[derive(Clone, Debug)]
pub struct Pace {
    /// The GPU time one submission should hold.
    seconds: f64,
    /// Seconds per step of the last submission that completed after the first (a warm-up: a driver may finish
    /// building pipelines on first use). `None` until then: submissions of one step.
    per_step: Option<f64>,
    /// Whether the first submission (the warm-up) has completed.
    warm: bool,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::new(SUBMISSION_SECONDS)
    }
}

impl Pace {
    /// Submissions of about `seconds` of steps each.
    pub fn new(seconds: f64) -> Pace {
        Pace {
            seconds,
            per_step: None,
            warm: false,
        }
    }

    /// The pace a run uses: [`SUBMISSION_SECONDS`], or in the tests the seconds the `submission-seconds:<s>`
    /// fault gives (0: one step per submission on any adapter, as on a slow one; see [`crate::fault`]).
    pub fn for_run() -> Pace {
        let seconds = crate::fault::values("submission-seconds:")
            .find_map(|s| s.parse::<f64>().ok())
            .unwrap_or(SUBMISSION_SECONDS);
        Pace::new(seconds)
    }

    /// Steps for the next submission, at most `most` (the steps left before the next log point): as many as
    /// take about the submission's seconds at the last measured rate, and at least one.
    pub fn steps(&self, most: u32) -> u32 {
        let most = most.max(1);
        match self.per_step {
            _ if self.seconds <= 0.0 => 1,
            None => 1,
            Some(t) if t > 0.0 => (self.seconds / t).floor().clamp(1.0, most as f64) as u32,
            Some(_) => most,
        }
    }

    /// A submission of `steps` steps took `seconds` on the GPU (from when it could start, the later of its
    /// submission and the end of the one before, to its end).
    pub fn completed(&mut self, steps: u32, seconds: f64) {
        if !self.warm {
            self.warm = true;
            return;
        }
        self.per_step = Some(seconds / steps.max(1) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    #[test]
    fn submissions_hold_about_their_seconds_of_steps() {
        let mut pace = Pace::new(0.25);
        // Until a submission after the warm-up has been timed: one step.
        assert_eq!(pace.steps(50), 1);
        pace.completed(1, 3.0);
        assert_eq!(pace.steps(50), 1, "the warm-up is not a measurement");
        // lavapipe on 2 cores: 0.35 s a step, longer than the budget: one step a submission.
        pace.completed(1, 0.35);
        assert_eq!(pace.steps(50), 1);
        // 10 ms a step: 25 steps.
        pace.completed(4, 0.04);
        assert_eq!(pace.steps(50), 25);
        // Never past the next log point, never none.
        assert_eq!(pace.steps(7), 7);
        assert_eq!(pace.steps(0), 1);
        // A GPU's step of 200 µs: every step to the log point.
        pace.completed(25, 0.005);
        assert_eq!(pace.steps(50), 50);
        // A step timed at zero (a coarse clock): as many as allowed.
        pace.completed(50, 0.0);
        assert_eq!(pace.steps(50), 50);
        // Zero seconds (the tests' `submission-seconds:0`): one step.
        let mut none = Pace::new(0.0);
        none.completed(1, 1.0);
        none.completed(1, 1e-4);
        assert_eq!(none.steps(50), 1);
    }
}
