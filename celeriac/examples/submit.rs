//! A Rust monitor: send N `shared_tasks.add` tasks with the celeriac client and wait for every
//! result, printing a few and the throughput.
//!
//! `cargo run --example submit -p celeriac -- [N]` (broker from `CELERY_BROKER_URL`, backend
//! from `CELERY_RESULT_BACKEND`, both defaulting to `redis://127.0.0.1:6379/0`).

use celeriac::{Client, SendOptions};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100);
    let broker =
        std::env::var("CELERY_BROKER_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let backend = std::env::var("CELERY_RESULT_BACKEND").unwrap_or_else(|_| broker.clone());
    let client = Client::connect(&broker, &backend).await?;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let r = client
            .send_task(
                "shared_tasks.add",
                vec![json!(i), json!(1000)],
                Default::default(),
                SendOptions::default(),
            )
            .await?;
        pending.push((i, r));
    }
    let mut ok = 0;
    for (i, r) in &pending {
        let v = r.get(Duration::from_secs(60)).await?;
        assert_eq!(v, json!(i + 1000), "wrong result for task {i}");
        ok += 1;
        if *i < 3 || *i == n - 1 {
            println!("  rust   add({i}, 1000) = {v}");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "rust client: {ok}/{n} results in {secs:.3}s ({:.0} tasks/s)",
        n as f64 / secs
    );
    Ok(())
}
