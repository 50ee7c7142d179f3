//! Load generator for many models: `concurrency` clients send the iris request to `m0000`…`m{models-1}` chosen by
//! a Zipf distribution (exponent `s`) until `requests` were sent, and print one JSON line: throughput, client
//! latencies (all, and split into hits and waits), the hit ratio. A request "waited" when its model was not
//! resident: the server counts those (`sluice_model_first_request_wait_seconds_count`), and since a load takes
//! milliseconds against a hit's tenth of one, the slowest that many requests are the waits.
//!
//! cargo run --release --example zipf -- <base-url> <models> <concurrency> <requests> <s> [seed]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const BODY: &str = r#"{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;

fn cumulative(models: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=models).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn waited_count(client: &reqwest::Client, base: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("sluice_model_first_request_wait_seconds_count ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: zipf <base-url> <models> <concurrency> <requests> <s> [seed]";
    let base = args.get(1).expect(usage).trim_end_matches('/').to_owned();
    let models: usize = args.get(2).expect(usage).parse().unwrap();
    let concurrency: usize = args.get(3).expect(usage).parse().unwrap();
    let requests: usize = args.get(4).expect(usage).parse().unwrap();
    let s: f64 = args.get(5).expect(usage).parse().unwrap();
    let seed: u64 = args.get(6).map_or(1, |v| v.parse().unwrap());
    let cdf = Arc::new(cumulative(models, s));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let waited_before = waited_count(&client, &base).await;
    let per_client = requests / concurrency;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (client, base, cdf) = (client.clone(), base.clone(), Arc::clone(&cdf));
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + c as u64);
                let mut latencies = Vec::with_capacity(per_client);
                let mut failed = 0usize;
                let mut first_failure = None;
                for _ in 0..per_client {
                    let u: f64 = rng.random();
                    let model = cdf.partition_point(|p| *p < u).min(cdf.len() - 1);
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{base}/v2/models/m{model:04}/infer"))
                        .header("content-type", "application/json")
                        .body(BODY)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        Ok(r) => {
                            failed += 1;
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            first_failure.get_or_insert(format!("{status}: {body}"));
                        }
                        Err(e) => {
                            failed += 1;
                            first_failure.get_or_insert(e.to_string());
                        }
                    }
                }
                (latencies, failed, first_failure)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    let mut failed = 0;
    for task in tasks {
        let (l, f, first) = task.await.unwrap();
        latencies.extend(l);
        failed += f;
        if let Some(failure) = first {
            eprintln!("a failed request: {failure}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let waited = (waited_count(&client, &base).await - waited_before) as usize;
    latencies.sort();
    let split = latencies.len().saturating_sub(waited);
    let (hits, waits) = latencies.split_at(split);
    println!(
        "{}",
        serde_json::json!({
            "models": models, "concurrency": concurrency, "s": s,
            "requests": latencies.len() + failed, "failed": failed,
            "throughput_rps": (latencies.len() as f64 / elapsed).round(),
            "hit_ratio": hits.len() as f64 / latencies.len().max(1) as f64,
            "all_p50_ms": percentile(&latencies, 0.5), "all_p99_ms": percentile(&latencies, 0.99),
            "hit_p50_ms": percentile(hits, 0.5), "hit_p99_ms": percentile(hits, 0.99),
            "wait_p50_ms": percentile(waits, 0.5), "wait_p99_ms": percentile(waits, 0.99),
        })
    );
}
