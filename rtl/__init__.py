"""nibble RTL in Amaranth HDL (the accelerator core lands here next)."""
