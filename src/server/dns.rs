//! Finding trunks' providers in DNS (RFC 3263 §4.2): for a trunk whose
//! address is a host name without a port, the SRV records of its
//! transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`), the lowest
//! priority's heaviest target and that target's address; the name's own
//! A/AAAA record (port 5060, 5061 for TLS) when it has no SRV record. Looked
//! up again as the answer's TTL runs out (between 30 s and an hour); the
//! core is told whenever the address changes.

use super::Command;
use crate::config::{Config, Trunk};
use crate::sip::transaction::TransportKind;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const MIN_RECHECK: Duration = Duration::from_secs(30);
const MAX_RECHECK: Duration = Duration::from_secs(3600);

/// Starts a lookup task per trunk that needs one; they end with the runtime
/// (or when the core is gone).
pub fn spawn(config: &Config, commands: mpsc::Sender<Command>) {
    let wanted: Vec<Trunk> = config.trunks.iter().filter(|t| t.srv_name.is_some()).cloned().collect();
    if wanted.is_empty() {
        return;
    }
    let resolver = match resolver(&config.dns_servers) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "no DNS resolver: trunks given by name stay unresolved");
            return;
        }
    };
    for trunk in wanted {
        tokio::spawn(follow(trunk, resolver.clone(), commands.clone()));
    }
}

fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, hickory_resolver::ResolveError> {
    if servers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build());
    }
    let group: NameServerConfigGroup = servers
        .iter()
        .map(|s| NameServerConfig::new(*s, Protocol::Udp))
        .collect::<Vec<_>>()
        .into();
    let config = ResolverConfig::from_parts(None, Vec::new(), group);
    Ok(Resolver::builder_with_config(config, TokioConnectionProvider::default()).build())
}

/// Looks `trunk` up now and whenever its answer expires.
async fn follow(trunk: Trunk, resolver: TokioResolver, commands: mpsc::Sender<Command>) {
    let name = trunk.srv_name.clone().unwrap_or_default();
    let mut current: Option<SocketAddr> = None;
    loop {
        let wait = match lookup(&resolver, &name, trunk.transport).await {
            Ok((address, valid_until)) => {
                if current != Some(address) {
                    current = Some(address);
                    tracing::info!(trunk = %trunk.name, name = %name, address = %address, "trunk address found");
                    let change = Command::TrunkAddress {
                        trunk: trunk.name.clone(),
                        address,
                    };
                    if commands.send(change).await.is_err() {
                        return;
                    }
                }
                valid_until.saturating_duration_since(Instant::now())
            }
            Err(e) => {
                tracing::warn!(trunk = %trunk.name, name = %name, error = %e, "trunk lookup failed");
                MIN_RECHECK
            }
        };
        tokio::time::sleep(wait.clamp(MIN_RECHECK, MAX_RECHECK)).await;
    }
}

/// The provider's address for `name` over `transport`, and until when the
/// answer holds.
async fn lookup(
    resolver: &TokioResolver,
    name: &str,
    transport: TransportKind,
) -> Result<(SocketAddr, Instant), String> {
    let (service, default_port) = match transport {
        TransportKind::Udp => ("_sip._udp", 5060),
        TransportKind::Tcp => ("_sip._tcp", 5060),
        TransportKind::Tls => ("_sips._tcp", 5061),
    };
    let srv_name = format!("{service}.{name}.");
    if let Ok(srv) = resolver.srv_lookup(srv_name.as_str()).await {
        // Lowest priority first, then the heaviest weight (RFC 2782; no
        // random spread among equal weights).
        let best = srv
            .iter()
            .min_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())))
            .map(|r| (r.target().to_utf8(), r.port()));
        if let Some((target, port)) = best {
            let ips = resolver.lookup_ip(target.as_str()).await.map_err(|e| e.to_string())?;
            let ip = ips.iter().next().ok_or("SRV target has no address")?;
            let until = srv.as_lookup().valid_until().min(ips.valid_until());
            return Ok((SocketAddr::new(ip, port), until));
        }
    }
    let ips = resolver
        .lookup_ip(format!("{name}.").as_str())
        .await
        .map_err(|e| e.to_string())?;
    let ip = ips.iter().next().ok_or("no address")?;
    Ok((SocketAddr::new(ip, default_port), ips.valid_until()))
}
