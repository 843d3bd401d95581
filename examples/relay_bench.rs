//! switchboard's RTP relay on its own, for bench/run's RTP scenario: opens
//! CALLS relay sessions exactly as a call does (src/media/relay.rs, whose
//! I/O thread relays them), points side A at the
//! generator's port A and side B at its port B (as the SDP of each party
//! would), writes "port_a port_b" per call to PORTS_FILE, prints "ready",
//! and relays until stdin closes; then prints the packets it forwarded.
//!
//!   relay_bench CALLS FIRST_PORT PARTY_PORT_A PARTY_PORT_B PORTS_FILE

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use switchboard::media::{RelayPool, Side};

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
    let mut pool = RelayPool::new(ip, first, first.saturating_add((calls * 8) as u16));
    let mut sessions = Vec::with_capacity(calls);
    let mut out = std::fs::File::create(ports_file)?;
    for _ in 0..calls {
        let s = pool.allocate()?;
        s.set_remote(Side::A, Some(party[0]));
        s.set_remote(Side::B, Some(party[1]));
        writeln!(out, "{} {}", s.ports[0], s.ports[1])?;
        sessions.push(s);
    }
    drop(out);
    println!("ready");
    std::io::stdout().flush()?;
    // Relay until stdin closes (the bench script holds it open).
    for _ in std::io::stdin().lock().lines() {}
    let forwarded: u64 = sessions
        .iter()
        .map(|s| {
            let st = s.stats();
            st.from_caller.forwarded + st.from_callee.forwarded
        })
        .sum();
    println!("forwarded {forwarded}");
    Ok(())
}
