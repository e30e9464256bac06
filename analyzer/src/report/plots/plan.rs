//! A figure as plain data: panels with their axis ranges and tick labels, the series drawn
//! with their points, the legend and the caption. Planning is pure, so tests check what a
//! reader will see (ranges, tick labels, series) without decoding pixels; drawing and the
//! figure's data file consume the same plan.

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// log10 of the value; every value drawn on it is positive.
    Log10,
}

/// How an axis' tick labels are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    /// Whole numbers only (steps): never "2.0".
    Integer,
    /// As many decimals as the tick spacing needs, the same for every tick.
    Decimal,
    /// Powers of ten (and 2× and 5× within one or two decades) on a log axis.
    Log,
    /// The values given (the learning rates of the runs), in their shortest form.
    Given,
}

/// One tick mark and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub label: String,
}

/// One axis: its title, value range (in data units, also for log axes), scale and ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    pub kind: TickKind,
    pub ticks: Vec<Tick>,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Line,
    Points,
    /// Hollow circles (a second kind of point of the same run).
    OpenPoints,
    LinePoints,
    /// A grey horizontal line (a threshold or zero), drawn across the panel.
    Reference,
}

/// One series: a name (the `series` column of the figure's data file), a colour index into
/// the palette, a mark and its points in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: usize,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Identifies the panel in the figure's data file (the `panel` column).
    pub id: String,
    pub title: Option<String>,
    pub x: Axis,
    pub y: Axis,
    /// Only series with at least one point.
    pub series: Vec<Series>,
    /// Text written inside the panel (lines split at '\n'), e.g. why it looks empty.
    pub note: Option<String>,
}

/// One legend entry; the legend is drawn above the panels, never over data.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub color: usize,
    pub mark: Mark,
}

/// A whole figure.
#[derive(Debug, Clone, PartialEq)]
pub struct FigurePlan {
    /// File name without extension: `<stem>.png`, `<stem>.svg`, `<stem>.parquet`.
    pub stem: String,
    pub title: String,
    /// What the losses were evaluated on (set, BatchNorm policy) and how points were formed.
    pub subtitle: String,
    /// The report's caption.
    pub caption: String,
    /// Pixels (width, height).
    pub size: (u32, u32),
    /// Rows and columns of panels; `panels` are in row-major order.
    pub grid: (usize, usize),
    pub panels: Vec<Panel>,
    pub legend: Vec<LegendEntry>,
}

impl Axis {
    /// A linear axis over `values` with 5% margins; a single value gets a range around it.
    pub fn linear(label: &str, values: &[f64], kind: TickKind, max_ticks: usize) -> Axis {
        let (lo, hi) = finite_range(values).unwrap_or((0.0, 1.0));
        let (lo, hi) = if hi > lo {
            let pad = 0.05 * (hi - lo);
            (lo - pad, hi + pad)
        } else {
            let half = if kind == TickKind::Integer {
                1.0_f64.max(lo.abs() * 0.1)
            } else {
                0.5_f64.max(lo.abs() * 0.1)
            };
            (lo - half, hi + half)
        };
        Axis::linear_exact(label, lo, hi, kind, max_ticks)
    }

    /// A linear axis over exactly `lo..hi`.
    pub fn linear_exact(label: &str, lo: f64, hi: f64, kind: TickKind, max_ticks: usize) -> Axis {
        Axis {
            label: label.to_string(),
            lo,
            hi,
            scale: Scale::Linear,
            kind,
            ticks: linear_ticks(lo, hi, kind == TickKind::Integer, max_ticks),
        }
    }

    /// A log axis over positive `values` (others ignored), with margins of 5% of the decades
    /// spanned (at least ×1.25 each side).
    pub fn log(label: &str, values: &[f64]) -> Axis {
        let pos: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
        let (lo, hi) = finite_range(&pos).unwrap_or((1.0, 10.0));
        let f = (hi / lo).powf(0.05).max(1.25);
        let (lo, hi) = (lo / f, hi * f);
        Axis {
            label: label.to_string(),
            lo,
            hi,
            scale: Scale::Log10,
            kind: TickKind::Log,
            ticks: log_ticks(lo, hi),
        }
    }

    /// A log axis with ticks at the given values (the learning rates of a comparison).
    pub fn log_given(label: &str, values: &[f64]) -> Axis {
        let mut given: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect();
        given.sort_by(f64::total_cmp);
        given.dedup();
        let mut axis = Axis::log(label, &given);
        axis.kind = TickKind::Given;
        // Neighbouring labels closer than ×1.15 would collide: keep the first of each cluster.
        let mut ticks: Vec<Tick> = Vec::new();
        for v in given {
            if ticks.last().is_none_or(|t| v / t.value >= 1.15) {
                ticks.push(Tick {
                    value: v,
                    label: format!("{v}"),
                });
            }
        }
        axis.ticks = ticks;
        axis
    }

    /// Log when every value is positive and they span at least a factor `min_ratio`, else
    /// linear: a log axis is only worth it over decades, and cannot show 0.
    pub fn auto(label: &str, values: &[f64], min_ratio: f64, max_ticks: usize) -> Axis {
        match finite_range(values) {
            Some((lo, hi)) if lo > 0.0 && hi / lo >= min_ratio => Axis::log(label, values),
            _ => Axis::linear(label, values, TickKind::Decimal, max_ticks),
        }
    }

    /// Whether `v` lies on the axis (within a rounding error).
    pub fn contains(&self, v: f64) -> bool {
        let eps = 1e-9 * (self.hi - self.lo).abs().max(f64::MIN_POSITIVE);
        v.is_finite()
            && v >= self.lo - eps
            && v <= self.hi + eps
            && (self.scale == Scale::Linear || v > 0.0)
    }

    /// The position of `v` in drawing coordinates (log10 on a log axis).
    pub fn map(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
        }
    }
}

fn finite_range(values: &[f64]) -> Option<(f64, f64)> {
    let mut it = values.iter().copied().filter(|v| v.is_finite());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// Ticks at multiples of 1, 2 or 5 × 10^k, at most `max_ticks` of them (at least 2 when the
/// range allows), labelled with the decimals the spacing needs.
pub fn linear_ticks(lo: f64, hi: f64, integer: bool, max_ticks: usize) -> Vec<Tick> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return Vec::new();
    }
    let raw = span / max_ticks.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-12))
        .unwrap_or(10.0 * mag);
    if integer {
        step = step.max(1.0).round();
    }
    let decimals = if integer { 0 } else { decimals_for(step) };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let value = i as f64 * step;
            Tick {
                value,
                label: decimal_label(value, decimals),
            }
        })
        .collect()
}

/// Decimals that show the leading digit of `v` (0.1 → 1, 0.05 → 2, 200 → 0).
fn decimals_for(v: f64) -> usize {
    (-(v.abs().log10() + 1e-9).floor()).max(0.0) as usize
}

/// A number with `decimals` decimals; beyond 5 decimals, as m×10⁻ᵏ. Never "-0".
fn decimal_label(v: f64, decimals: usize) -> String {
    if decimals > 5 {
        return if v == 0.0 {
            "0".to_string()
        } else {
            power_label(v)
        };
    }
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s.replace('-', "−")
    }
}

/// m×10ᵏ with Unicode superscripts (1×10ᵏ written as 10ᵏ).
fn power_label(v: f64) -> String {
    // The small offset keeps 10⁻⁷ from reading as 10×10⁻⁸ after rounding.
    let k = (v.abs().log10() + 1e-9).floor() as i32;
    let m = v / 10f64.powi(k);
    let m_s = format!("{:.1}", m);
    let m_s = m_s
        .trim_end_matches('0')
        .trim_end_matches('.')
        .replace('-', "−");
    let sup: String = k
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹']
                [d.to_digit(10).unwrap_or(0) as usize],
        })
        .collect();
    if m_s == "1" {
        format!("10{sup}")
    } else {
        format!("{m_s}×10{sup}")
    }
}

/// Ticks of a log axis: every power of ten in range (every other one past 8 decades), with
/// 2× and 5× added when fewer than three powers fall in range. Never 8× or 9×, whose labels
/// collide with the next power.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<Tick> {
    if lo.is_nan() || hi.is_nan() || lo <= 0.0 || hi <= lo {
        return Vec::new();
    }
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let powers: Vec<i32> = (k0..=k1)
        .filter(|k| (lo..=hi).contains(&10f64.powi(*k)))
        .collect();
    let mantissas: &[f64] = if powers.len() >= 3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let every = if powers.len() > 8 { 2 } else { 1 };
    let mut ticks = Vec::new();
    for k in k0..=k1 {
        if every == 2 && k.rem_euclid(2) != 0 {
            continue;
        }
        for m in mantissas {
            let value = m * 10f64.powi(k);
            if (lo..=hi).contains(&value) {
                ticks.push(Tick {
                    value,
                    label: log_label(value),
                });
            }
        }
    }
    ticks
}

/// 0.002 or 200 when short, 2×10⁻⁵ otherwise.
fn log_label(v: f64) -> String {
    if (0.99e-3..1e5).contains(&v) {
        decimal_label(v, decimals_for(v))
    } else {
        power_label(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(t: &[Tick]) -> Vec<&str> {
        t.iter().map(|t| t.label.as_str()).collect()
    }

    #[test]
    fn linear_ticks_use_the_decimals_their_spacing_needs() {
        assert_eq!(
            labels(&linear_ticks(-0.05, 1.05, false, 6)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(
            labels(&linear_ticks(0.0, 1604.0, true, 6)),
            ["0", "500", "1000", "1500"]
        );
        // Integer axes never get fractional ticks, even over two steps.
        assert_eq!(labels(&linear_ticks(1.0, 3.0, true, 8)), ["1", "2", "3"]);
        assert_eq!(
            labels(&linear_ticks(-1.05, 1.05, false, 5)),
            ["−1.0", "−0.5", "0.0", "0.5", "1.0"]
        );
        let tiny = linear_ticks(0.0, 4e-7, false, 4);
        assert!(labels(&tiny).iter().all(|l| !l.contains('e')), "{tiny:?}");
        assert_eq!(labels(&tiny[..3]), ["0", "10⁻⁷", "2×10⁻⁷"]);
    }

    #[test]
    fn log_ticks_are_powers_and_never_collide() {
        assert_eq!(
            labels(&log_ticks(2e-5, 0.3)),
            ["10⁻⁴", "0.001", "0.01", "0.1"]
        );
        assert_eq!(labels(&log_ticks(0.03, 0.5)), ["0.05", "0.1", "0.2", "0.5"]);
        assert!(log_ticks(1e-12, 1.0).len() <= 7);
    }

    #[test]
    fn auto_axis_is_log_only_over_decades_of_positive_values() {
        assert_eq!(Axis::auto("h", &[1e-4, 0.1], 30.0, 6).scale, Scale::Log10);
        assert_eq!(Axis::auto("h", &[0.0, 0.1], 30.0, 6).scale, Scale::Linear);
        assert_eq!(Axis::auto("h", &[0.05, 0.1], 30.0, 6).scale, Scale::Linear);
        let one = Axis::linear("x", &[49.0], TickKind::Integer, 6);
        assert!(
            one.lo < 49.0 && one.hi > 49.0 && one.ticks.len() >= 2,
            "{one:?}"
        );
    }
}
