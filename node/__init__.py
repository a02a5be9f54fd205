"""The node: a trio daemon that carries out the protocol core's effects, its API and its CLI."""
