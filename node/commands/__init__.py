"""One module per `hearth` command group; node/cli.py mounts them."""
