"""cocotb + Verilator regressions against the golden model (to come)."""
