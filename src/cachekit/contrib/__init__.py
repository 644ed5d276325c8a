"""Integrations with web frameworks and telemetry (each module imports its own framework)."""
