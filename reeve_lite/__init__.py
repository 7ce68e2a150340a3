"""reeve-lite: the pulse queue of a proactive AI agent."""

__version__ = "0.1.0"
