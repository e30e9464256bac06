//! The progress that `sgdwalk-record` and `sgdwalk-analyze` show on stderr: a bar on a
//! terminal, and a plain line every [`PLAIN_LINE_EVERY`] otherwise (a log file, a batch job),
//! so a long run's log never stays silent for minutes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// How often a plain progress line is printed when stderr is not a terminal.
pub const PLAIN_LINE_EVERY: Duration = Duration::from_secs(30);

/// A bar over `len` items named `unit` (e.g. "steps"), shown on stderr when `show` is set and
/// hidden otherwise (a hidden bar still counts, so callers need no second code path).
pub fn progress_bar(show: bool, len: u64, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        )) {
            bar.set_style(style.progress_chars("=> "));
        }
        return bar;
    }
    plain_lines(
        len,
        unit,
        PlainLines::new(Box::new(std::io::stderr()), PLAIN_LINE_EVERY),
    )
}

/// A bar that prints through `lines`, redrawn every second (`lines` keeps one line per
/// interval) so that a slow item still gets its line.
fn plain_lines(len: u64, unit: &str, lines: PlainLines) -> ProgressBar {
    let every = lines.every;
    let bar =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::term_like(Box::new(lines)));
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "progress: {{pos}}/{{len}} {unit} ({{percent}}%), {{elapsed}} elapsed, eta {{eta}} {{msg}}"
    )) {
        bar.set_style(style);
    }
    if !every.is_zero() {
        bar.enable_steady_tick(Duration::from_secs(1));
    }
    bar
}

/// A "terminal" that turns the bar's redraws into at most one plain line per interval.
struct PlainLines {
    every: Duration,
    out: Mutex<Box<dyn Write + Send>>,
    /// The text of the redraw in progress, and when a line was last printed.
    state: Mutex<(String, Option<Instant>)>,
}

impl std::fmt::Debug for PlainLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainLines")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl PlainLines {
    fn new(out: Box<dyn Write + Send>, every: Duration) -> Self {
        PlainLines {
            every,
            out: Mutex::new(out),
            state: Mutex::new((String::new(), None)),
        }
    }
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        // Wide enough that the template is never cut.
        400
    }

    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if let Ok(mut state) = self.state.lock() {
            state.0.push_str(s);
        }
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        if let Ok(mut state) = self.state.lock() {
            state.0.clear();
        }
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        let text = std::mem::take(&mut state.0);
        let text = text.trim();
        let due = state.1.is_none_or(|t| t.elapsed() >= self.every);
        if text.is_empty() || !due {
            return Ok(());
        }
        state.1 = Some(Instant::now());
        let Ok(mut out) = self.out.lock() else {
            return Ok(());
        };
        writeln!(out, "{text}")?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hidden_bar_counts() {
        let bar = progress_bar(false, 10, "steps");
        bar.set_position(3);
        assert_eq!((bar.position(), bar.length()), (3, Some(10)));
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(out: &Shared) -> Vec<String> {
        String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn off_a_terminal_progress_is_plain_lines_at_most_once_per_interval() {
        let out = Shared::default();
        let bar = plain_lines(
            10,
            "steps",
            PlainLines::new(Box::new(out.clone()), Duration::ZERO),
        );
        bar.set_message("steps 0..5");
        for _ in 0..3 {
            bar.inc(1);
            bar.tick();
        }
        let got = lines(&out);
        assert!(!got.is_empty(), "no line printed");
        for l in &got {
            assert!(l.starts_with("progress: "), "{l:?}");
            assert!(
                !l.contains('\u{1b}') && !l.contains('\r'),
                "escape codes in {l:?}"
            );
        }
        assert!(got.last().unwrap().contains("3/10 steps (30%)"), "{got:?}");
        // A long interval: the first redraw prints, the next ones within it do not.
        let quiet = Shared::default();
        let bar = plain_lines(
            10,
            "steps",
            PlainLines::new(Box::new(quiet.clone()), Duration::from_secs(3600)),
        );
        for _ in 0..5 {
            bar.inc(1);
        }
        // The steady redraw (every second) prints the first line, then nothing for an hour.
        // Its first tick may draw before or after the increments (the ticker thread starts at
        // once), so the one line holds 0 or 5 steps.
        std::thread::sleep(Duration::from_millis(2500));
        let got = lines(&quiet);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("0/10 steps") || got[0].contains("5/10 steps"),
            "{got:?}"
        );
    }
}
