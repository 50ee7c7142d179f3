//! Pairs a prediction with its posted truth, row by row, into the rows a quality window takes: for classification
//! the predicted and true class and the row's scores with the true class's column; for regression the predicted and
//! true value.

use serde_json::Value;

use super::prediction::{self, Predicted, Truth};
use super::quality::Scored;
use crate::repository::FeedbackPolicy;

/// Parses a truth for a prediction and scores it: the truth rows and the scored rows, or why it does not fit.
pub(super) fn score(
    policy: &FeedbackPolicy,
    predicted: &Predicted,
    value: &Value,
) -> Result<(Vec<Truth>, Vec<Scored>), String> {
    let truth = prediction::parse_truth(policy.task, value, predicted.rows())?;
    let scored = scored_rows(policy, predicted, &truth)?;
    Ok((truth, scored))
}

pub(super) fn scored_rows(
    policy: &FeedbackPolicy,
    predicted: &Predicted,
    truth: &[Truth],
) -> Result<Vec<Scored>, String> {
    match predicted {
        Predicted::Values(values) => values
            .iter()
            .zip(truth)
            .map(|(p, t)| match t {
                Truth::Value(t) => Ok(Scored::Value {
                    predicted: *p,
                    truth: *t,
                }),
                Truth::Class(_) => Err("truth is a class; the model predicts values".to_owned()),
            })
            .collect(),
        Predicted::Classes { labels, scores } => {
            let columns = scores.as_ref().map_or(0, |s| s.columns);
            let known = (policy.classes.is_some() || scores.is_some())
                .then(|| prediction::classes(policy, columns));
            labels
                .iter()
                .zip(truth)
                .enumerate()
                .map(|(row, (p, t))| {
                    let Truth::Class(t) = t else {
                        return Err("truth is a number; the model predicts classes".to_owned());
                    };
                    let column = match &known {
                        Some(classes) => {
                            Some(classes.iter().position(|c| c == t).ok_or_else(|| {
                                format!("truth '{t}' is not one of the model's classes")
                            })?)
                        }
                        None => None,
                    };
                    Ok(Scored::Class {
                        predicted: p.clone(),
                        truth: t.clone(),
                        scores: scores.as_ref().map(|s| (s.row(row).into(), column)),
                    })
                })
                .collect()
        }
    }
}
