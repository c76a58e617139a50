"""Verification against the golden model: Amaranth-simulator drivers, cocotb benches
under Verilator, the fast C++ harness, formal checks and the regression runner. Imports
the layers below it (golden, wire, rtl, fpga) and :mod:`edatools`, never nibble."""
