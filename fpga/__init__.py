"""FPGA board builds with the open yosys/nextpnr flow (to come)."""
