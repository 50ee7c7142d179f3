//! One request's prediction as outcome feedback keeps it (read from the output tensors named by the model's
//! `[feedback]` policy) and the ground truth posted for it (read from JSON), row by row.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;
use smallvec::SmallVec;

use crate::repository::{ClassLabel, FeedbackPolicy, FeedbackTask};
use crate::tensor::{Tensor, TensorData};

/// A class label. Integer labels and their text (`2`, `"2"`, `2.0`) are one label, so a truth posted as a string
/// matches an INT64 prediction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Int(i64),
    Text(Box<str>),
}

impl Label {
    pub fn from_text(text: &str) -> Label {
        match text.parse::<i64>() {
            Ok(i) => Label::Int(i),
            Err(_) => Label::Text(text.into()),
        }
    }

    /// A number as a label: integral values only.
    fn from_f64(x: f64) -> Option<Label> {
        (x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15).then_some(Label::Int(x as i64))
    }
}

impl From<&ClassLabel> for Label {
    fn from(c: &ClassLabel) -> Label {
        match c {
            ClassLabel::Int(i) => Label::Int(*i),
            ClassLabel::Text(s) => Label::from_text(s),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Int(i) => write!(f, "{i}"),
            Label::Text(s) => f.write_str(s),
        }
    }
}

/// A prediction's rows are kept inline up to these counts (a request of one row of a few classes takes no heap).
pub type Labels = SmallVec<[Label; 1]>;
pub type ScoreValues = SmallVec<[f32; 4]>;
pub type Values = SmallVec<[f64; 1]>;

/// What one request predicted, for each of its rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    Classes {
        labels: Labels,
        /// Each row's class probabilities, `columns` a row, in the order of the policy's classes.
        scores: Option<Scores>,
    },
    Values(Values),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub columns: usize,
    pub values: ScoreValues,
}

impl Scores {
    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.columns..(row + 1) * self.columns]
    }
}

impl Predicted {
    pub fn rows(&self) -> usize {
        match self {
            Predicted::Classes { labels, .. } => labels.len(),
            Predicted::Values(v) => v.len(),
        }
    }
}

/// A prediction as the store keeps it: the common request (one row: an integer class with at most three scores, or
/// one value) inline in 24 bytes, anything else on the heap.
#[derive(Debug)]
pub enum Kept {
    Class {
        label: i64,
        /// 0: no scores.
        columns: u8,
        scores: [f32; 3],
    },
    Value(f64),
    Other(Box<Predicted>),
}

impl From<Predicted> for Kept {
    fn from(predicted: Predicted) -> Kept {
        match &predicted {
            Predicted::Classes { labels, scores } if labels.len() == 1 => {
                if let Label::Int(label) = labels[0] {
                    let values = scores.as_ref().map_or(&[][..], |s| &s.values[..]);
                    if values.len() <= 3 {
                        let mut inline = [0.0; 3];
                        inline[..values.len()].copy_from_slice(values);
                        return Kept::Class {
                            label,
                            columns: values.len() as u8,
                            scores: inline,
                        };
                    }
                }
            }
            Predicted::Values(values) if values.len() == 1 => return Kept::Value(values[0]),
            _ => {}
        }
        Kept::Other(Box::new(predicted))
    }
}

impl Kept {
    pub fn predicted(&self) -> Cow<'_, Predicted> {
        match self {
            Kept::Class {
                label,
                columns,
                scores,
            } => Cow::Owned(Predicted::Classes {
                labels: smallvec::smallvec![Label::Int(*label)],
                scores: (*columns > 0).then(|| Scores {
                    columns: usize::from(*columns),
                    values: SmallVec::from_slice(&scores[..usize::from(*columns)]),
                }),
            }),
            Kept::Value(value) => Cow::Owned(Predicted::Values(smallvec::smallvec![*value])),
            Kept::Other(predicted) => Cow::Borrowed(predicted),
        }
    }
}

/// The ground truth of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    Class(Label),
    Value(f64),
}

/// [`extract`], kept as the store keeps it. The common answer (one row of an INT64 class and at most three FP32
/// scores) is read straight into [`Kept::Class`]; whatever else goes through [`extract`]. Both give the same
/// [`Kept`] for the same outputs.
pub fn keep(policy: &FeedbackPolicy, outputs: &[Tensor]) -> Result<Kept, String> {
    match one_class_row(policy, outputs) {
        Some(kept) => Ok(kept),
        None => extract(policy, outputs).map(Kept::from),
    }
}

/// The one-row classification [`keep`] reads directly, or `None` for anything else (including every error).
fn one_class_row(policy: &FeedbackPolicy, outputs: &[Tensor]) -> Option<Kept> {
    if policy.task != FeedbackTask::Classification {
        return None;
    }
    let find = |name: &str| outputs.iter().find(|t| t.name == name);
    let label = find(&policy.label_output)?;
    let (TensorData::Int64(labels), [1] | [1, 1]) = (&label.data, label.shape.as_slice()) else {
        return None;
    };
    let mut scores = [0.0; 3];
    let columns = match &policy.score_output {
        None => 0,
        Some(name) => {
            let t = find(name)?;
            let (TensorData::Fp32(values), &[1, columns]) = (&t.data, t.shape.as_slice()) else {
                return None;
            };
            let fits = (1..=scores.len()).contains(&columns) && values.len() == columns;
            if !fits || policy.classes.as_ref().is_some_and(|c| c.len() != columns) {
                return None;
            }
            scores[..columns].copy_from_slice(values);
            columns
        }
    };
    Some(Kept::Class {
        label: *labels.first()?,
        columns: columns as u8,
        scores,
    })
}

/// Reads the prediction the policy names from a request's outputs. Errors say what was missing or of the wrong form.
pub fn extract(policy: &FeedbackPolicy, outputs: &[Tensor]) -> Result<Predicted, String> {
    let find = |name: &str| outputs.iter().find(|t| t.name == name);
    let scores = match &policy.score_output {
        Some(name) => {
            Some(scores_of(find(name).ok_or_else(|| {
                format!("output '{name}' was not computed")
            })?)?)
        }
        None => None,
    };
    let label = find(&policy.label_output);
    match policy.task {
        FeedbackTask::Regression => {
            let t = label
                .ok_or_else(|| format!("output '{}' was not computed", policy.label_output))?;
            let values =
                values_of(t).ok_or_else(|| format!("output '{}' is not numeric", t.name))?;
            one_per_row(t, values.len())?;
            Ok(Predicted::Values(values))
        }
        FeedbackTask::Classification => {
            // Before the scores name a class (below, when the label output is missing).
            if let Some(s) = &scores {
                if policy
                    .classes
                    .as_ref()
                    .is_some_and(|c| c.len() != s.columns)
                {
                    return Err(format!(
                        "output '{}' has {} columns, [feedback] classes names {}",
                        policy.score_output.as_deref().unwrap_or(""),
                        s.columns,
                        policy.classes.as_ref().map_or(0, Vec::len)
                    ));
                }
            }
            let labels = match (label, &scores) {
                (Some(t), _) => {
                    let labels = labels_of(t)
                        .ok_or_else(|| format!("output '{}' holds no class labels", t.name))?;
                    one_per_row(t, labels.len())?;
                    labels
                }
                // The label output was not asked for: the most probable class of each row.
                (None, Some(s)) => {
                    let classes = classes(policy, s.columns);
                    (0..s.values.len() / s.columns.max(1))
                        .map(|r| classes[argmax(s.row(r))].clone())
                        .collect()
                }
                (None, None) => {
                    return Err(format!("output '{}' was not computed", policy.label_output))
                }
            };
            if let Some(s) = &scores {
                if s.values.len() != labels.len() * s.columns {
                    return Err(format!(
                        "output '{}' has {} rows of scores for {} labels",
                        policy.score_output.as_deref().unwrap_or(""),
                        s.values.len() / s.columns.max(1),
                        labels.len()
                    ));
                }
            }
            Ok(Predicted::Classes { labels, scores })
        }
    }
}

/// The policy's class labels, or `0 .. columns` when it names none.
pub fn classes(policy: &FeedbackPolicy, columns: usize) -> Vec<Label> {
    match &policy.classes {
        Some(c) => c.iter().map(Label::from).collect(),
        None => (0..columns as i64).map(Label::Int).collect(),
    }
}

/// The index of the largest value (the first of equals, as numpy's `argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// A label or value output has one element a row: shape `[N]` or `[N, 1]`.
fn one_per_row(t: &Tensor, len: usize) -> Result<(), String> {
    match t.shape.as_slice() {
        [n] | [n, 1] if *n == len => Ok(()),
        _ => Err(format!(
            "output '{}' has shape {:?}, not one value a row",
            t.name, t.shape
        )),
    }
}

fn scores_of(t: &Tensor) -> Result<Scores, String> {
    let columns = match t.shape.as_slice() {
        [_, c] if *c > 0 => *c,
        _ => {
            return Err(format!(
                "output '{}' has shape {:?}, not [rows, classes]",
                t.name, t.shape
            ))
        }
    };
    let values = match &t.data {
        TensorData::Fp32(v) => SmallVec::from_slice(v),
        TensorData::Fp64(v) => v.iter().map(|x| *x as f32).collect(),
        _ => return Err(format!("output '{}' is not FP32 or FP64", t.name)),
    };
    Ok(Scores { columns, values })
}

fn labels_of(t: &Tensor) -> Option<Labels> {
    Some(match &t.data {
        TensorData::Int64(v) => v.iter().map(|x| Label::Int(*x)).collect(),
        TensorData::Int32(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Int16(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Int8(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Uint8(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Uint16(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Uint32(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Bool(v) => v.iter().map(|x| Label::Int(i64::from(*x))).collect(),
        TensorData::Bytes(v) => v.iter().map(|s| Label::from_text(s)).collect(),
        _ => return None,
    })
}

fn values_of(t: &Tensor) -> Option<Values> {
    Some(match &t.data {
        TensorData::Fp32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Fp64(v) => SmallVec::from_slice(v),
        TensorData::Fp16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::Int64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        _ => return None,
    })
}

/// Reads the truth of a prediction of `rows` rows: a scalar for one row, else an array of one value a row.
pub fn parse_truth(task: FeedbackTask, value: &Value, rows: usize) -> Result<Vec<Truth>, String> {
    let one = |v: &Value| -> Result<Truth, String> {
        match (task, v) {
            (FeedbackTask::Regression, Value::Number(n)) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Truth::Value)
                .ok_or_else(|| format!("truth {n} is not a finite number")),
            (FeedbackTask::Regression, other) => Err(format!(
                "truth {other} is not a number (task = \"regression\")"
            )),
            (FeedbackTask::Classification, Value::String(s)) => {
                Ok(Truth::Class(Label::from_text(s)))
            }
            (FeedbackTask::Classification, Value::Number(n)) => n
                .as_i64()
                .map(Label::Int)
                .or_else(|| n.as_f64().and_then(Label::from_f64))
                .map(Truth::Class)
                .ok_or_else(|| format!("truth {n} is not a class label (an integer or a string)")),
            (FeedbackTask::Classification, Value::Bool(b)) => {
                Ok(Truth::Class(Label::Int(i64::from(*b))))
            }
            (FeedbackTask::Classification, other) => Err(format!(
                "truth {other} is not a class label (an integer or a string)"
            )),
        }
    };
    match value {
        Value::Array(items) if items.len() == rows => items.iter().map(one).collect(),
        Value::Array(items) => Err(format!(
            "truth has {} values; the prediction has {rows} rows",
            items.len()
        )),
        Value::Null => Err("truth is missing".into()),
        scalar if rows == 1 => Ok(vec![one(scalar)?]),
        _ => Err(format!(
            "truth is one value; the prediction has {rows} rows (send an array)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn policy(text: &str) -> FeedbackPolicy {
        toml::from_str(text).unwrap()
    }

    fn tensor(name: &str, shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data,
        }
    }

    #[test]
    fn labels_and_scores_are_read_row_by_row() {
        let p =
            policy("task = \"classification\"\nlabel_output = \"label\"\nscore_output = \"p\"\n");
        let outputs = [
            tensor("label", vec![2], TensorData::Int64(vec![1, 0])),
            tensor("p", vec![2, 2], TensorData::Fp32(vec![0.2, 0.8, 0.6, 0.4])),
        ];
        let Predicted::Classes { labels, scores } = extract(&p, &outputs).unwrap() else {
            panic!("not classes")
        };
        assert_eq!(labels[..], [Label::Int(1), Label::Int(0)]);
        assert_eq!(scores.unwrap().row(1), [0.6, 0.4]);
        // Without the label output, the most probable class stands in.
        let Predicted::Classes { labels, .. } = extract(&p, &outputs[1..]).unwrap() else {
            panic!("not classes")
        };
        assert_eq!(labels[..], [Label::Int(1), Label::Int(0)]);
        assert!(extract(&p, &outputs[..1])
            .unwrap_err()
            .contains("'p' was not computed"));
        // Named classes that do not match the score columns are an error, also when the scores pick the class.
        let named = policy(
            "task = \"classification\"\nlabel_output = \"label\"\nscore_output = \"p\"\nclasses = [\"a\"]\n",
        );
        for given in [&outputs[..], &outputs[1..]] {
            assert!(extract(&named, given)
                .unwrap_err()
                .contains("has 2 columns, [feedback] classes names 1"));
        }
    }

    #[test]
    fn truths_are_checked_against_the_task_and_the_rows() {
        use FeedbackTask::*;
        assert_eq!(
            parse_truth(Classification, &json!("2"), 1).unwrap(),
            [Truth::Class(Label::Int(2))]
        );
        assert_eq!(
            parse_truth(Classification, &json!(2.0), 1).unwrap(),
            [Truth::Class(Label::Int(2))]
        );
        assert!(parse_truth(Classification, &json!(2.5), 1).is_err());
        assert!(parse_truth(Classification, &json!([1, 2]), 3).is_err());
        assert!(parse_truth(Classification, &json!(1), 2).is_err());
        assert!(parse_truth(Regression, &json!("x"), 1).is_err());
        assert_eq!(
            parse_truth(Regression, &json!([1.5, 2]), 2).unwrap(),
            [Truth::Value(1.5), Truth::Value(2.0)]
        );
        assert!(parse_truth(Classification, &json!({"a": 1}), 1).is_err());
        assert!(parse_truth(Classification, &Value::Null, 1).is_err());
    }

    #[test]
    fn kept_predictions_read_back_as_they_were() {
        let class = |labels: Labels, scores: Option<&[f32]>| Predicted::Classes {
            scores: scores.map(|v| Scores {
                columns: v.len() / labels.len(),
                values: SmallVec::from_slice(v),
            }),
            labels,
        };
        let one = |l: Label| -> Labels { smallvec::smallvec![l] };
        let cases = [
            (class(one(Label::Int(2)), None), "inline"),
            (class(one(Label::Int(-1)), Some(&[0.25, 0.75])), "inline"),
            (
                class(one(Label::Int(0)), Some(&[0.5, 0.25, 0.25])),
                "inline",
            ),
            (
                class(one(Label::Int(1)), Some(&[0.1, 0.2, 0.3, 0.4])),
                "boxed",
            ),
            (
                class(one(Label::from_text("cat")), Some(&[0.5, 0.5])),
                "boxed",
            ),
            (
                class(
                    smallvec::smallvec![Label::Int(0), Label::Int(1)],
                    Some(&[0.9, 0.1, 0.2, 0.8]),
                ),
                "boxed",
            ),
            (Predicted::Values(smallvec::smallvec![1.5]), "inline"),
            (Predicted::Values(smallvec::smallvec![1.5, -2.0]), "boxed"),
        ];
        for (predicted, how) in cases {
            let kept = Kept::from(predicted.clone());
            assert_eq!(
                matches!(kept, Kept::Other(_)),
                how == "boxed",
                "{predicted:?}"
            );
            assert_eq!(*kept.predicted(), predicted);
        }
        assert_eq!(std::mem::size_of::<Kept>(), 24);
    }

    /// Outputs of every form a classifier may give, right and wrong: label and score outputs present or not, of
    /// several datatypes and shapes, with and without named classes.
    fn classifier_outputs() -> impl Strategy<Value = (FeedbackPolicy, Vec<Tensor>)> {
        let label =
            (0usize..3, 0usize..4, any::<bool>(), -3i64..3).prop_map(|(kind, rows, column, l)| {
                let shape = if column { vec![rows, 1] } else { vec![rows] };
                let data = match kind {
                    0 => TensorData::Int64(vec![l; rows]),
                    1 => TensorData::Int32(vec![l as i32; rows]),
                    _ => TensorData::Fp32(vec![l as f32; rows]),
                };
                tensor("label", shape, data)
            });
        let scores = (any::<bool>(), 0usize..3, 0usize..5, -1.0f32..1.0).prop_map(
            |(fp64, rows, columns, x)| {
                let n = rows * columns;
                let data = if fp64 {
                    TensorData::Fp64((0..n).map(|i| f64::from(x) + i as f64).collect())
                } else {
                    TensorData::Fp32((0..n).map(|i| x + i as f32).collect())
                };
                tensor("p", vec![rows, columns], data)
            },
        );
        let classes = proptest::option::of(1usize..5);
        (
            proptest::option::weighted(0.8, label),
            proptest::option::weighted(0.8, scores),
            proptest::bool::weighted(0.8),
            classes,
        )
            .prop_map(|(label, scores, score_output, classes)| {
                let mut text =
                    String::from("task = \"classification\"\nlabel_output = \"label\"\n");
                if score_output {
                    text.push_str("score_output = \"p\"\n");
                }
                if let Some(n) = classes {
                    let names: Vec<String> = (0..n).map(|i| format!("\"c{i}\"")).collect();
                    text.push_str(&format!("classes = [{}]\n", names.join(", ")));
                }
                (policy(&text), label.into_iter().chain(scores).collect())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// The direct read of a one-row answer keeps exactly what the general reader keeps, and fails alike.
        #[test]
        fn kept_directly_as_through_extract((p, outputs) in classifier_outputs()) {
            let direct = keep(&p, &outputs);
            let general = extract(&p, &outputs).map(Kept::from);
            match (direct, general) {
                (Ok(d), Ok(g)) => {
                    prop_assert_eq!(d.predicted(), g.predicted());
                    prop_assert_eq!(matches!(d, Kept::Other(_)), matches!(g, Kept::Other(_)));
                }
                (Err(d), Err(g)) => prop_assert_eq!(d, g),
                (d, g) => prop_assert!(false, "direct {:?}, general {:?}", d, g),
            }
        }
    }
}
