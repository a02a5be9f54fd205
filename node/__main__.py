"""`python -m node ...` is the `hearth` command (the testnet launcher starts nodes this way)."""

from node.cli import main

main()
