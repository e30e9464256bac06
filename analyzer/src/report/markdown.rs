//! `report.md`: the runs, the verdicts, each assessed claim with its evidence, the per-epoch
//! numbers, the figures and the definitions. One renderer over [`Assessed`] claims.

use std::fmt::Write as _;

use super::claims::{Assessed, final_lambda};
use super::load::{EpochStats, RunData};

/// A number with `digits` decimals; `NaN`, or `–` when absent.
pub(super) fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) => format!("{v:.digits$}"),
        None => "–".into(),
    }
}

/// A share as a percentage with one decimal; `NaN`, or `–` when absent.
pub(super) fn pct(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) => format!("{:.1}%", 100.0 * v),
        None => "–".into(),
    }
}

/// The Markdown report: `figures` are (file, caption) of the figures drawn beside it.
pub fn markdown(
    runs: &[RunData],
    claims: &[Assessed],
    preamble: Option<&str>,
    figures: &[(String, String)],
    barrier_threshold: f64,
) -> String {
    let mut md = String::from("# sgdwalk report: *A Walk with SGD*, measured\n\n");
    if let Some(p) = preamble {
        md.push_str(p.trim_end());
        md.push_str("\n\n");
    }
    runs_section(&mut md, runs);
    verdicts_section(&mut md, claims);
    for c in claims {
        claim_section(&mut md, c);
    }
    per_epoch_section(&mut md, runs);
    figures_section(&mut md, figures);
    definitions_section(&mut md, barrier_threshold);
    md
}

/// One row per run, then what the losses, cosines and distances are measured on.
fn runs_section(md: &mut String, runs: &[RunData]) {
    md.push_str("## Runs\n\n| run | kind | model | data | lr | batch | noise σ | epochs | steps | steps with floors | final train loss | final test acc. | ‖θ − θ_0‖ (end) | λ_max (last) |\n| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.kind.as_str(),
            r.model,
            r.dataset,
            r.lr,
            r.batch_label(),
            r.noise_std,
            r.epochs,
            r.total_steps,
            r.whole.floors,
            fmt_opt(r.final_eval("train").map(|e| e.loss), 4),
            pct(r.final_eval("test").map(|e| e.accuracy)),
            fmt_opt(r.whole.dist_end, 2),
            fmt_opt(final_lambda(r), 2)
        );
    }
    let primary: Vec<String> = {
        let mut v: Vec<String> = runs
            .iter()
            .map(|r| format!("`{}` with `{}` BatchNorm", r.eval_set, r.bn_policy))
            .collect();
        v.dedup();
        v
    };
    let scopes: Vec<&str> = {
        let mut v: Vec<&str> = runs.iter().map(|r| r.geometry_scope).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let _ = writeln!(
        md,
        "\nLosses along steps are measured on {}. \"Steps with floors\" counts the analyzed steps \
         (sparse recordings keep windows of consecutive steps). Cosines, update norms and \
         distances are over {}.\n",
        primary.join("; "),
        if scopes == ["params"] {
            "the trainable parameters (BatchNorm running statistics excluded, as the paper)"
        } else {
            "the whole state for some runs (analyses made before the `params` row existed; rerun their geometry phase)"
        }
    );
}

/// The table of verdicts.
fn verdicts_section(md: &mut String, claims: &[Assessed]) {
    md.push_str("## Verdicts\n\n| claim | verdict |\n| --- | --- |\n");
    for c in claims {
        let _ = writeln!(md, "| {} {} | **{}** |", c.id, c.claim, c.verdict);
    }
    md.push('\n');
}

/// One claim: statement, source, rule, evidence, verdict.
fn claim_section(md: &mut String, c: &Assessed) {
    let _ = writeln!(
        md,
        "## {}: {}\n\n*Source:* {}. *Rule:* {}.\n\n{}\n\n**Verdict: {}.**\n",
        c.id,
        c.claim,
        c.source,
        c.rule,
        c.evidence.trim_end(),
        c.verdict
    );
}

/// Floors, cosines and distances per epoch of every run.
fn per_epoch_section(md: &mut String, runs: &[RunData]) {
    md.push_str("## Per epoch\n\n| run | epoch | steps | interior floor | mean height | median α* | median cos | cos < 0 | mean ‖d_t‖ | ‖θ − θ_0‖ (end) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in runs {
        // A full-batch run has one step per epoch: its per-"epoch" rows would be per-step rows,
        // so it gets its whole-run row only.
        let rows: Vec<&EpochStats> = if r.steps_per_epoch > 1 {
            r.per_epoch.iter().collect()
        } else {
            vec![&r.whole]
        };
        for s in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                s.epoch.map_or("all".into(), |e| e.to_string()),
                s.floors,
                pct(s.interior_share),
                fmt_opt(s.height_start_mean, 4),
                fmt_opt(s.alpha_star_median, 2),
                fmt_opt(s.cos_median, 3),
                pct(s.cos_negative_share),
                fmt_opt(s.update_norm_mean, 4),
                fmt_opt(s.dist_end, 2)
            );
        }
    }
}

/// Links to the figures, with their captions; nothing when none is drawn.
fn figures_section(md: &mut String, figures: &[(String, String)]) {
    if !figures.is_empty() {
        md.push_str("\n## Figures\n\n");
        for (file, caption) in figures {
            // Every figure is also written as SVG and as its data in Parquet, beside the PNG.
            let stem = file.strip_suffix(".png").unwrap_or(file);
            let _ = writeln!(
                md,
                "**{caption}**\n\n![{caption}]({file})\n\n[SVG]({stem}.svg) · [data]({stem}.parquet)\n"
            );
        }
    }
}

fn definitions_section(md: &mut String, barrier_threshold: f64) {
    let _ = writeln!(
        md,
        "## Definitions\n\n- θ_t: the state before update t; d_t = θ_{{t+1}} − θ_t (the applied update, \
         weight decay and noise included); L(α) = L(θ_t + α·d_t), BatchNorm running statistics \
         interpolated with the weights.\n\
         - Valley floor of step t: the minimum of L(α) on the grid, refined by Brent's method; \
         *interior* when it lies strictly inside (0, 1) below both ends. Height = L(0) − L(α*).\n\
         - Barrier of a segment: max L − max(L(start), L(end)); counted when above {:.2}% of the \
         higher end (`--barrier-threshold`).\n\
         - λ_max: the top eigenvalue of the Hessian of the mean loss on the evaluation set \
         (Lanczos on Hessian-vector products); trace by Hutchinson's estimator.\n\
         - Every number comes from `summary.parquet` next to this file (tidy: run, epoch, metric, \
         value), computed with polars from the analysis tables.",
        100.0 * barrier_threshold
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_figure_links_its_svg_and_its_data() {
        let mut md = String::new();
        super::figures_section(&mut md, &[("height.png".into(), "Height".into())]);
        assert!(md.contains("![Height](height.png)"), "{md}");
        assert!(
            md.contains("[SVG](height.svg) · [data](height.parquet)"),
            "{md}"
        );
    }
}
