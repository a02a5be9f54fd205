"""`python -m hearth ...` is the `hearth` command."""

from hearth.node.cli import main

main()
