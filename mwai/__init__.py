"""mwai: hand Jira tickets to an AI and keep full control and visibility."""

__version__ = "0.1.0"
