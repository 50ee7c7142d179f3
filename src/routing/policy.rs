//! [`RoutingPolicy`]: a plain value with a pure selection function. Which variant a request goes to depends only on
//! the policy and a bucket in `0..BUCKETS`: the hash of (model, routing key) when the request has a key, a random
//! draw otherwise. Every replica with the same policy routes a key alike.

use std::collections::BTreeSet;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};

use crate::metrics::{PINNED, STABLE};

/// Buckets a routing key hashes into; weights are resolved to the nearest 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// Routing for one model: a stable version, weighted variants, an optional shadow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingPolicy {
    /// The version that takes the traffic no variant takes; unset means the model's default version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<u64>,
    /// Weighted variants, e.g. a canary at 10 %. Buckets are assigned in this order.
    #[serde(default)]
    pub variants: Vec<Variant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowPolicy>,
    /// A request header whose value keeps a caller on one variant (sticky A/B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
    /// Switches a variant off when its accuracy from outcome feedback falls too far below stable's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_rollback: Option<QualityRollback>,
}

/// Sets a variant's weight to 0 when its accuracy over the feedback window (the `served` set) is below stable's by
/// more than `max_accuracy_drop`, once both windows hold at least `min_labels` labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityRollback {
    /// Accuracy points (0 to 1) the variant may trail stable by.
    pub max_accuracy_drop: f64,
    pub min_labels: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The `x-sluice-variant` value and metric label, e.g. `canary`.
    pub name: String,
    pub version: u64,
    /// Share of traffic in percent (0 to 100).
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowPolicy {
    pub version: u64,
    /// Fraction of requests mirrored to the shadow, 0 to 1.
    pub sample_rate: f64,
}

/// Sets a variant's weight to 0 when its error rate over a window exceeds a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRollback {
    /// Errors / requests above which the variant is switched off, 0 to 1.
    pub max_error_rate: f64,
    pub window_seconds: u64,
    /// No decision before the window holds this many requests.
    pub min_requests: u64,
}

impl RoutingPolicy {
    /// Checks the policy's own consistency (not whether its versions exist).
    pub fn validate(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let mut total = 0.0;
        for v in &self.variants {
            if !(0.0..=100.0).contains(&v.weight) {
                return Err(format!(
                    "variant '{}': weight {} is not between 0 and 100",
                    v.name, v.weight
                ));
            }
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "variant name '{}' must be letters, digits, '-' or '_'",
                    v.name
                ));
            }
            if v.name == STABLE || v.name == PINNED || !names.insert(v.name.as_str()) {
                return Err(format!(
                    "variant name '{}' is reserved or used twice",
                    v.name
                ));
            }
            total += v.weight;
        }
        if total > 100.0 + 1e-9 {
            return Err(format!(
                "variant weights add up to {total} %, more than 100 %"
            ));
        }
        if let Some(s) = &self.shadow {
            if !(0.0..=1.0).contains(&s.sample_rate) {
                return Err(format!(
                    "shadow sample_rate {} is not between 0 and 1",
                    s.sample_rate
                ));
            }
        }
        if let Some(a) = &self.auto_rollback {
            if !(0.0..=1.0).contains(&a.max_error_rate) || a.window_seconds == 0 {
                return Err(
                    "auto_rollback needs max_error_rate between 0 and 1 and window_seconds > 0"
                        .into(),
                );
            }
        }
        if let Some(q) = &self.quality_rollback {
            if !(0.0..=1.0).contains(&q.max_accuracy_drop) {
                return Err(format!(
                    "quality_rollback max_accuracy_drop {} is not between 0 and 1",
                    q.max_accuracy_drop
                ));
            }
        }
        if self
            .key_header
            .as_deref()
            .is_some_and(|h| axum::http::HeaderName::try_from(h).is_err())
        {
            return Err(format!(
                "key_header '{}' is not a valid header name",
                self.key_header.as_deref().unwrap_or("")
            ));
        }
        Ok(())
    }

    /// The variant for `bucket` (`0..BUCKETS`), or `None` for stable. Variants take consecutive bucket ranges in
    /// order, so growing the first variant's weight never moves a key out of it.
    pub fn choose(&self, bucket: u32) -> Option<&Variant> {
        let mut upper = 0u32;
        for v in &self.variants {
            upper += basis_points(v.weight);
            if bucket < upper {
                return Some(v);
            }
        }
        None
    }

    /// Every version the policy refers to; these stay loaded whatever the version policy says.
    pub fn versions(&self) -> BTreeSet<u64> {
        self.roles().into_iter().map(|(_, v)| v).collect()
    }

    /// Every version the policy sends traffic to, with the role it has: `stable`, a variant's name, or `shadow`.
    pub fn roles(&self) -> Vec<(&str, u64)> {
        let stable = self.stable.map(|v| (STABLE, v));
        let variants = self.variants.iter().map(|v| (v.name.as_str(), v.version));
        let shadow = self.shadow.as_ref().map(|s| ("shadow", s.version));
        stable.into_iter().chain(variants).chain(shadow).collect()
    }
}

fn basis_points(weight: f64) -> u32 {
    (weight.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0).round() as u32
}

/// The bucket of a routing key: FNV-1a over the model name and key (a fixed, documented hash, so every replica and
/// every sluice version computes the same bucket).
pub fn bucket_for_key(model: &str, key: &str) -> u32 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(model.as_bytes());
    hasher.write(&[0]);
    hasher.write(key.as_bytes());
    (hasher.finish() % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(weights: &[f64]) -> RoutingPolicy {
        RoutingPolicy {
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    name: format!("v{i}"),
                    version: i as u64 + 2,
                    weight: *w,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn shares(p: &RoutingPolicy) -> Vec<u32> {
        let mut counts = vec![0u32; p.variants.len() + 1];
        for bucket in 0..BUCKETS {
            match p.choose(bucket) {
                Some(v) => counts[p.variants.iter().position(|x| x == v).unwrap()] += 1,
                None => counts[p.variants.len()] += 1,
            }
        }
        counts
    }

    proptest! {
        /// Over all buckets, each variant's share equals its weight (to the bucket resolution).
        #[test]
        fn shares_match_weights(weights in proptest::collection::vec(0.0f64..=25.0, 0..4)) {
            let p = policy(&weights);
            prop_assert!(p.validate().is_ok());
            let counts = shares(&p);
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], basis_points(*w));
            }
        }

        #[test]
        fn zero_is_never_and_hundred_always_chosen(bucket in 0..BUCKETS, other in 0.0f64..=100.0) {
            let p = policy(&[0.0, other]);
            prop_assert_ne!(p.choose(bucket).map(|v| v.name.as_str()), Some("v0"));
            let all = policy(&[100.0]);
            prop_assert_eq!(all.choose(bucket).map(|v| v.name.as_str()), Some("v0"));
        }

        /// A key in the first variant stays there when that variant's weight only grows.
        #[test]
        fn growing_a_canary_keeps_its_keys(key in ".{0,24}", w1 in 0.0f64..=100.0, grow in 0.0f64..=100.0) {
            let w2 = (w1 + grow).min(100.0);
            let bucket = bucket_for_key("iris", &key);
            if policy(&[w1]).choose(bucket).is_some() {
                prop_assert!(policy(&[w2]).choose(bucket).is_some());
            }
        }

        #[test]
        fn buckets_are_in_range_and_deterministic(model in ".{0,12}", key in ".{0,24}") {
            let b = bucket_for_key(&model, &key);
            prop_assert!(b < BUCKETS);
            prop_assert_eq!(b, bucket_for_key(&model, &key));
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a 64 of "<model>\0<key>" mod 10000, computed independently (Python). These must never change, or
        // keys would move between variants when sluice is upgraded.
        assert_eq!(bucket_for_key("iris", "user-1"), 955);
        assert_eq!(bucket_for_key("iris", "user-2"), 9166);
        assert_eq!(bucket_for_key("digits", "abc"), 3139);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(policy(&[60.0, 50.0])
            .validate()
            .unwrap_err()
            .contains("more than 100"));
        assert!(policy(&[-1.0]).validate().is_err());
        let mut p = policy(&[10.0]);
        p.variants[0].name = "stable".into();
        assert!(p.validate().is_err());
        let mut p = policy(&[10.0]);
        p.shadow = Some(ShadowPolicy {
            version: 1,
            sample_rate: 1.5,
        });
        assert!(p.validate().is_err());
        let mut p = policy(&[10.0]);
        p.key_header = Some("bad header".into());
        assert!(p.validate().is_err());
        let p = RoutingPolicy {
            stable: Some(1),
            ..policy(&[5.0])
        };
        assert_eq!(p.versions(), [1, 2].into_iter().collect());
    }
}
