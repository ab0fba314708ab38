"""Registry: clusters (connect tokens, agent identity, metadata, labels, duplicate guard)."""
