"""The exception that ends a step a stop request overtook."""

__all__ = ["Stopped"]


class Stopped(Exception):
    """A stop was requested while a start-up step, a restore or a poll was running."""
