"""Container update agent: reconciles the containers of a device with a desired state.

Wire-compatible with the Eclipse Kanto container update agent (see README.md).
"""

__version__ = "0.1.0"

AGENT_NAME = "Eclipse Kanto Containers Update Agent"
