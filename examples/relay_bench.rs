//! switchboard's RTP relay on its own, for bench/run's RTP scenario: opens
//! two endpoints per call and links them both ways exactly as a call's
//! bridge does (src/media/relay.rs, whose I/O thread relays them), points
//! the caller's endpoint at the generator's port A and the callee's at its
//! port B (as the SDP of each party would), writes "port_a port_b" per
//! call to PORTS_FILE, prints "ready", and relays until stdin closes; then
//! prints the packets it forwarded.
//!
//!   relay_bench CALLS FIRST_PORT PARTY_PORT_A PARTY_PORT_B PORTS_FILE

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use switchboard::media::{EndpointId, MediaControl, Relay, RelayPool};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [calls, first, party_a, party_b, ports_file] = &args[..] else {
        eprintln!("usage: relay_bench CALLS FIRST_PORT PARTY_PORT_A PARTY_PORT_B PORTS_FILE");
        std::process::exit(2);
    };
    let number = |s: &str| -> u16 { s.parse().expect("a port or a count") };
    let calls = usize::from(number(calls));
    let first = number(first);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let party = [
        SocketAddr::new(ip, number(party_a)),
        SocketAddr::new(ip, number(party_b)),
    ];
    let pool = RelayPool::new(ip, first, first.saturating_add((calls * 8) as u16));
    let mut relay = Relay::new(pool, true, Arc::new(|_| {}));
    let mut out = std::fs::File::create(ports_file)?;
    let now = Instant::now();
    for call in 0..calls as u64 {
        let (a, b) = (EndpointId(2 * call), EndpointId(2 * call + 1));
        let la = relay.open(a, ip, now).map_err(std::io::Error::other)?;
        let lb = relay.open(b, ip, now).map_err(std::io::Error::other)?;
        relay.set_remote(a, Some(party[0]));
        relay.set_remote(b, Some(party[1]));
        relay.link(a, b);
        relay.link(b, a);
        writeln!(out, "{} {}", la.port(), lb.port())?;
    }
    drop(out);
    println!("ready");
    std::io::stdout().flush()?;
    // Relay until stdin closes (the bench script holds it open).
    for _ in std::io::stdin().lock().lines() {}
    let forwarded: u64 = (0..2 * calls as u64)
        .map(|e| relay.stats(EndpointId(e)).forwarded)
        .sum();
    println!("forwarded {forwarded}");
    Ok(())
}
