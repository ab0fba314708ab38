"""Lifecycle: tenant-cluster and space state machines, desired state, commands to agents."""
