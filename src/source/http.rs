//! HTTP push: `POST /api/v1/samples` with a JSON batch.
//!
//! ```json
//! {"samples": [{"asset": "pump-1", "signal": "temp", "ts": "2026-01-01T00:00:00Z",
//!               "value": 71.5, "quality": "good"}]}
//! ```
//!
//! `ts` is RFC 3339 or integer milliseconds since the epoch; `quality` is
//! optional (`good`). A batch is validated whole before any of it is
//! accepted: one bad sample rejects the batch with every problem listed, so
//! a client never has to guess which part landed.

use super::{Batch, Source, SourceKind};
use std::collections::HashSet;
use crate::plant::Plant;
use serde::Deserialize;
use std::collections::BTreeMap;
use usan_core::model::{Quality, Sample, Timestamp};

/// `[[sources]] type = "http"`: enables the push endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Source name.
    pub name: String,
}

impl SourceKind for HttpSourceConfig {
    const NAME: &'static str = "http";
    const SUMMARY: &'static str = "Takes samples pushed to `POST /api/v1/samples` (served by the API).";

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, _assets: &HashSet<&str>) -> Vec<String> {
        Vec::new()
    }

    /// None: the API serves it.
    fn build(&self, _plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
        Ok(None)
    }
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The samples, any assets, any order.
    pub samples: Vec<PushSample>,
}

/// A timestamp as RFC 3339 text or epoch milliseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PushTime {
    /// Milliseconds since the Unix epoch.
    Millis(i64),
    /// RFC 3339.
    Text(String),
}

/// One pushed sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSample {
    /// Asset id.
    pub asset: String,
    /// Signal name.
    pub signal: String,
    /// When measured.
    pub ts: PushTime,
    /// The value; `null` is refused.
    pub value: Option<f64>,
    /// Quality, `good` when absent.
    #[serde(default)]
    pub quality: Quality,
}

/// Validate a pushed batch against the plant and split it per asset.
///
/// # Errors
/// Every problem found (up to 20 listed, then a count).
pub fn validate(
    request: PushRequest,
    plant: &Plant,
    latest_allowed: Timestamp,
    max_samples: usize,
) -> Result<Vec<Batch>, Vec<String>> {
    let mut problems = Vec::new();
    if request.samples.len() > max_samples {
        return Err(vec![format!(
            "{} samples in one request; at most {max_samples} (`[server] max_batch_samples`)",
            request.samples.len()
        )]);
    }
    let mut per_asset: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    for (i, s) in request.samples.into_iter().enumerate() {
        let Some(&asset) = plant.asset_index.get(&s.asset) else {
            problems.push(format!("samples[{i}]: unknown asset `{}`", clip(&s.asset)));
            continue;
        };
        let Some(&signal) = plant.assets[asset].signal_index.get(&s.signal) else {
            problems.push(format!("samples[{i}]: asset `{}` has no signal `{}`", s.asset, clip(&s.signal)));
            continue;
        };
        let ts = match &s.ts {
            PushTime::Millis(ms) => Some(Timestamp(*ms)),
            PushTime::Text(text) => {
                chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| Timestamp(t.timestamp_millis()))
            }
        };
        let Some(ts) = ts else {
            problems.push(format!("samples[{i}]: ts is not RFC 3339 or epoch milliseconds"));
            continue;
        };
        if ts > latest_allowed {
            problems.push(format!("samples[{i}]: ts {} is too far in the future", ts.0));
            continue;
        }
        if ts < Timestamp(0) {
            problems.push(format!("samples[{i}]: ts {} is before 1970-01-01", ts.0));
            continue;
        }
        match s.value {
            Some(value) if value.is_finite() => {
                per_asset.entry(asset).or_default().push(Sample { signal, ts, value, quality: s.quality });
            }
            _ => problems.push(format!("samples[{i}]: value must be a finite number")),
        }
    }
    if problems.is_empty() {
        Ok(per_asset.into_iter().map(|(asset, samples)| Batch::Samples { asset, samples }).collect())
    } else {
        let total = problems.len();
        problems.truncate(20);
        if total > 20 {
            problems.push(format!("... and {} more", total - 20));
        }
        Err(problems)
    }
}

/// A name as quoted in an error: at most 64 characters, escaped, so an
/// answer never echoes a huge or hostile string.
fn clip(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name.chars().take(MAX).flat_map(char::escape_debug).collect();
    if name.chars().count() > MAX {
        out.push_str("...");
    }
    out
}
