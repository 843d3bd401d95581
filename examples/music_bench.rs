//! switchboard's music on hold on its own, for bench/run's music scenario:
//! opens CALLS relay endpoints as waiting callers' legs (src/media/relay.rs),
//! points each at the sink's port (as a caller's SDP would) and plays the
//! music file looped to each, as a queue does (src/media/player.rs: one
//! thread, one frame to every caller every 20 ms); prints "ready" and plays
//! until stdin closes.
//!
//!   music_bench CALLS FIRST_PORT SINK_PORT MUSIC_FILE

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use switchboard::media::{EndpointId, MediaControl, Relay, RelayPool};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [calls, first, sink, music] = &args[..] else {
        eprintln!("usage: music_bench CALLS FIRST_PORT SINK_PORT MUSIC_FILE");
        std::process::exit(2);
    };
    let number = |s: &str| -> u16 { s.parse().expect("a port or a count") };
    let calls = usize::from(number(calls));
    let first = number(first);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let sink = SocketAddr::new(ip, number(sink));
    let pool = RelayPool::new(ip, first, first.saturating_add((calls * 4) as u16));
    let mut relay = Relay::new(pool, true, Arc::new(|_| {}));
    let now = Instant::now();
    for call in 0..calls as u64 {
        let id = EndpointId(call);
        relay.open(id, ip, now).map_err(std::io::Error::other)?;
        relay.set_remote(id, Some(sink));
        relay.play(id, music, 0, true).map_err(std::io::Error::other)?;
    }
    println!("ready {}", relay.sounds_playing());
    std::io::stdout().flush()?;
    for _ in std::io::stdin().lock().lines() {}
    Ok(())
}
