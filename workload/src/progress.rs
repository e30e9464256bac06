//! The progress bar that `sgdwalk-record` and `sgdwalk-analyze` draw on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items named `unit` (e.g. "steps"), drawn on stderr when `show` is set and
/// hidden otherwise (a hidden bar still counts, so callers need no second code path).
pub fn progress_bar(show: bool, len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bar_counts() {
        let bar = progress_bar(false, 10, "steps");
        bar.set_position(3);
        assert_eq!((bar.position(), bar.length()), (3, Some(10)));
    }
}
