"""nibble: an open 4-bit deep-learning training accelerator (host side: CLI and training)."""

__version__ = "0.1.0"
