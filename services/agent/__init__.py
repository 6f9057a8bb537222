"""The agent service: multi-step tasks over a registry of tools."""
