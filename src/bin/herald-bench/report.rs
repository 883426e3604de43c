//! The one-line JSON result every scenario prints.
//!
//! Every report carries the standard fields (`scenario`,
//! `deliveries_per_sec`, `publishes_per_sec`, `p50_us`, `p99_us`,
//! `p999_us`, `lost`), zero where a scenario does not measure them, plus
//! its own fields.

use serde_json::{Map, Value};

use crate::hist::Histogram;

#[derive(Debug, Clone)]
pub struct Report(pub Map<String, Value>);

/// Rounds to `digits` decimals so the JSON stays readable.
pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        let mut m = Map::new();
        m.insert("scenario".into(), scenario.into());
        for k in [
            "deliveries_per_sec",
            "publishes_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
        ] {
            m.insert(k.into(), 0.0.into());
        }
        m.insert("lost".into(), 0.into());
        Report(m)
    }

    pub fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.0.insert(key.into(), v.into());
        self
    }

    /// Sets a rate or duration rounded to one decimal.
    pub fn set_f(&mut self, key: &str, v: f64) -> &mut Self {
        self.set(key, round(v, 1))
    }

    /// Sets the latency fields from `h`.
    pub fn latency(&mut self, h: &Histogram) -> &mut Self {
        self.set_f("p50_us", h.quantile_us(0.50))
            .set_f("p90_us", h.quantile_us(0.90))
            .set_f("p99_us", h.quantile_us(0.99))
            .set_f("p999_us", h.quantile_us(0.999))
            .set_f("max_us", h.max_us())
            .set_f("mean_us", h.mean_us())
            .set("latency_samples", h.count())
    }

    pub fn f64(&self, key: &str) -> f64 {
        self.0.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    pub fn line(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}
