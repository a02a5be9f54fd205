"""Network-namespace lab: NAT homes, public nodes and shaped links on one Linux machine."""
