//! What the fleet costs per call: µs and Redis operations per call at concurrency 32, with
//! the local limiter, and with the shared one at lease 1 and 16 (the BENCHMARKS.md figures);
//! first under a quota far above what the loop reaches (the limiter's own cost), then under
//! one the loop saturates (2000/s: calls wait for slots, leases shrink to the caller's slot).
//! Starts its own redis-server on a free loopback port and a loopback upstream.
//!
//! `cargo run --release -p egress-fleet --example fleet_cost`

use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_core::FleetConfig;
use egress_core::{Config, RateLimitConfig, RetryPolicy};
use egress_fleet::Fleet;
use egress_tests::server::{FaultServer, Reply};
use egress_tests::tools::{free_port, redis_server};

const CONCURRENCY: usize = 32;
/// The quotas, and the calls per caller under each.
const RUNS: [(&str, u32, usize); 2] = [("1000000/s", 1000, 200), ("2000/s", 50, 50)];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = free_port();
    let _redis = redis_server(port, None);
    let upstream = FaultServer::spawn(FaultServer::always(Reply::status(200))).await;
    println!("| quota | limiter | µs per call | Redis ops per call |");
    println!("|---|---|---|---|");
    for (run, (rate, burst, per_caller)) in RUNS.into_iter().enumerate() {
        let base = Config::default()
            .with_base_url(upstream.url("/"))
            .with_retry(RetryPolicy::disabled())
            .with_rate_limit(RateLimitConfig::new(rate.parse()?, burst));
        for lease in [0, 1, 16] {
            let (client, fleet) = if lease == 0 {
                (egress_tokio::Builder::new(base.clone()).build()?, None)
            } else {
                let config = base.clone().with_fleet(
                    FleetConfig::new(format!("redis://127.0.0.1:{port}/0"))
                        .with_key_prefix(format!("cost{run}-{lease}"))
                        .with_lease(lease),
                );
                let fleet = Fleet::start(&config.fleet)?;
                assert!(fleet.wait_shared(Duration::from_secs(10)).await);
                let client = egress_tokio::Builder::new(config)
                    .with_coordinator(fleet.clone())
                    .build()?;
                (client, Some(fleet))
            };
            let client = Arc::new(client);
            let started = Instant::now();
            let tasks: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_caller {
                            client
                                .get("/x")
                                .send()
                                .await
                                .expect("the upstream answers 200");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await?;
            }
            let calls = (CONCURRENCY * per_caller) as f64;
            let per_call = started.elapsed().as_secs_f64() * 1e6 / calls;
            let ops = fleet.as_ref().map_or(0, |f| f.redis_ops()) as f64 / calls;
            let name = match lease {
                0 => "local GCRA (no fleet)".to_owned(),
                n => format!("fleet, lease {n}"),
            };
            println!("| {rate}, burst {burst} | {name} | {per_call:.1} | {ops:.3} |");
        }
    }
    Ok(())
}
