"""py-libp2p and trio: the host, gossip topics and request/response streams. Moves bytes only."""
