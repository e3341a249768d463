"""Development-only tools: the local service stack (private dockerd, mosquitto, registry),
the busybox image builder, the TLS generator and the demo.

Not part of the wheel: `make demo`, `make test` and `make bench` put `devtools/` on the path.
The agent's in-process test doubles (fake engine, recording publisher) stay in `cua.testing`.
"""
