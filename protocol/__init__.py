"""Hearth's pure protocol core: messages, codec, identity, auction, verification, pricing.

I/O: none. Nothing in this package imports trio, libp2p, sqlite, socket, time, os or
subprocess; time arrives as ``now_ms: int`` and randomness as an injected ``random.Random``.
"""
