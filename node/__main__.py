"""`python -m hearth.node ...` is the `hearth` command (the testnet launcher starts nodes so)."""

from hearth.node.cli import main

main()
