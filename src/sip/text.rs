//! Small text writers for the per-request path, where `format!` and
//! `Display` cost more than the work they do.

use std::net::{IpAddr, SocketAddr};

/// `n` in decimal, written into `buf`: the digits are its tail.
pub fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    let mut rest = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u32) {
    let mut buf = [0u8; 10];
    out.extend(decimal(n, &mut buf).iter().map(|&d| char::from(d)));
}

/// Appends `ip` as `Display` writes it; IPv4 digit by digit.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u32::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as `Display` writes it; IPv6 (brackets, scope id)
/// through `Display` itself.
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(':');
            push_decimal(out, u32::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_is_written_as_display_writes_it() {
        for n in [0, 7, 10, 5060, 65535, u32::MAX] {
            let mut s = String::from("x");
            super::push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "192.0.2.7:5060",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::1]:5070",
            "[::1]:1",
            "[fe80::1%2]:5060",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            super::push_socket_addr(&mut s, addr);
            assert_eq!(s, addr.to_string());
        }
    }
}
