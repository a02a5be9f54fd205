"""Which of our addresses we advertise, and which addresses may be passed to which peer (ADR 0035).

Pure: no sockets, no clock. `p2p.host`, `p2p.discovery` and `p2p.reachability` ask.

Theory of operation. Every IP address has a *scope*: loopback, private (RFC 1918, RFC 4193,
link-local, carrier-grade NAT) or public. An address is meaningful only inside its scope's
network: 127.0.0.1 is every machine, and 192.168.1.10 is a different box in half the homes of
the world. So an address is passed to a peer only if the peer could reach it: public addresses
to anyone, private ones only to a peer whose own address (as we see its connection) is private
and in the same network (same /24, or /64 for IPv6), loopback ones only to a peer on loopback.
A relay address (``.../p2p/<relay>/p2p-circuit``) is judged by the relay's address in front of
it. Without this rule a node behind NAT dialled another home's 192.168.1.10 and reached itself.

A peer that passes *us* an address we could not reach by that rule, or that claims for itself a
public IP other than the one its connection comes from, either is misconfigured or is trying
to aim our dials; it loses a little reputation each time (`PENALTY_FOREIGN_ADDR`).
"""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Final

PENALTY_FOREIGN_ADDR: Final = -10  # a private/loopback address outside its network, or not its own
CIRCUIT: Final = "/p2p-circuit"
ADVERTISED_ADDRS_MAX: Final = 8  # addresses we put in identify; more only helps an attacker
# Networks that are reused in many places. Python's `is_private` also counts the documentation
# ranges (203.0.113.0/24, ...), which labs use as "the internet": those are public here.
_PRIVATE_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)
_SAME_NETWORK_PREFIX: Final = {4: 24, 6: 64}


class Scope(Enum):
    LOOPBACK = "loopback"
    PRIVATE = "private"
    PUBLIC = "public"
    UNUSABLE = "unusable"  # unspecified, multicast, reserved, or not an IP


def scope_of(ip_text: str) -> Scope:
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        return Scope.UNUSABLE
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return Scope.UNUSABLE
    if ip.is_loopback:
        return Scope.LOOPBACK
    if any(ip.version == net.version and ip in net for net in _PRIVATE_NETS):
        return Scope.PRIVATE
    return Scope.PUBLIC


def ip_of(addr: str) -> str:
    """The IP of a multiaddr: of the relay for a circuit address ("" if it has none)."""
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else ""


def is_circuit(addr: str) -> bool:
    return CIRCUIT in addr


def same_network(a: str, b: str) -> bool:
    """Whether two IPs of the same version share a /24 (IPv4) or /64 (IPv6)."""
    try:
        ip_a, ip_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if ip_a.version != ip_b.version:
        return False
    prefix = _SAME_NETWORK_PREFIX[ip_a.version]
    net = ipaddress.ip_network(f"{ip_a}/{prefix}", strict=False)
    return ip_b in net


def reachable_from(addr: str, peer_ip: str) -> bool:
    """Whether a peer whose connection comes from ``peer_ip`` could reach ``addr``."""
    scope = scope_of(ip_of(addr))
    if scope is Scope.PUBLIC:
        return True
    if scope is Scope.LOOPBACK:
        return scope_of(peer_ip) is Scope.LOOPBACK
    if scope is Scope.PRIVATE:
        return scope_of(peer_ip) is Scope.PRIVATE and same_network(ip_of(addr), peer_ip)
    return False


def shareable(addrs: list[str], peer_ip: str) -> list[str]:
    """The addresses of ``addrs`` we may tell a peer whose connection comes from ``peer_ip``."""
    return [a for a in addrs if reachable_from(a, peer_ip)]


def claims_foreign_public(claimed: str, observed_ip: str) -> bool:
    """A peer's own claimed direct address names a public IP its connection does not come from.

    Relay addresses and private/loopback claims (a host behind NAT knows only its LAN address)
    are not foreign; a different public IP is someone else's, unless we see the peer on a
    private or loopback IP ourselves (then we cannot tell what its public IP is).
    """
    if is_circuit(claimed) or scope_of(observed_ip) is not Scope.PUBLIC:
        return False
    ip = ip_of(claimed)
    return scope_of(ip) is Scope.PUBLIC and ip != observed_ip


def advertised(
    listen: list[str],
    announce: list[str],
    observed_confirmed: list[str],
    circuits: list[str],
) -> list[str]:
    """What we put in identify, in this order, without duplicates, at most ADVERTISED_ADDRS_MAX.

    Configured ``announce`` addresses first (the operator knows best), then observed public
    addresses a dial-back confirmed, then our listen addresses (useful to peers on our own
    LAN or loopback; receivers filter them by the rules above), then relay addresses.
    Unusable listen addresses (0.0.0.0) are left out.
    """
    out: list[str] = []
    for addr in [*announce, *observed_confirmed, *listen, *circuits]:
        if addr in out:
            continue
        if not is_circuit(addr) and scope_of(ip_of(addr)) is Scope.UNUSABLE:
            continue
        out.append(addr)
    return out[:ADVERTISED_ADDRS_MAX]
