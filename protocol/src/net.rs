//! Networks written as CIDR, for the allow-lists of rate limits (daemon and bridge alike).

use std::net::IpAddr;

/// Networks written as CIDR (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// Parses a list; the error names the entry.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in list {
            let item = item.as_ref().trim();
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("{item:?} is not an address or network (a.b.c.d/len, x::/len)"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => {
                    l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| format!("{item:?}: the prefix length must be 0..={max}"))?
                }
            };
            out.push((addr, len));
        }
        Ok(Self(out))
    }

    /// Loopback, IPv4 and IPv6: the default trusted networks (a proxy or bridge on the
    /// same host speaks for many users).
    pub fn loopback() -> Self {
        Self(vec![(IpAddr::from([127, 0, 0, 0]), 8), (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128)])
    }

    /// The address a request comes from: `peer`, or, when `peer` is in these (trusted)
    /// networks, the nearest address of `X-Forwarded-For` that is not (read from the
    /// right: the part of the header that trusted proxies wrote). Unparsable entries end
    /// the walk at the last trusted hop.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    /// Whether `ip` lies in one of the networks (an IPv4 address mapped into IPv6 counts
    /// as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_trusted_proxies_is_found() {
        let trusted = Networks::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(trusted.client_address(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"), "an untrusted peer's header is ignored");
        assert_eq!(trusted.client_address(ip("127.0.0.1"), Some("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(
            trusted.client_address(ip("127.0.0.1"), Some("6.6.6.6, 198.51.100.7, 10.1.1.1")),
            ip("198.51.100.7"),
            "a forged left part is not believed"
        );
        assert_eq!(trusted.client_address(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(trusted.client_address(ip("127.0.0.1"), Some("junk")), ip("127.0.0.1"));
        assert!(Networks::loopback().contains(ip("::1")) && Networks::loopback().contains(ip("127.8.9.1")));
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Networks::parse(&["10.0.0.0/8", "192.168.1.0/25", "2001:db8::/32", "203.0.113.7"]).unwrap();
        let has = |s: &str| n.contains(s.parse().unwrap());
        assert!(has("10.255.1.2") && has("192.168.1.127") && has("2001:db8::1") && has("203.0.113.7"));
        assert!(!has("11.0.0.1") && !has("192.168.1.128") && !has("2001:db9::1") && !has("203.0.113.8"));
        assert!(has("::ffff:10.1.2.3"), "IPv4-mapped IPv6 counts as IPv4");
        assert!(Networks::parse(&["10.0.0.0/33"]).unwrap_err().contains("0..=32"));
        assert!(Networks::parse(&["example.com"]).is_err());
        assert!(Networks::parse(&["0.0.0.0/0"]).unwrap().contains("8.8.8.8".parse().unwrap()));
    }
}
