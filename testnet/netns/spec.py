"""What a network-namespace lab is made of: public nodes, NAT homes, link classes. I/O: none.

The addresses are fixed by position so that a lab can be described in a few lines and rebuilt
identically: public node ``i`` is 203.0.113.(10+i), the WAN side of home router ``i`` is
198.51.100.(10+i), and the nodes of every home sit on that home's LAN (192.168.1.0/24 unless the
home says otherwise) from .10 up, so several homes share the address 192.168.1.10 as real ones do.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Final, Literal

RouterKind = Literal["port-restricted", "symmetric"]
ROUTER_KINDS: Final = ("port-restricted", "symmetric")
PUBLIC_NET: Final = ipaddress.IPv4Network("203.0.113.0/24")
WAN_NET: Final = ipaddress.IPv4Network("198.51.100.0/24")
HOST_OFFSET: Final = 10
PUBLIC_MAX: Final = 200
HOMES_MAX: Final = 200
NODES_PER_HOME_MAX: Final = 50
DELAY_MS_MAX: Final = 5_000
RATE_KBIT_MIN: Final = 64


class SpecError(ValueError):
    """A lab description that cannot be built; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class LinkClass:
    """The access link between a namespace and the internet, shaped in both directions.

    ``delay_ms`` +/- ``jitter_ms`` is added to every packet that crosses the link (so a round
    trip to a public node gains twice that, and one between two homes four times), ``loss_pct``
    of the packets crossing it are dropped, and ``rate_kbit`` caps each direction (0: no cap)."""

    name: str
    delay_ms: int = 0
    jitter_ms: int = 0
    loss_pct: float = 0.0
    rate_kbit: int = 0

    def check(self) -> None:
        if not 0 <= self.delay_ms <= DELAY_MS_MAX:
            raise SpecError(f"link {self.name}: delay_ms must be 0..{DELAY_MS_MAX}")
        if not 0 <= self.jitter_ms <= self.delay_ms:
            raise SpecError(f"link {self.name}: jitter_ms must be 0..delay_ms ({self.delay_ms})")
        if not 0 <= self.loss_pct < 100:
            raise SpecError(f"link {self.name}: loss_pct must be at least 0 and below 100")
        if self.rate_kbit and self.rate_kbit < RATE_KBIT_MIN:
            raise SpecError(f"link {self.name}: rate_kbit must be 0 (no cap) or >= {RATE_KBIT_MIN}")

    @property
    def shaped(self) -> bool:
        return bool(self.delay_ms or self.loss_pct or self.rate_kbit)


UNSHAPED: Final = LinkClass("lan")


@dataclasses.dataclass(frozen=True)
class HomeSpec:
    router: RouterKind = "port-restricted"
    link: str = "lan"
    nodes: int = 1
    lan: str = "192.168.1.0/24"


@dataclasses.dataclass(frozen=True)
class LabSpec:
    public: tuple[str, ...] = ("lan",)  # one link-class name per public node
    homes: tuple[HomeSpec, ...] = ()
    links: tuple[LinkClass, ...] = ()

    def link(self, name: str) -> LinkClass:
        for link in self.links:
            if link.name == name:
                return link
        if name == UNSHAPED.name:
            return UNSHAPED
        raise SpecError(f"no link class named {name!r}; define it or use 'lan'")

    def check(self) -> None:
        if not 0 < len(self.public) <= PUBLIC_MAX:
            raise SpecError(f"a lab has 1 to {PUBLIC_MAX} public nodes, not {len(self.public)}")
        if len(self.homes) > HOMES_MAX:
            raise SpecError(f"a lab has at most {HOMES_MAX} homes, not {len(self.homes)}")
        for link in self.links:
            link.check()
        for name in self.public:
            self.link(name)
        for index, home in enumerate(self.homes):
            self.link(home.link)
            if home.router not in ROUTER_KINDS:
                raise SpecError(f"home {index}: router must be one of {', '.join(ROUTER_KINDS)}")
            if not 1 <= home.nodes <= NODES_PER_HOME_MAX:
                raise SpecError(f"home {index}: nodes must be 1..{NODES_PER_HOME_MAX}")
            try:
                lan = ipaddress.IPv4Network(home.lan)
            except ValueError:
                raise SpecError(f"home {index}: lan {home.lan!r} is not an IPv4 network") from None
            if not lan.is_private or lan.num_addresses < HOST_OFFSET + home.nodes + 2:
                raise SpecError(f"home {index}: lan {home.lan} must be private and big enough")


def public_address(index: int) -> str:
    return str(PUBLIC_NET.network_address + HOST_OFFSET + index)


def wan_address(index: int) -> str:
    return str(WAN_NET.network_address + HOST_OFFSET + index)


def lan_gateway(home: HomeSpec) -> str:
    return str(ipaddress.IPv4Network(home.lan).network_address + 1)


def lan_address(home: HomeSpec, node: int) -> str:
    return str(ipaddress.IPv4Network(home.lan).network_address + HOST_OFFSET + node)


def lan_prefix(home: HomeSpec) -> int:
    return ipaddress.IPv4Network(home.lan).prefixlen
