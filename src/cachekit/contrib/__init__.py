"""Integrations with web frameworks and telemetry libraries (each module imports its framework lazily)."""
