"""nibble RTL in Amaranth HDL: the accelerator (PE, systolic array, tile buffers, controller,
rescaler, requantizer, log4 quantizer; see ``docs/architecture.md``), the UART, the FP16
baseline MAC, the stream layouts and Verilog generation."""
