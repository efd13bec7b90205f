//! Outbound HTTP (`wasi:http/outgoing-handler`): denied unless the version's
//! metadata grants it.
//!
//! ```json
//! {"allowed_outbound_hosts": ["https://api.example.com", "https://*.internal.example:8443", "http://10.0.0.7:8080"],
//!  "allow_private_networks": false}
//! ```
//!
//! Each entry is `scheme://host[:port]`:
//! - scheme: `http`, `https`, or `*` for both;
//! - host: an exact name, an IP address (IPv6 in brackets: `[fd00::7]`),
//!   `*.suffix`, which matches any name ending in `.suffix` (not `suffix`
//!   itself), or a CIDR block: `10.0.0.0/8`, or IPv6 with the prefix length
//!   inside the brackets, `[fd00::/8]`; the address must be the block's
//!   first (no host bits set);
//! - port: a number, `*` for any, or left out for the scheme's default (80,
//!   443; both for `*://`). `http://10.0.0.0/8:443` is the block on port 443.
//!
//! A request passes two checks, and is refused with wasi:http's
//! `HTTP-request-denied` error in the guest (logged with the reason and
//! counted) when it fails either:
//!
//! 1. **The name** ([`OutboundPolicy::admit`]): the request's scheme, host
//!    and port as the guest gave them must match an entry. A name matches
//!    exact and `*.suffix` entries; an IP address in the URI matches the
//!    entries naming that address or a CIDR holding it (a CIDR admits no
//!    names). The cloud metadata names (`metadata.google.internal`) match
//!    only an entry naming them exactly, never a `*.suffix`.
//! 2. **The address** ([`OutboundPolicy::permits_address`]): a name is
//!    resolved once, each address is checked, and the connection is made
//!    only to the addresses that passed, one after the other, never to a
//!    name: nothing is looked up again between the check and the connect,
//!    so a name that changes its answer (DNS rebinding) cannot slip past.
//!    An IP address in the URI is checked the same way, without a lookup.
//!
//! Addresses are classified (an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`,
//! or a NAT64 one, `64:ff9b::a.b.c.d`, as its IPv4 address) into:
//!
//! | class | ranges | granted by |
//! |---|---|---|
//! | public | everything else | the name check alone |
//! | private | 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, fec0::/10 | an entry naming the address or a CIDR holding it, or `"allow_private_networks": true` |
//! | loopback | 127/8, ::1 | an entry naming the address itself |
//! | unspecified | 0/8, :: | the same |
//! | link-local | 169.254/16, fe80::/10 | the same |
//! | multicast | 224/4, ff00::/8 | the same |
//! | broadcast, reserved | 255.255.255.255, 240/4 | the same |
//! | metadata | 169.254.169.254, 169.254.170.2, 169.254.170.23, fd00:ec2::254, fd00:ec2::23 | the same |
//!
//! The entry granting an address must have the request's scheme and port
//! (`http://127.0.0.1:8080` grants 127.0.0.1 to `http` on 8080, whichever
//! entry admitted the name). A CIDR grants the public and private addresses
//! it holds, never the special ones (loopback to metadata), which only an
//! entry naming the single address grants; a CIDR inside a special range
//! (`127.0.0.0/8`) is refused at deploy for that reason.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;

/// The hosts a version may call. Empty: none (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<OutboundRule>,
    /// `"allow_private_networks": true`: private addresses need no entry
    /// of their own.
    allow_private_networks: bool,
}

/// Names that reach a cloud's metadata service, matched only by an entry
/// that names them exactly.
const METADATA_NAMES: &[&str] = &["metadata.google.internal"];

/// Why a request was refused, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No entry matches the request's scheme, host and port.
    NameNotAllowed,
    /// The name passed, but every address it stands for was refused: each
    /// with its class.
    AddressRefused(Vec<(IpAddr, AddressClass)>),
}

impl Denial {
    /// `name not allowed`, or `address refused: loopback` (the first
    /// refused address's class).
    pub fn reason(&self) -> String {
        match self {
            Denial::NameNotAllowed => "name not allowed".to_string(),
            Denial::AddressRefused(refused) => match refused.first() {
                Some((_, class)) => format!("address refused: {class}"),
                None => "address refused: the name resolved to no address".to_string(),
            },
        }
    }

    /// The refused addresses, `127.0.0.1, ::1` (empty for a name).
    pub fn addresses(&self) -> String {
        match self {
            Denial::NameNotAllowed => String::new(),
            Denial::AddressRefused(refused) => refused
                .iter()
                .map(|(ip, _)| ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A request whose name passed [`OutboundPolicy::admit`]: what its
/// addresses are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// `http` or `https`.
    pub scheme: String,
    pub port: u16,
    /// The host as the request gave it, for the lookup and TLS: a name, or
    /// an address (IPv6 without brackets).
    pub host: String,
    /// The host's address when the request named one: no lookup.
    pub ip: Option<IpAddr>,
}

impl OutboundPolicy {
    /// Parses every entry; the first bad one fails the whole list.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|entry| OutboundRule::parse(entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy {
            rules,
            allow_private_networks: false,
        })
    }

    /// The policy with `"allow_private_networks"` set to `allow`.
    pub fn allowing_private_networks(mut self, allow: bool) -> Self {
        self.allow_private_networks = allow;
        self
    }

    /// Whether the name check passes for `scheme://host:port` (the address
    /// check comes after, see [`OutboundPolicy::permits_address`]).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.admit(scheme, host, port).is_ok()
    }

    /// The name check: whether an entry matches the request's scheme, host
    /// (a name, or an address, IPv6 in brackets as in a URI) and port.
    pub fn admit(&self, scheme: &str, host: &str, port: Option<u16>) -> Result<Admitted, Denial> {
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = port.or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        }) else {
            return Err(Denial::NameNotAllowed);
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip = bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        let name = normalise_host(host);
        let admitted = self
            .rules
            .iter()
            .filter(|rule| rule.scheme_and_port_match(&scheme, port))
            .any(|rule| match (&rule.host, ip) {
                (HostRule::Ip(allowed), Some(ip)) => *allowed == ip,
                (HostRule::Cidr(cidr), Some(ip)) => cidr.contains(ip),
                (HostRule::Exact(allowed), None) => *allowed == name,
                (HostRule::Subdomains(suffix), None) => {
                    name.len() > suffix.len()
                        && name.ends_with(suffix.as_str())
                        && !METADATA_NAMES.contains(&name.as_str())
                }
                _ => false,
            });
        if !admitted {
            return Err(Denial::NameNotAllowed);
        }
        Ok(Admitted {
            scheme,
            port,
            host: bare.to_string(),
            ip,
        })
    }

    /// The address check: whether `admitted` may connect to `ip`. Public
    /// addresses pass; private ones need an entry naming them or a CIDR
    /// holding them (with the request's scheme and port), or
    /// `allow_private_networks`; special ones (loopback, link-local,
    /// metadata, ...) an entry naming that very address.
    pub fn permits_address(&self, admitted: &Admitted, ip: IpAddr) -> Result<(), AddressClass> {
        let ip = ip.to_canonical();
        let class = classify(ip);
        let mut granting = self
            .rules
            .iter()
            .filter(|rule| rule.scheme_and_port_match(&admitted.scheme, admitted.port));
        let granted = match class {
            AddressClass::Public => true,
            AddressClass::Private => {
                self.allow_private_networks
                    || granting.any(|rule| match &rule.host {
                        HostRule::Ip(allowed) => *allowed == ip,
                        HostRule::Cidr(cidr) => cidr.contains(ip),
                        _ => false,
                    })
            }
            _ => granting.any(|rule| rule.host == HostRule::Ip(ip)),
        };
        if granted { Ok(()) } else { Err(class) }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What an address is, for the address check (see the module docs' table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Private,
    Loopback,
    Unspecified,
    LinkLocal,
    Multicast,
    Broadcast,
    Reserved,
    Metadata,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
            AddressClass::Metadata => "metadata",
        })
    }
}

/// The metadata services' addresses: AWS's instance metadata (IPv4 and
/// IPv6; GCP and Azure use the IPv4 one too), ECS task credentials, EKS
/// Pod Identity (IPv4 and IPv6).
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
];
const METADATA_V6: &[Ipv6Addr] = &[
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

/// The class of `ip`. IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, the old compatible `::a.b.c.d`) is classed as its
/// IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddressClass::Metadata
    } else if a == 0 {
        AddressClass::Unspecified
    } else if a == 127 {
        AddressClass::Loopback
    } else if a == 169 && b == 254 {
        AddressClass::LinkLocal
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if (224..240).contains(&a) {
        AddressClass::Multicast
    } else if a >= 240 {
        AddressClass::Reserved
    } else if a == 10
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 100 && (64..128).contains(&b))
    {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |s: &[u16]| Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    if METADATA_V6.contains(&ip) {
        AddressClass::Metadata
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
        // NAT64's well-known prefix, and the deprecated IPv4-compatible
        // form (`::` and `::1` are handled above).
        classify_v4(embedded(&segments))
    } else if segments[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if segments[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if segments[0] & 0xfe00 == 0xfc00 || segments[0] & 0xffc0 == 0xfec0 {
        // Unique local, and the deprecated site-local.
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// Answers a name with its addresses; the production one is the system's
/// resolver ([`Resolver::system`]). Tests give their own through
/// [`crate::gateway::Gateway::with_outbound_resolver`].
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a name, never an address).
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The resolver outbound requests use: shared, the system's by default.
#[derive(Clone)]
pub struct Resolver(Arc<dyn Resolve>);

impl Resolver {
    /// `getaddrinfo`, through tokio's `lookup_host`: what wasmtime's own
    /// `default_send_request` uses.
    pub fn system() -> Self {
        Resolver(Arc::new(SystemResolver))
    }

    pub fn new(resolve: impl Resolve) -> Self {
        Resolver(Arc::new(resolve))
    }

    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.0.lookup(host, port).await
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .map(|addr| addr.ip())
                .collect())
        })
    }
}

/// One `scheme://host[:port]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutboundRule {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeRule {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// A name, normalised.
    Exact(String),
    /// `*.suffix`: stored as `.suffix`.
    Subdomains(String),
    /// An address, canonical (`::ffff:a.b.c.d` as IPv4).
    Ip(IpAddr),
    Cidr(Cidr),
}

/// An address block: `network/prefix`, no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8` or `fd00::/8` (brackets taken off).
    fn parse(text: &str) -> Result<Self, &'static str> {
        let (address, prefix) = text.split_once('/').ok_or("has a bad CIDR")?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| "has a CIDR whose address is not an IP address")?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && !prefix.starts_with('+'))
            .ok_or("has a CIDR with a bad prefix length")?;
        let cidr = Cidr { network, prefix };
        if cidr.first() != network {
            return Err("has a CIDR with host bits set (give the block's first address)");
        }
        let (first, last) = (classify(cidr.first()), classify(cidr.last()));
        if first == last && !matches!(first, AddressClass::Public | AddressClass::Private) {
            return Err(
                "has a CIDR inside a loopback, link-local, metadata or other special range, \
                 which a CIDR never grants (name the single address instead, e.g. \"http://127.0.0.1:8080\")",
            );
        }
        Ok(cidr)
    }

    fn mask(&self) -> u128 {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        let host_bits = bits - u32::from(self.prefix);
        let all = if bits == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shl(host_bits).unwrap_or(0) & all
    }

    fn first(&self) -> IpAddr {
        from_bits(self.network, bits_of(self.network) & self.mask())
    }

    fn last(&self) -> IpAddr {
        let all = if self.network.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        from_bits(
            self.network,
            (bits_of(self.network) & self.mask()) | (!self.mask() & all),
        )
    }

    /// Whether `ip` (canonical) is in the block. An IPv4 block holds only
    /// IPv4 addresses (mapped ones are IPv4 once canonical).
    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && bits_of(ip) & self.mask() == bits_of(self.network)
    }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

impl OutboundRule {
    fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "allowed_outbound_hosts entry {entry:?} {why} (expected scheme://host[:port], \
                 e.g. \"https://api.example.com\", \"https://*.example.com:8443\" or \
                 \"http://10.0.0.0/8:8080\")"
            )
        };
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("has no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemeRule::Http,
            "https" => SchemeRule::Https,
            "*" => SchemeRule::Any,
            _ => return Err(bad("has a scheme other than http, https or *")),
        };
        if rest.contains(['?', '#', '@']) || rest.is_empty() {
            return Err(bad("must be a scheme, a host and a port only"));
        }
        // An IPv6 literal keeps its brackets: [::1]:8080, [fd00::/8]:8080.
        let (host, port) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains(']') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        let port = match port {
            None => PortRule::Default,
            Some("*") => PortRule::Any,
            Some(number) => PortRule::Exact(
                number
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("has a bad port"))?,
            ),
        };
        let host = normalise_host(host);
        let host = if let Some(v6) = host.strip_prefix('[') {
            let v6 = v6
                .strip_suffix(']')
                .ok_or_else(|| bad("has a bad IPv6 address"))?;
            if v6.contains('/') {
                let cidr = Cidr::parse(v6).map_err(bad)?;
                if cidr.network.is_ipv4() {
                    return Err(bad("has an IPv4 CIDR in brackets (brackets are for IPv6)"));
                }
                HostRule::Cidr(cidr)
            } else {
                let ip = v6
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("has a bad IPv6 address"))?;
                HostRule::Ip(IpAddr::V6(ip).to_canonical())
            }
        } else if let Some((address, _)) = host.split_once('/') {
            if address.parse::<Ipv4Addr>().is_err() {
                return Err(bad(
                    "must be a scheme, a host and a port only (a `/` only in a CIDR such as 10.0.0.0/8)",
                ));
            }
            HostRule::Cidr(Cidr::parse(&host).map_err(bad)?)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_name(suffix).map_err(bad)?;
            HostRule::Subdomains(format!(".{suffix}"))
        } else if host.contains('*') {
            return Err(bad(
                "has a wildcard other than a leading `*.` (a bare `*` host is not accepted: name the hosts)",
            ));
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            HostRule::Ip(IpAddr::V4(ip))
        } else {
            check_name(&host).map_err(bad)?;
            HostRule::Exact(host)
        };
        Ok(OutboundRule { scheme, host, port })
    }

    fn scheme_and_port_match(&self, scheme: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemeRule::Http => scheme == "http",
            SchemeRule::Https => scheme == "https",
            SchemeRule::Any => scheme == "http" || scheme == "https",
        };
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exact(p) => p == port,
            PortRule::Default => {
                (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
            }
        };
        scheme_ok && port_ok
    }
}

impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            f.write_str("none")?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let scheme = match rule.scheme {
                SchemeRule::Http => "http",
                SchemeRule::Https => "https",
                SchemeRule::Any => "*",
            };
            let host = match &rule.host {
                HostRule::Exact(h) => h.clone(),
                HostRule::Subdomains(s) => format!("*{s}"),
                HostRule::Ip(IpAddr::V4(ip)) => ip.to_string(),
                HostRule::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                HostRule::Cidr(Cidr {
                    network: IpAddr::V4(ip),
                    prefix,
                }) => format!("{ip}/{prefix}"),
                HostRule::Cidr(Cidr {
                    network: IpAddr::V6(ip),
                    prefix,
                }) => format!("[{ip}/{prefix}]"),
            };
            match rule.port {
                PortRule::Default => write!(f, "{scheme}://{host}")?,
                PortRule::Exact(p) => write!(f, "{scheme}://{host}:{p}")?,
                PortRule::Any => write!(f, "{scheme}://{host}:*")?,
            }
        }
        if self.allow_private_networks {
            f.write_str(" (allow_private_networks)")?;
        }
        Ok(())
    }
}

/// Lowercase, without a trailing dot (`Example.COM.` is `example.com`).
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name: letters, digits, `-`, `_` and `.`, no empty label.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("has an empty or overlong host");
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if labels_ok {
        Ok(())
    } else {
        Err("has a host that is not a DNS name or IP address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(entries).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = OutboundPolicy::default();
        assert!(!none.allows("https", "example.com", None));
        assert!(!none.allows("http", "127.0.0.1", Some(8080)));
    }

    #[test]
    fn exact_hosts_match_scheme_host_and_default_port() {
        let p = policy(&["https://api.example.com"]);
        assert!(p.allows("https", "api.example.com", None));
        assert!(p.allows("HTTPS", "API.Example.com.", Some(443)));
        assert!(!p.allows("http", "api.example.com", None), "scheme");
        assert!(!p.allows("https", "api.example.com", Some(8443)), "port");
        assert!(!p.allows("https", "x.api.example.com", None), "subdomain");
        assert!(!p.allows("https", "api.example.com.evil.test", None));
    }

    #[test]
    fn suffix_wildcards_match_subdomains_only() {
        let p = policy(&["*://*.internal.test:*"]);
        assert!(p.allows("http", "a.internal.test", Some(9000)));
        assert!(p.allows("https", "a.b.internal.test", None));
        assert!(!p.allows("https", "internal.test", None));
        assert!(!p.allows("https", "evilinternal.test", None));
        assert!(!p.allows("ftp", "a.internal.test", Some(21)));
    }

    #[test]
    fn ports_and_addresses() {
        let p = policy(&["http://127.0.0.1:8080", "https://[::1]:8443"]);
        assert!(p.allows("http", "127.0.0.1", Some(8080)));
        assert!(!p.allows("http", "127.0.0.1", Some(8081)));
        assert!(!p.allows("http", "127.0.0.1", None));
        assert!(p.allows("https", "[::1]", Some(8443)));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for bad in [
            "api.example.com",
            "ftp://x.test",
            "https://*",
            "https://a.*.test",
            "https://x.test/path",
            "https://user@x.test",
            "https://x.test:0",
            "https://x.test:99999",
            "https://",
            "https://bad host",
            "https://[nope]:1",
        ] {
            let error = OutboundPolicy::parse(&[bad]).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn display_lists_the_rules() {
        let p = policy(&["https://a.test", "*://*.b.test:*", "http://c.test:81"]);
        assert_eq!(
            p.to_string(),
            "https://a.test, *://*.b.test:*, http://c.test:81"
        );
        assert_eq!(OutboundPolicy::default().to_string(), "none");
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn admitted(p: &OutboundPolicy, url_scheme: &str, host: &str, port: u16) -> Admitted {
        p.admit(url_scheme, host, Some(port))
            .unwrap_or_else(|_| panic!("{url_scheme}://{host}:{port} admitted"))
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        for (address, class) in [
            ("93.184.216.34", Public),
            ("8.8.8.8", Public),
            ("172.32.0.1", Public),
            ("100.128.0.1", Public),
            ("2606:4700::1111", Public),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("fd12:3456::1", Private),
            ("fc00::1", Private),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("169.254.169.254", Metadata),
            ("169.254.170.2", Metadata),
            ("169.254.170.23", Metadata),
            ("fd00:ec2::254", Metadata),
            ("fd00:ec2::23", Metadata),
        ] {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_classified_as_its_ipv4_address() {
        use AddressClass::*;
        for (address, class) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("::127.0.0.1", Loopback),
        ] {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
        // And checked as such: a loopback grant names the IPv4 address.
        let p = policy(&["http://*.example.test:8080"]);
        let target = admitted(&p, "http", "a.example.test", 8080);
        assert_eq!(
            p.permits_address(&target, ip("::ffff:127.0.0.1")),
            Err(Loopback)
        );
        let p = policy(&["http://127.0.0.1:8080"]);
        let target = admitted(&p, "http", "[::ffff:127.0.0.1]", 8080);
        assert_eq!(target.ip, Some(ip("127.0.0.1")));
        assert_eq!(p.permits_address(&target, ip("::ffff:127.0.0.1")), Ok(()));
    }

    #[test]
    fn special_addresses_need_an_entry_naming_them() {
        let p = policy(&["http://*.example.test:8080", "https://api.example.test"]);
        let target = admitted(&p, "http", "x.example.test", 8080);
        assert_eq!(p.permits_address(&target, ip("93.184.216.34")), Ok(()));
        for address in ["127.0.0.1", "::1", "169.254.169.254", "0.0.0.0", "fe80::1"] {
            assert!(
                p.permits_address(&target, ip(address)).is_err(),
                "{address}"
            );
        }
        // Named literally, with the request's scheme and port: granted, to
        // the address and to names that resolve to it.
        let p = policy(&["http://*.example.test:8080", "http://127.0.0.1:8080"]);
        let target = admitted(&p, "http", "127.0.0.1", 8080);
        assert_eq!(p.permits_address(&target, ip("127.0.0.1")), Ok(()));
        let target = admitted(&p, "http", "x.example.test", 8080);
        assert_eq!(p.permits_address(&target, ip("127.0.0.1")), Ok(()));
        assert!(p.permits_address(&target, ip("127.0.0.2")).is_err());
        // ...but not on another port.
        let p = policy(&["http://*.example.test:*", "http://127.0.0.1:8080"]);
        let target = admitted(&p, "http", "x.example.test", 9090);
        assert!(p.permits_address(&target, ip("127.0.0.1")).is_err());
        // allow_private_networks is not for special addresses.
        let p = policy(&["http://*.example.test:8080"]).allowing_private_networks(true);
        let target = admitted(&p, "http", "x.example.test", 8080);
        assert!(p.permits_address(&target, ip("127.0.0.1")).is_err());
        assert!(p.permits_address(&target, ip("169.254.169.254")).is_err());
    }

    #[test]
    fn private_addresses_need_an_entry_a_cidr_or_allow_private_networks() {
        let p = policy(&["https://*.corp.test"]);
        let target = admitted(&p, "https", "db.corp.test", 443);
        assert_eq!(
            p.permits_address(&target, ip("10.1.2.3")),
            Err(AddressClass::Private)
        );
        let p = policy(&["https://*.corp.test", "https://10.0.0.0/8"]);
        assert_eq!(p.permits_address(&target, ip("10.1.2.3")), Ok(()));
        assert!(p.permits_address(&target, ip("192.168.0.1")).is_err());
        let p = policy(&["https://*.corp.test", "https://10.1.2.3"]);
        assert_eq!(p.permits_address(&target, ip("10.1.2.3")), Ok(()));
        assert!(p.permits_address(&target, ip("10.1.2.4")).is_err());
        let p = policy(&["https://*.corp.test", "https://[fd00::/8]"]);
        assert_eq!(p.permits_address(&target, ip("fd12::1")), Ok(()));
        assert!(p.permits_address(&target, ip("fc00::1")).is_err());
        let p = policy(&["https://*.corp.test"]).allowing_private_networks(true);
        assert_eq!(p.permits_address(&target, ip("172.20.0.5")), Ok(()));
        assert_eq!(p.permits_address(&target, ip("100.64.1.1")), Ok(()));
    }

    #[test]
    fn cidr_entries_parse_match_and_display() {
        let p = policy(&[
            "http://10.0.0.0/8:443",
            "*://[fd00::/8]:8080",
            "https://192.168.4.0/22",
        ]);
        assert!(p.allows("http", "10.200.1.1", Some(443)));
        assert!(!p.allows("http", "11.0.0.1", Some(443)));
        assert!(!p.allows("http", "10.0.0.1", None), "port");
        assert!(!p.allows("https", "10.0.0.1", Some(443)), "scheme");
        assert!(p.allows("https", "[fd00::1]", Some(8080)));
        assert!(p.allows("https", "192.168.7.255", None));
        assert!(!p.allows("https", "192.168.8.0", None));
        // A CIDR admits addresses, not names.
        assert!(!p.allows("http", "ten.example", Some(443)));
        assert_eq!(
            p.to_string(),
            "http://10.0.0.0/8:443, *://[fd00::/8]:8080, https://192.168.4.0/22"
        );
        // A CIDR spanning special addresses grants only the others.
        let p = policy(&["http://0.0.0.0/0:8080"]);
        let target = admitted(&p, "http", "10.0.0.1", 8080);
        assert_eq!(p.permits_address(&target, ip("10.0.0.1")), Ok(()));
        let target = admitted(&p, "http", "127.0.0.1", 8080);
        assert_eq!(
            p.permits_address(&target, ip("127.0.0.1")),
            Err(AddressClass::Loopback)
        );
    }

    #[test]
    fn bad_cidrs_are_refused_with_the_entry_named() {
        for (bad, why) in [
            ("http://10.0.0.1/8", "host bits"),
            ("http://10.0.0.0/33", "prefix"),
            ("http://10.0.0.0/:80", "prefix"),
            ("http://10.0.0.0/x", "prefix"),
            ("http://[fd00::/129]", "prefix"),
            ("http://[fd00::1/8]", "host bits"),
            ("http://[10.0.0.0/8]", "IPv6"),
            ("http://127.0.0.0/8:8080", "special"),
            ("http://127.0.0.1/32:8080", "special"),
            ("http://169.254.0.0/16", "special"),
            ("http://[fe80::/10]", "special"),
            ("https://x.test/path", "only"),
            ("https://10.0.0.0/8/8", "prefix"),
        ] {
            let error = OutboundPolicy::parse(&[bad]).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn metadata_names_match_only_an_entry_naming_them() {
        let p = policy(&["http://*.google.internal", "http://*.internal"]);
        assert!(!p.allows("http", "metadata.google.internal", None));
        assert!(!p.allows("http", "metadata.google.internal.", None));
        assert!(!p.allows("http", "METADATA.google.internal", None));
        assert!(p.allows("http", "other.google.internal", None));
        let p = policy(&["http://metadata.google.internal"]);
        assert!(p.allows("http", "metadata.google.internal.", None));
        // Its address is still refused unless named too.
        let target = admitted(&p, "http", "metadata.google.internal", 80);
        assert_eq!(
            p.permits_address(&target, ip("169.254.169.254")),
            Err(AddressClass::Metadata)
        );
        let p = policy(&["http://metadata.google.internal", "http://169.254.169.254"]);
        assert_eq!(p.permits_address(&target, ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn denials_say_why() {
        assert_eq!(Denial::NameNotAllowed.reason(), "name not allowed");
        let refused = Denial::AddressRefused(vec![
            (ip("127.0.0.1"), AddressClass::Loopback),
            (ip("::1"), AddressClass::Loopback),
        ]);
        assert_eq!(refused.reason(), "address refused: loopback");
        assert_eq!(refused.addresses(), "127.0.0.1, ::1");
        assert_eq!(
            policy(&["https://a.test"])
                .allowing_private_networks(true)
                .to_string(),
            "https://a.test (allow_private_networks)"
        );
    }
}
