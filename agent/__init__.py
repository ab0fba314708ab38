"""The Tether agent: one per connected cluster, dialing out to the platform's NATS.

It trades a one-time connect token for its own credential, says hello on every
(re)connect, heartbeats its cluster's health and obeys control notices. It
applies its cluster's commands from the CMD work queue, in order and exactly
once in effect (``agent.commands``), and reports its inventory on every
(re)connect and periodically. The cluster itself is reached through a driver
(``sim`` or ``kube``).
"""

VERSION = "0.1.0"
