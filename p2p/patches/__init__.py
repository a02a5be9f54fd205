"""Fixes to py-libp2p 0.8.1 carried in the project until upstream has them (ADR 0014).

Each module names the upstream version and behaviour it corrects and is applied per host by
`p2p.host`, so a test can build a host without it and show what the fix holds.
"""
