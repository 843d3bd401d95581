//! Trunks to SIP providers and the DIDs that come in through them, as
//! checked at load: unique names, a reachable address, what each account
//! names exists.

use super::network::IpNetwork;
use super::schema::{DidSection, RemoteExtensionSection, TrunkSection};
use super::{Account, Validator};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A SIP provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    /// Where requests to the provider go: resolved at load, or (for a
    /// host name given without a port) found by DNS SRV at run time and
    /// unspecified (0.0.0.0) until then.
    pub address: SocketAddr,
    /// The host name to look up with SRV (RFC 3263 §4.2), when the address
    /// is a name without a port.
    pub srv_name: Option<String>,
    /// Requests go through an outbound proxy (then at `address`) with a
    /// Route header naming it.
    pub via_proxy: bool,
    /// Only challenges of this realm are answered.
    pub realm: Option<String>,
    pub transport: crate::sip::transaction::TransportKind,
    /// For TLS: the CA file the provider's certificate is checked against.
    pub ca_file: Option<std::path::PathBuf>,
    /// The host as written (for Request-URIs and the From domain).
    pub host: String,
    pub username: String,
    pub auth_username: String,
    pub password: String,
    pub register: bool,
    pub expires_s: u32,
    /// OPTIONS to the provider this often while registered (0: never).
    pub keepalive_s: u32,
    pub from_user: String,
    pub from_domain: String,
    /// Sources whose INVITEs are this provider's.
    pub inbound: Vec<IpNetwork>,
    /// 0: no limit.
    pub max_channels: u32,
    /// Where the caller ID goes toward the provider.
    pub caller_id_in: CallerIdIn,
    /// How called numbers are written toward the provider.
    pub number_format: super::NumberFormat,
}

/// Where a trunk carries the caller ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerIdIn {
    From,
    /// P-Asserted-Identity (RFC 3325); From keeps the trunk's user.
    Pai,
    Both,
}

impl Trunk {
    /// The provider as Request-URIs name it: its address, or through an
    /// outbound proxy the name written in the config.
    pub fn uri_host(&self) -> String {
        if self.via_proxy {
            self.host.clone()
        } else {
            crate::sip::dialog::host_port(self.address)
        }
    }

    /// The Route header naming the outbound proxy, if there is one.
    pub fn proxy_route(&self) -> Option<String> {
        self.via_proxy
            .then(|| format!("<sip:{};lr>", crate::sip::dialog::host_port(self.address)))
    }

    /// Whether a request from `source` comes from this provider: its
    /// address (IP and port), or a network of `inbound_ips`.
    pub fn sends_from(&self, source: SocketAddr) -> bool {
        source == self.address || self.inbound.iter().any(|n| n.contains(source.ip()))
    }
}

/// Where calls to an inbound number go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DidTarget {
    /// A user, group or queue of the account (the dialplan runs with it
    /// as the called number).
    Number(String),
    /// The account's dialplan, with the DID as the called number.
    Dialplan,
}

/// A number of the account that rings somewhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteExtension {
    pub number: String,
    pub name: String,
    pub target: RemoteTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteTarget {
    /// A SIP URI, sent to over UDP at `address` (resolved at load).
    Uri { uri: String, address: SocketAddr },
    /// An external number, called through the account's trunks.
    Number(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Did {
    pub number: String,
    pub to: DidTarget,
}

impl Validator<'_> {
    pub(super) fn trunks(&mut self, raw: Vec<TrunkSection>) -> Vec<Trunk> {
        let mut out: Vec<Trunk> = Vec::new();
        for t in raw {
            let name = t.name.get_ref().trim().to_string();
            if name.is_empty() || out.iter().any(|o| o.name == name) {
                self.error(t.name.span(), format!("trunk name {name:?} is empty or used twice"));
            }
            use crate::sip::transaction::TransportKind;
            let transport = match t.transport.get_ref().to_ascii_lowercase().as_str() {
                "udp" => TransportKind::Udp,
                "tcp" => TransportKind::Tcp,
                "tls" => TransportKind::Tls,
                other => {
                    self.error(
                        t.transport.span(),
                        format!("trunk transport {other:?}: expected \"udp\", \"tcp\" or \"tls\""),
                    );
                    TransportKind::Udp
                }
            };
            let ca_file = t.ca_file.as_ref().map(|f| std::path::PathBuf::from(f.get_ref()));
            if let (Some(path), Some(span)) = (&ca_file, t.ca_file.as_ref().map(|f| f.span())) {
                if let Err(e) = crate::sip::tls::client_config(Some(path)) {
                    self.error(span, e.to_string());
                }
            }
            let written = t.address.get_ref().trim();
            let proxy = t
                .outbound_proxy
                .as_ref()
                .map(|p| (p.span(), resolve(p.get_ref().trim())));
            let (host, address, srv_name) = match (proxy, srv_candidate(written)) {
                // Through the proxy: the provider's name is only written in
                // Request-URIs and From/To.
                (Some((_, Ok((_, proxy)))), _) => (written.to_string(), proxy, None),
                (Some((span, Err(e))), _) => {
                    self.error(span, format!("trunk {name:?} outbound_proxy: {e}"));
                    continue;
                }
                (None, candidate) => match candidate {
                    // Looked up by the daemon, with SRV then A/AAAA.
                    Some(host) => (host.clone(), SocketAddr::from(([0, 0, 0, 0], 0)), Some(host)),
                    None => match resolve(written) {
                        Ok((host, address)) => (host, address, None),
                        Err(e) => {
                            self.error(t.address.span(), format!("trunk {name:?} address {written:?}: {e}"));
                            continue;
                        }
                    },
                },
            };
            if t.register && (t.username.is_empty() || t.password.is_empty()) {
                self.error(
                    t.name.span(),
                    format!("trunk {name:?} registers but has no username or password"),
                );
            }
            let caller_id_in = match t.caller_id_in.get_ref().as_str() {
                "from" => CallerIdIn::From,
                "pai" => CallerIdIn::Pai,
                "both" => CallerIdIn::Both,
                other => {
                    self.error(
                        t.caller_id_in.span(),
                        format!("caller_id_in {other:?}: expected \"from\", \"pai\" or \"both\""),
                    );
                    CallerIdIn::From
                }
            };
            let number_format = self.number_format(&t);
            let mut inbound = Vec::new();
            for n in &t.inbound_ips {
                match n.get_ref().parse::<IpNetwork>() {
                    Ok(net) => inbound.push(net),
                    Err(e) => self.error(n.span(), format!("inbound_ips: {e}")),
                }
            }
            out.push(Trunk {
                auth_username: t.auth_username.unwrap_or_else(|| t.username.clone()),
                from_user: t.from_user.unwrap_or_else(|| t.username.clone()),
                from_domain: t.from_domain.unwrap_or_else(|| host.clone()),
                via_proxy: t.outbound_proxy.is_some(),
                realm: t.realm,
                name,
                address,
                srv_name,
                transport,
                ca_file,
                host,
                username: t.username,
                password: t.password,
                register: t.register,
                expires_s: t.expires_s.clamp(60, 86_400),
                keepalive_s: t.keepalive_s,
                inbound,
                max_channels: t.max_channels,
                caller_id_in,
                number_format,
            });
        }
        out
    }

    fn number_format(&mut self, t: &TrunkSection) -> super::NumberFormat {
        use super::NumberFormat;
        let Some(format) = &t.number_format else {
            return NumberFormat::AsDialled;
        };
        let parts = || {
            (
                t.country_code.clone().unwrap_or_default(),
                t.national_prefix.clone().unwrap_or_else(|| "0".into()),
                t.international_prefix.clone().unwrap_or_else(|| "00".into()),
            )
        };
        let needs_country = |v: &mut Self| {
            if t.country_code
                .as_deref()
                .is_none_or(|c| c.is_empty() || !c.chars().all(|d| d.is_ascii_digit()))
            {
                v.error(
                    format.span(),
                    format!(
                        "number_format {:?} needs country_code (digits, e.g. \"34\")",
                        format.get_ref()
                    ),
                );
            }
        };
        match format.get_ref().as_str() {
            "as_dialled" => NumberFormat::AsDialled,
            "e164" => {
                needs_country(self);
                let (country_code, national_prefix, international_prefix) = parts();
                NumberFormat::E164 {
                    country_code,
                    national_prefix,
                    international_prefix,
                }
            }
            "national" => {
                needs_country(self);
                let (country_code, national_prefix, international_prefix) = parts();
                NumberFormat::National {
                    country_code,
                    national_prefix,
                    international_prefix,
                }
            }
            other => {
                self.error(
                    format.span(),
                    format!("number_format {other:?}: expected \"as_dialled\", \"e164\" or \"national\""),
                );
                NumberFormat::AsDialled
            }
        }
    }

    /// An account's trunk names (each must exist) and DIDs.
    pub(super) fn account_trunks(
        &mut self,
        names: Vec<toml::Spanned<String>>,
        dids: Vec<DidSection>,
        trunks: &[Trunk],
        account: &Account,
    ) -> (Vec<String>, Vec<Did>) {
        let mut out = Vec::new();
        for n in names {
            if !trunks.iter().any(|t| &t.name == n.get_ref()) {
                self.error(n.span(), format!("no trunk named {:?}", n.get_ref()));
            }
            out.push(n.into_inner());
        }
        let mut numbers: Vec<Did> = Vec::new();
        for d in dids {
            let number = d.number.get_ref().trim().to_string();
            if number.is_empty() || numbers.iter().any(|x| x.number == number) {
                self.error(d.number.span(), format!("DID {number:?} is empty or listed twice"));
            }
            let to = match d.to.get_ref().trim() {
                "dialplan" => DidTarget::Dialplan,
                n if account.user(n).is_some() || account.group(n).is_some() || account.queue(n).is_some() => {
                    DidTarget::Number(n.to_string())
                }
                other => {
                    self.error(
                        d.to.span(),
                        format!("DID {number:?} goes to {other:?}: not a user, group or queue of the account nor \"dialplan\""),
                    );
                    continue;
                }
            };
            numbers.push(Did { number, to });
        }
        (out, numbers)
    }
}

impl Validator<'_> {
    /// An account's remote extensions: numbers not used by its users or
    /// groups, targets that are a reachable SIP URI or a number.
    pub(super) fn remote_extensions(
        &mut self,
        raw: Vec<RemoteExtensionSection>,
        account: &Account,
    ) -> Vec<RemoteExtension> {
        let mut out: Vec<RemoteExtension> = Vec::new();
        for r in raw {
            let number = r.number.get_ref().trim().to_string();
            let taken = account.user(&number).is_some()
                || account.group(&number).is_some()
                || account.queue(&number).is_some()
                || out.iter().any(|o| o.number == number);
            if number.is_empty() || taken {
                self.error(
                    r.number.span(),
                    format!("remote extension {number:?} is empty or its number is already used"),
                );
                continue;
            }
            let written = r.target.get_ref().trim();
            let target = if let Some(rest) = written.strip_prefix("sip:") {
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split(';').next().unwrap_or(host);
                match resolve(host) {
                    Ok((_, address)) => RemoteTarget::Uri {
                        uri: written.to_string(),
                        address,
                    },
                    Err(e) => {
                        self.error(r.target.span(), format!("remote extension {number:?}: {e}"));
                        continue;
                    }
                }
            } else if !written.is_empty() && written.trim_start_matches('+').chars().all(|c| c.is_ascii_digit()) {
                RemoteTarget::Number(written.to_string())
            } else {
                self.error(
                    r.target.span(),
                    format!("remote extension {number:?}: target {written:?} is neither sip:user@host nor a number"),
                );
                continue;
            };
            out.push(RemoteExtension {
                name: if r.name.is_empty() { number.clone() } else { r.name },
                number,
                target,
            });
        }
        out
    }
}

/// A host name without a port: found with DNS SRV (RFC 3263 §4.2).
fn srv_candidate(written: &str) -> Option<String> {
    let is_name = written.parse::<IpAddr>().is_err()
        && written
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_err()
        && written.parse::<SocketAddr>().is_err();
    (is_name && !written.contains(':') && !written.is_empty()).then(|| written.to_string())
}

/// `host[:port]` (IPv6 in brackets) → the host as written and its first
/// address.
fn resolve(written: &str) -> Result<(String, SocketAddr), String> {
    if let Ok(a) = written.parse::<SocketAddr>() {
        return Ok((a.ip().to_string(), a));
    }
    if let Ok(ip) = written.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Ok((ip.to_string(), SocketAddr::new(ip, 5060)));
    }
    let (host, port) = match written.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (written, 5060),
    };
    let first = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or("resolves to no address")?;
    Ok((host.to_string(), first))
}
