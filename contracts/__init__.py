"""What more than one service speaks: topic records, topic names, the call stream, shared
settings, and the one CLI and logging path every entry point uses.

This package is the bottom layer: it imports no other project package, and ``streamer``,
``workers``, ``cberl_model`` and ``deploy`` import it instead of each other.
"""
