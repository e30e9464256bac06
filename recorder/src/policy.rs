//! Which steps a recording keeps. Analysis needs consecutive pairs (or triples), not always the
//! whole path, so sparse policies keep runs of consecutive steps.

use std::str::FromStr;

use crate::error::RecordError;

/// A recording policy over step numbers (step t = the state before update t; θ_0 and the final
/// state are always kept, so distances from initialization can be measured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordPolicy {
    /// Every step (default).
    Every,
    /// Every step of the listed epochs (1-based, as the paper's "epoch 1"), including the state
    /// after the epoch's last update, so every pair inside those epochs exists.
    Epochs(Vec<u64>),
    /// Every k-th step (no consecutive pairs unless k = 1).
    EveryK(u64),
    /// Windows: steps t with `t mod every < pairs + 1`, i.e. `pairs` consecutive pairs every
    /// `every` steps.
    Windows { pairs: u64, every: u64 },
    /// Nothing but the header and per-epoch records: the baseline of overhead benchmarks.
    Nothing,
}

impl RecordPolicy {
    /// Is step `t` recorded, given the epoch length?
    pub fn records(&self, t: u64, steps_per_epoch: u64) -> bool {
        match self {
            RecordPolicy::Nothing => false,
            _ if t == 0 => true,
            RecordPolicy::Every => true,
            RecordPolicy::Epochs(epochs) => epochs.iter().any(|&e| {
                let start = (e - 1) * steps_per_epoch;
                (start..=start + steps_per_epoch).contains(&t)
            }),
            RecordPolicy::EveryK(k) => t.is_multiple_of(*k),
            RecordPolicy::Windows { pairs, every } => t % every <= *pairs,
        }
    }
}

impl std::fmt::Display for RecordPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordPolicy::Every => write!(f, "every"),
            RecordPolicy::Epochs(e) => {
                let list: Vec<String> = e.iter().map(u64::to_string).collect();
                write!(f, "epochs:{}", list.join(","))
            }
            RecordPolicy::EveryK(k) => write!(f, "every:{k}"),
            RecordPolicy::Windows { pairs, every } => write!(f, "window:{pairs},{every}"),
            RecordPolicy::Nothing => write!(f, "none"),
        }
    }
}

impl FromStr for RecordPolicy {
    type Err = RecordError;

    /// `every`, `epochs:1,10,25,100`, `every:K`, `window:W,K`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| RecordError::InvalidSetting {
            flag: "record",
            reason: format!("{s:?}: {reason} (expected every, epochs:1,10, every:K or window:W,K)"),
        };
        let nums = |list: &str| -> Result<Vec<u64>, RecordError> {
            list.split(',')
                .map(|x| x.trim().parse::<u64>().map_err(|_| bad("not a number")))
                .collect()
        };
        let policy = match s.split_once(':') {
            None if s == "every" => RecordPolicy::Every,
            None if s == "none" => RecordPolicy::Nothing,
            Some(("epochs", list)) => {
                let e = nums(list)?;
                if e.is_empty() || e.contains(&0) {
                    return Err(bad("epochs are numbered from 1"));
                }
                RecordPolicy::Epochs(e)
            }
            Some(("every", k)) => match nums(k)?.as_slice() {
                [k] if *k > 0 => RecordPolicy::EveryK(*k),
                _ => return Err(bad("K must be one positive number")),
            },
            Some(("window", wk)) => match nums(wk)?.as_slice() {
                [w, k] if *w > 0 && w < k => RecordPolicy::Windows {
                    pairs: *w,
                    every: *k,
                },
                _ => return Err(bad("need 0 < W < K")),
            },
            _ => return Err(bad("unknown policy")),
        };
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_select_steps() {
        let p: RecordPolicy = "epochs:1,3".parse().unwrap();
        let kept: Vec<u64> = (0..40).filter(|&t| p.records(t, 10)).collect();
        assert_eq!(
            kept,
            [(0..=10).collect::<Vec<_>>(), (20..=30).collect()].concat()
        );
        let w: RecordPolicy = "window:2,10".parse().unwrap();
        let kept: Vec<u64> = (0..25).filter(|&t| w.records(t, 7)).collect();
        assert_eq!(kept, vec![0, 1, 2, 10, 11, 12, 20, 21, 22]);
        let k: RecordPolicy = "every:5".parse().unwrap();
        assert!(k.records(10, 3) && !k.records(11, 3));
        assert_eq!(w.to_string(), "window:2,10");
        assert_eq!(
            "every".parse::<RecordPolicy>().unwrap(),
            RecordPolicy::Every
        );
        for bad in ["epochs:0", "window:5,5", "every:0", "sometimes", "epochs:x"] {
            assert!(bad.parse::<RecordPolicy>().is_err(), "{bad}");
        }
    }
}
