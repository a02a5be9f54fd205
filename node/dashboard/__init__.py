"""The web dashboard the node's API serves: sessions, page data, settings and static files."""
