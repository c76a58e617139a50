"""nibble: an open 4-bit deep-learning training accelerator (host side: the CLI, training,
benchmarks, the results page and the board driver)."""

__version__ = "0.1.0"
