//! switchboard's mixing on its own, for bench/run's monitoring scenario:
//! BRIDGES monitored calls, each three relay endpoints (customer, agent,
//! a listening supervisor) mixed as `call::bridge` mixes them (customer
//! hears the agent, the agent the customer, the supervisor both), every
//! endpoint pointed at the sink's port; prints "ready" and mixes until
//! stdin closes. Nobody sends audio in: each tick decodes nothing and
//! mixes silence, so this measures the mixing, encoding and sending.
//!
//!   mix_bench BRIDGES FIRST_PORT SINK_PORT

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use switchboard::media::{EndpointId, MediaControl, Relay, RelayPool};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bridges, first, sink] = &args[..] else {
        eprintln!("usage: mix_bench BRIDGES FIRST_PORT SINK_PORT");
        std::process::exit(2);
    };
    let number = |s: &str| -> u16 { s.parse().expect("a port or a count") };
    let bridges = u64::from(number(bridges));
    let first = number(first);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let sink = SocketAddr::new(ip, number(sink));
    let pool = RelayPool::new(ip, first, first.saturating_add((bridges * 8) as u16));
    let mut relay = Relay::new(pool, true, Arc::new(|_| {}));
    let now = Instant::now();
    for b in 0..bridges {
        let (customer, agent, supervisor) = (EndpointId(3 * b), EndpointId(3 * b + 1), EndpointId(3 * b + 2));
        for id in [customer, agent, supervisor] {
            relay.open(id, ip, now).map_err(std::io::Error::other)?;
            relay.set_remote(id, Some(sink));
        }
        relay.mix(
            b,
            &[
                (customer, vec![agent], 0),
                (agent, vec![customer], 0),
                (supervisor, vec![customer, agent], 0),
            ],
        );
    }
    println!("ready");
    std::io::stdout().flush()?;
    for _ in std::io::stdin().lock().lines() {}
    Ok(())
}
