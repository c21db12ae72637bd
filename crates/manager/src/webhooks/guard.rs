//! Which addresses a webhook may reach: the decision, with no I/O.
//!
//! A webhook URL is chosen by whoever holds a `keys:write` token, possibly one confined to a single owner,
//! yet the request leaves from the manager, inside the operator's network. Without a guard, webhooks turn
//! the manager into a port scanner for loopback services, cloud metadata endpoints (169.254.169.254) and
//! the private network. So by default a delivery may reach only globally routable unicast addresses:
//! every range the IANA special-purpose registries mark as not globally reachable is refused, and so are
//! the IPv6 forms that embed such an IPv4 address (IPv4-mapped, NAT64, 6to4). An operator whose receivers
//! live on a private network names their ranges (`--webhook-allow CIDR`), which lifts the guard for
//! exactly those.
//!
//! The guard judges the address the manager is about to connect to, never a name: names are judged after
//! they resolve (see `connect.rs`), so a name that resolves to a public address when the webhook is
//! created and to 127.0.0.1 when it is delivered (DNS rebinding) is still refused.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An address range, `ADDRESS/PREFIX` (or a bare address, a range of one). Host bits must be zero, so a
/// mistyped range is reported rather than silently widened or narrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Prefix(String),
    #[error("prefix /{prefix} is longer than /{max} for this address family")]
    PrefixTooLong { prefix: u8, max: u8 },
    #[error("{given} has bits set after the prefix; did you mean {network}?")]
    HostBits { given: String, network: Cidr },
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(address.to_owned()))?;
        let max = max_prefix(address);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| CidrError::Prefix(p.to_owned()))?,
        };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        let network = Self {
            network: masked(address, prefix),
            prefix,
        };
        if network.network != address {
            return Err(CidrError::HostBits {
                given: text.to_owned(),
                network,
            });
        }
        Ok(network)
    }

    /// Whether `ip` is in the range. An IPv4 range never contains an IPv6 address, nor the reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                masked(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Why an address is not for webhooks: the special-purpose block it falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedAddressSpace,
    LinkLocal,
    ProtocolAssignments,
    Documentation,
    Relay6to4,
    Benchmarking,
    Multicast,
    Broadcast,
    Reserved,
    Ipv4Compatible,
    Nat64LocalUse,
    DiscardOnly,
    Srv6,
    UniqueLocal,
    SiteLocal,
    /// Outside 2000::/3, the only IPv6 unicast space handed out for the internet.
    NotGlobalUnicast,
}

impl fmt::Display for SpecialUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Self::Loopback => "loopback",
            Self::Private => "private (RFC 1918)",
            Self::SharedAddressSpace => "shared address space (100.64.0.0/10, carrier-grade NAT)",
            Self::LinkLocal => "link-local",
            Self::ProtocolAssignments => "reserved for IETF protocol assignments",
            Self::Documentation => "reserved for documentation",
            Self::Relay6to4 => "the deprecated 6to4 relay anycast range",
            Self::Benchmarking => "reserved for benchmarking",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address (deprecated)",
            Self::Nat64LocalUse => "local-use NAT64 (64:ff9b:1::/48)",
            Self::DiscardOnly => "discard-only (100::/64)",
            Self::Srv6 => "an SRv6 segment identifier (5f00::/16)",
            Self::UniqueLocal => "unique-local (fc00::/7)",
            Self::SiteLocal => "site-local (fec0::/10, deprecated)",
            Self::NotGlobalUnicast => "outside IPv6 global unicast (2000::/3)",
        })
    }
}

/// IPv4 blocks that are not globally reachable, most specific first.
const V4_BLOCKS: [(u32, u8, SpecialUse); 17] = [
    (0xFFFF_FFFF, 32, SpecialUse::Broadcast),
    (0x0000_0000, 32, SpecialUse::Unspecified),
    (0x0000_0000, 8, SpecialUse::ThisNetwork),
    (0x0A00_0000, 8, SpecialUse::Private),
    (0x6440_0000, 10, SpecialUse::SharedAddressSpace),
    (0x7F00_0000, 8, SpecialUse::Loopback),
    (0xA9FE_0000, 16, SpecialUse::LinkLocal),
    (0xAC10_0000, 12, SpecialUse::Private),
    (0xC000_0000, 24, SpecialUse::ProtocolAssignments),
    (0xC000_0200, 24, SpecialUse::Documentation),
    (0xC058_6300, 24, SpecialUse::Relay6to4),
    (0xC0A8_0000, 16, SpecialUse::Private),
    (0xC612_0000, 15, SpecialUse::Benchmarking),
    (0xC633_6400, 24, SpecialUse::Documentation),
    (0xCB00_7100, 24, SpecialUse::Documentation),
    (0xE000_0000, 4, SpecialUse::Multicast),
    (0xF000_0000, 4, SpecialUse::Reserved),
];

/// IPv6 blocks that are not globally reachable and embed no IPv4 address, most specific first.
const V6_BLOCKS: [(u128, u8, SpecialUse); 13] = [
    (0, 128, SpecialUse::Unspecified),
    (1, 128, SpecialUse::Loopback),
    (0, 96, SpecialUse::Ipv4Compatible),
    (0x0064_ff9b_0001 << 80, 48, SpecialUse::Nat64LocalUse),
    (0x0100 << 112, 64, SpecialUse::DiscardOnly),
    (0x2001_0db8 << 96, 32, SpecialUse::Documentation),
    // Teredo, ORCHID, benchmarking and the rest of the IETF protocol block.
    (0x2001 << 112, 23, SpecialUse::ProtocolAssignments),
    (0x3fff << 112, 20, SpecialUse::Documentation),
    (0x5f00 << 112, 16, SpecialUse::Srv6),
    (0xfc00 << 112, 7, SpecialUse::UniqueLocal),
    (0xfe80 << 112, 10, SpecialUse::LinkLocal),
    (0xfec0 << 112, 10, SpecialUse::SiteLocal),
    (0xff00 << 112, 8, SpecialUse::Multicast),
];

/// 2000::/3: IPv6 global unicast. Anything outside it and not named above is reserved by the IETF.
const V6_GLOBAL_UNICAST: (u128, u8) = (0x2000 << 112, 3);

fn in_block(value: u128, width: u32, network: u128, prefix: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(width - u32::from(prefix))
        .unwrap_or(0)
        & (u128::MAX >> (128 - width));
    value & mask == network
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialUse> {
    let value = u128::from(u32::from(ip));
    V4_BLOCKS
        .iter()
        .find(|(network, prefix, _)| in_block(value, 32, u128::from(*network), *prefix))
        .map(|(_, _, why)| *why)
}

/// The IPv4 address an IPv6 address carries to the IPv4 internet, for the forms a host may route that way:
/// IPv4-mapped (::ffff:0:0/96, the same host to a dual-stack socket), NAT64 (64:ff9b::/96) and 6to4
/// (2002::/16).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let value = u128::from(ip);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if in_block(value, 128, 0x0064_ff9b << 96, 96) {
        return Some(Ipv4Addr::from(value as u32));
    }
    if in_block(value, 128, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((value >> 80) as u32));
    }
    None
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialUse> {
    if let Some(v4) = embedded_v4(ip) {
        return special_v4(v4);
    }
    let value = u128::from(ip);
    if let Some((_, _, why)) = V6_BLOCKS
        .iter()
        .find(|(network, prefix, _)| in_block(value, 128, *network, *prefix))
    {
        return Some(*why);
    }
    let (global, prefix) = V6_GLOBAL_UNICAST;
    (!in_block(value, 128, global, prefix)).then_some(SpecialUse::NotGlobalUnicast)
}

/// The special-purpose block `ip` is in, if any; `None` for a globally routable unicast address.
pub fn special_use(ip: IpAddr) -> Option<SpecialUse> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// An address the guard refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{REFUSED}: {address} is {why}")]
pub struct Refused {
    pub address: IpAddr,
    pub why: SpecialUse,
}

/// How every refusal's text starts, so what was recorded can be told apart from a receiver's failure.
pub const REFUSED: &str = "refused by the address guard";

/// The guard: special-purpose addresses are refused unless the operator allowed their range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressGuard {
    allow: Vec<Cidr>,
}

impl AddressGuard {
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// `Ok` when a webhook may connect to `ip`. An IPv4-mapped address is the IPv4 host itself, so an
    /// IPv4 range allows it too; NAT64 and 6to4 addresses reach another host and need their own range.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let host = ip.to_canonical();
        if self
            .allow
            .iter()
            .any(|c| c.contains(ip) || c.contains(host))
        {
            return Ok(());
        }
        match special_use(ip) {
            None => Ok(()),
            Some(why) => Err(Refused { address: host, why }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn special_purpose_addresses_are_refused_by_default() {
        let guard = AddressGuard::default();
        for (address, why) in [
            ("127.0.0.1", SpecialUse::Loopback),
            ("127.255.255.254", SpecialUse::Loopback),
            ("::1", SpecialUse::Loopback),
            ("::ffff:127.0.0.1", SpecialUse::Loopback),
            ("0.0.0.0", SpecialUse::Unspecified),
            ("0.1.2.3", SpecialUse::ThisNetwork),
            ("::", SpecialUse::Unspecified),
            ("10.0.0.1", SpecialUse::Private),
            ("172.16.0.1", SpecialUse::Private),
            ("172.31.255.255", SpecialUse::Private),
            ("192.168.1.1", SpecialUse::Private),
            ("100.64.0.1", SpecialUse::SharedAddressSpace),
            ("100.127.255.255", SpecialUse::SharedAddressSpace),
            ("169.254.169.254", SpecialUse::LinkLocal),
            ("::ffff:169.254.169.254", SpecialUse::LinkLocal),
            ("fe80::1", SpecialUse::LinkLocal),
            ("febf::1", SpecialUse::LinkLocal),
            ("fc00::1", SpecialUse::UniqueLocal),
            ("fd12:3456::1", SpecialUse::UniqueLocal),
            ("fec0::1", SpecialUse::SiteLocal),
            ("224.0.0.1", SpecialUse::Multicast),
            ("239.255.255.250", SpecialUse::Multicast),
            ("ff02::1", SpecialUse::Multicast),
            ("255.255.255.255", SpecialUse::Broadcast),
            ("240.0.0.1", SpecialUse::Reserved),
            ("192.0.0.8", SpecialUse::ProtocolAssignments),
            ("192.0.2.1", SpecialUse::Documentation),
            ("198.51.100.1", SpecialUse::Documentation),
            ("203.0.113.1", SpecialUse::Documentation),
            ("2001:db8::1", SpecialUse::Documentation),
            ("198.18.0.1", SpecialUse::Benchmarking),
            ("198.19.255.255", SpecialUse::Benchmarking),
            ("192.88.99.1", SpecialUse::Relay6to4),
            // NAT64 and 6to4 carry an IPv4 address; it is judged.
            ("64:ff9b::7f00:1", SpecialUse::Loopback),
            ("64:ff9b::a9fe:a9fe", SpecialUse::LinkLocal),
            ("64:ff9b:1::1", SpecialUse::Nat64LocalUse),
            ("2002:0a00:0001::1", SpecialUse::Private),
            ("2002:7f00:0001::", SpecialUse::Loopback),
            ("::127.0.0.1", SpecialUse::Ipv4Compatible),
            ("::8.8.8.8", SpecialUse::Ipv4Compatible),
            ("2001::1", SpecialUse::ProtocolAssignments), // Teredo
            ("100::1", SpecialUse::DiscardOnly),
            ("3fff::1", SpecialUse::Documentation),
            ("5f00::1", SpecialUse::Srv6),
            ("4000::1", SpecialUse::NotGlobalUnicast),
            ("::2", SpecialUse::Ipv4Compatible),
        ] {
            let refused = guard.check(ip(address)).expect_err(address);
            assert_eq!(refused.why, why, "{address}");
            assert!(refused.to_string().starts_with(REFUSED));
        }
    }

    #[test]
    fn public_unicast_addresses_pass() {
        let guard = AddressGuard::default();
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "2001:200::1",
        ] {
            assert_eq!(guard.check(ip(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn the_allowlist_lifts_the_guard_for_its_ranges_only() {
        let guard = AddressGuard::new(vec![
            Cidr::parse("127.0.0.0/8").expect("cidr"),
            Cidr::parse("fd00::/8").expect("cidr"),
            Cidr::parse("10.1.2.3").expect("cidr"),
        ]);
        for allowed in [
            "127.0.0.1",
            "127.9.9.9",
            "::ffff:127.0.0.1",
            "fd00::1",
            "10.1.2.3",
        ] {
            assert_eq!(guard.check(ip(allowed)), Ok(()), "{allowed}");
        }
        for refused in [
            "::1",
            "10.1.2.4",
            "fc00::1",
            "169.254.169.254",
            "64:ff9b::7f00:1",
        ] {
            assert!(guard.check(ip(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(
            Cidr::parse("10.0.0.0/8").expect("cidr").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(Cidr::parse(" ::1 ").expect("cidr").to_string(), "::1/128");
        assert_eq!(
            Cidr::parse("0.0.0.0/0").expect("cidr").to_string(),
            "0.0.0.0/0"
        );
        assert!(matches!(
            Cidr::parse("example.com/8"),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(Cidr::parse(""), Err(CidrError::Address(_))));
        for bad in ["10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/eight", "10.0.0.0/8/8"] {
            assert!(
                matches!(Cidr::parse(bad), Err(CidrError::Prefix(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert!(matches!(
            Cidr::parse("fe80::/129"),
            Err(CidrError::PrefixTooLong { max: 128, .. })
        ));
        let error = Cidr::parse("10.1.2.3/8").expect_err("host bits");
        assert_eq!(
            error.to_string(),
            "10.1.2.3/8 has bits set after the prefix; did you mean 10.0.0.0/8?"
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        ]
    }

    /// Bit by bit, the slow and obvious way.
    fn naive_contains(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> Vec<bool> {
            let bytes = match a {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            bytes
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
                .collect()
        };
        network.is_ipv4() == ip.is_ipv4()
            && bits(network)[..usize::from(prefix)] == bits(ip)[..usize::from(prefix)]
    }

    proptest! {
        #[test]
        fn a_range_holds_exactly_what_shares_its_prefix(base in any_ip(), other in any_ip(), prefix in 0u8..=128) {
            let prefix = prefix.min(max_prefix(base));
            let network = masked(base, prefix);
            let cidr = Cidr::parse(&format!("{network}/{prefix}")).expect("a masked range parses");
            prop_assert_eq!(Cidr::parse(&cidr.to_string()), Ok(cidr));
            prop_assert!(cidr.contains(base));
            prop_assert_eq!(cidr.contains(other), naive_contains(network, prefix, other));
        }

        #[test]
        fn ipv4_mapped_addresses_are_judged_as_their_ipv4_host(v4 in any::<u32>(), allow in any::<bool>()) {
            let v4 = Ipv4Addr::from(v4);
            let guard = if allow {
                AddressGuard::new(vec![Cidr::parse("127.0.0.0/8").expect("cidr")])
            } else {
                AddressGuard::default()
            };
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(special_use(mapped), special_use(IpAddr::V4(v4)));
            prop_assert_eq!(guard.check(mapped), guard.check(IpAddr::V4(v4)));
        }

        #[test]
        fn nat64_and_6to4_carry_their_ipv4_verdict(v4 in any::<u32>(), low in any::<u64>()) {
            let nat64 = Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(v4));
            let six_to_four = Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(v4) << 80) | u128::from(low));
            let v4 = IpAddr::V4(Ipv4Addr::from(v4));
            prop_assert_eq!(special_use(IpAddr::V6(nat64)), special_use(v4));
            prop_assert_eq!(special_use(IpAddr::V6(six_to_four)), special_use(v4));
        }

        #[test]
        fn private_loopback_and_link_local_ranges_are_refused_throughout(host in any::<u32>(), v6 in any::<u128>()) {
            let guard = AddressGuard::default();
            for (network, prefix) in [(0x7F00_0000u32, 8u8), (0x0A00_0000, 8), (0xAC10_0000, 12), (0xC0A8_0000, 16),
                                      (0x6440_0000, 10), (0xA9FE_0000, 16), (0xE000_0000, 4)] {
                let address = Ipv4Addr::from(network | (host >> prefix));
                prop_assert!(guard.check(IpAddr::V4(address)).is_err(), "{}", address);
            }
            for (network, prefix) in [(0xfc00u128 << 112, 7u8), (0xfe80 << 112, 10), (0xff00 << 112, 8)] {
                let address = Ipv6Addr::from(network | (v6 >> prefix));
                prop_assert!(guard.check(IpAddr::V6(address)).is_err(), "{}", address);
            }
        }
    }
}
