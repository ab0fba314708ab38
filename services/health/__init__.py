"""Health: heartbeats -> presence on the platform's clock; online/offline; cluster health."""
