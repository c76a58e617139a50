"""nibble's gateware in Amaranth HDL: the accelerator (PE, systolic array, tile buffers,
controller, rescaler, requantizer, log4 quantizer; see ``docs/architecture.md``), the UART
and the host bridge with its FIFOs, the stream layouts (built from :mod:`wire.streams`)
and Verilog generation. Imports :mod:`golden`, :mod:`wire` and
:mod:`edatools` only (``tests/test_layers.py``)."""
