"""Tests against a real daemon subprocess (its socket, its CLI, its MCP server)."""
