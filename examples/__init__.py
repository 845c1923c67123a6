"""Example programs for this server: resource servers and a caching client."""
