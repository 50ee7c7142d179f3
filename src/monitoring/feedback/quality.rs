//! Model quality over a window of labelled rows: accuracy, per-class precision and recall, log loss, Brier score and
//! expected calibration error (classification, the last three from class probabilities), MAE and RMSE
//! (regression). Pure functions of the rows, so a test can compute the same numbers offline.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use super::prediction::{argmax, Label};
use crate::repository::QualityMetric;

/// Probabilities are clipped to `[EPSILON, 1 - EPSILON]` in the log loss (as scikit-learn does), so a confident
/// miss costs a large but finite amount.
pub const EPSILON: f64 = 1e-15;

/// Confidence bins of the expected calibration error: `[0, 0.1], (0.1, 0.2], … (0.9, 1]`.
pub const ECE_BINS: usize = 10;

/// One labelled row.
#[derive(Debug, Clone, PartialEq)]
pub enum Scored {
    Class {
        predicted: Label,
        truth: Label,
        /// The row's class probabilities and the truth's column among them (`None`: the truth is no known class).
        scores: Option<(Box<[f32]>, Option<usize>)>,
    },
    Value {
        predicted: f64,
        truth: f64,
    },
}

/// A series' last `capacity` labelled rows.
#[derive(Debug)]
pub struct Window {
    rows: VecDeque<Scored>,
    capacity: usize,
    /// Rows added since the window was last judged (the retraining rule judges tumbling windows).
    pub since_judged: usize,
    /// Rows ever added.
    pub total: u64,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            rows: VecDeque::new(),
            capacity: capacity.max(1),
            since_judged: 0,
            total: 0,
        }
    }

    pub fn push(&mut self, row: Scored) {
        if self.rows.len() == self.capacity {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
        self.since_judged += 1;
        self.total += 1;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() == self.capacity
    }

    pub fn quality(&self, classes: &[Label], max_classes: usize) -> Quality {
        quality(self.rows.iter(), classes, max_classes)
    }
}

/// Quality of one series over its window. A metric is `None` when the window cannot give it (no probabilities, or
/// rows of the other task).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quality {
    /// Labelled rows in the window.
    pub labels: usize,
    pub accuracy: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    pub ece: Option<f64>,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Precision and recall per class (at most `feedback.max_classes` classes).
    pub classes: Vec<ClassQuality>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClassQuality {
    pub class: String,
    /// Of the rows predicted as this class, the share that were; `None` when none was predicted as it.
    pub precision: Option<f64>,
    /// Of the rows of this class, the share predicted as it; `None` when the window holds none.
    pub recall: Option<f64>,
    /// Rows of this class in the window.
    pub support: usize,
}

impl Quality {
    pub fn get(&self, metric: QualityMetric) -> Option<f64> {
        match metric {
            QualityMetric::Accuracy => self.accuracy,
            QualityMetric::LogLoss => self.log_loss,
            QualityMetric::Brier => self.brier,
            QualityMetric::Ece => self.ece,
            QualityMetric::Mae => self.mae,
            QualityMetric::Rmse => self.rmse,
        }
    }
}

/// Computes every metric the rows allow. `classes` are the model's known classes (from its policy or its score
/// columns; empty when it has neither): per-class figures cover them, else the labels seen, sorted; at most
/// `max_classes` of them.
pub fn quality<'a>(
    rows: impl Iterator<Item = &'a Scored> + Clone,
    classes: &[Label],
    max_classes: usize,
) -> Quality {
    let mut q = Quality::default();
    let (mut hits, mut classified) = (0usize, 0usize);
    let (mut log_loss, mut brier, mut scored) = (0.0f64, 0.0f64, 0usize);
    let mut bins = [(0usize, 0.0f64, 0usize); ECE_BINS]; // (rows, summed confidence, hits)
    let (mut abs, mut sq, mut valued) = (0.0f64, 0.0f64, 0usize);
    for row in rows.clone() {
        q.labels += 1;
        match row {
            Scored::Class {
                predicted,
                truth,
                scores,
            } => {
                classified += 1;
                let hit = predicted == truth;
                hits += usize::from(hit);
                if let Some((p, Some(t))) = scores {
                    scored += 1;
                    let pt = f64::from(p[*t]).clamp(EPSILON, 1.0 - EPSILON);
                    log_loss -= pt.ln();
                    brier += p
                        .iter()
                        .enumerate()
                        .map(|(k, pk)| {
                            let y = if k == *t { 1.0 } else { 0.0 };
                            (f64::from(*pk) - y).powi(2)
                        })
                        .sum::<f64>();
                    let top = argmax(p);
                    let confidence = f64::from(p[top]);
                    let bin = ((confidence * ECE_BINS as f64).ceil() as isize - 1)
                        .clamp(0, ECE_BINS as isize - 1) as usize;
                    bins[bin].0 += 1;
                    bins[bin].1 += confidence;
                    bins[bin].2 += usize::from(top == *t);
                }
            }
            Scored::Value { predicted, truth } => {
                valued += 1;
                let e = predicted - truth;
                abs += e.abs();
                sq += e * e;
            }
        }
    }
    if classified > 0 {
        q.accuracy = Some(hits as f64 / classified as f64);
        q.classes = per_class(rows, classes, max_classes);
    }
    if scored > 0 {
        let n = scored as f64;
        q.log_loss = Some(log_loss / n);
        q.brier = Some(brier / n);
        q.ece = Some(
            bins.iter()
                .filter(|b| b.0 > 0)
                .map(|&(count, confidence, hits)| {
                    let c = count as f64;
                    c / n * (hits as f64 / c - confidence / c).abs()
                })
                .sum(),
        );
    }
    if valued > 0 {
        let n = valued as f64;
        q.mae = Some(abs / n);
        q.rmse = Some((sq / n).sqrt());
    }
    q
}

fn per_class<'a>(
    rows: impl Iterator<Item = &'a Scored> + Clone,
    classes: &[Label],
    max_classes: usize,
) -> Vec<ClassQuality> {
    let labels: Vec<Label> = if classes.is_empty() {
        let seen: BTreeSet<&Label> = rows
            .clone()
            .filter_map(|r| match r {
                Scored::Class {
                    predicted, truth, ..
                } => Some([predicted, truth]),
                Scored::Value { .. } => None,
            })
            .flatten()
            .collect();
        seen.into_iter().take(max_classes).cloned().collect()
    } else {
        classes.iter().take(max_classes).cloned().collect()
    };
    // (predicted as k, of class k, both)
    let mut counts = vec![(0usize, 0usize, 0usize); labels.len()];
    for row in rows {
        let Scored::Class {
            predicted, truth, ..
        } = row
        else {
            continue;
        };
        let p = labels.iter().position(|l| l == predicted);
        let t = labels.iter().position(|l| l == truth);
        if let Some(p) = p {
            counts[p].0 += 1;
        }
        if let Some(t) = t {
            counts[t].1 += 1;
            if p == Some(t) {
                counts[t].2 += 1;
            }
        }
    }
    labels
        .iter()
        .zip(counts)
        .map(|(label, (predicted, actual, both))| ClassQuality {
            class: label.to_string(),
            precision: (predicted > 0).then(|| both as f64 / predicted as f64),
            recall: (actual > 0).then(|| both as f64 / actual as f64),
            support: actual,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(predicted: i64, truth: i64, p: &[f32]) -> Scored {
        Scored::Class {
            predicted: Label::Int(predicted),
            truth: Label::Int(truth),
            scores: Some((p.into(), Some(truth as usize))),
        }
    }

    #[test]
    fn classification_metrics_match_their_definitions() {
        let rows = [
            class(1, 1, &[0.1, 0.9]),
            class(0, 1, &[0.72, 0.28]),
            class(0, 0, &[0.65, 0.35]),
            class(1, 0, &[0.45, 0.55]),
        ];
        let q = quality(rows.iter(), &[Label::Int(0), Label::Int(1)], 32);
        assert_eq!(q.labels, 4);
        assert_eq!(q.accuracy, Some(0.5));
        let c = |x: f32| x as f64;
        let expected_log_loss = -(c(0.9).ln() + c(0.28).ln() + c(0.65).ln() + c(0.45).ln()) / 4.0;
        assert!((q.log_loss.unwrap() - expected_log_loss).abs() < 1e-12);
        let sq = |a: f32, b: f32| c(a).powi(2) + c(b).powi(2);
        let expected_brier = (sq(0.1, 0.9 - 1.0)
            + sq(0.72, 0.28 - 1.0)
            + sq(0.65 - 1.0, 0.35)
            + sq(0.45 - 1.0, 0.55))
            / 4.0;
        assert!((q.brier.unwrap() - expected_brier).abs() < 1e-6);
        // One row in each of bins 8, 7, 6 and 5: |accuracy - confidence| each, a quarter of the weight.
        let expected_ece = ((1.0 - c(0.9)) + c(0.72) + (1.0 - c(0.65)) + c(0.55)) / 4.0;
        assert!((q.ece.unwrap() - expected_ece).abs() < 1e-12);
        assert_eq!(q.classes.len(), 2);
        assert_eq!(q.classes[0].precision, Some(0.5));
        assert_eq!(q.classes[1].recall, Some(0.5));
        assert_eq!(q.mae, None);
    }

    #[test]
    fn regression_metrics_and_the_window_bound() {
        let mut w = Window::new(2);
        for (p, t) in [(9.0, 0.0), (1.0, 2.0), (3.0, 1.0)] {
            w.push(Scored::Value {
                predicted: p,
                truth: t,
            });
        }
        let q = w.quality(&[], 32);
        assert_eq!((q.labels, w.total), (2, 3));
        assert_eq!(q.mae, Some(1.5));
        assert_eq!(q.rmse, Some(2.5f64.sqrt()));
        assert_eq!(q.accuracy, None);
    }
}
