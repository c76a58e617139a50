"""nibble's wire formats: every bit that crosses an interface, in pure Python.

What is here
    :mod:`wire.streams`
        The Accelerator's stream beats (command, operand rows, exponents, mask, result):
        field names, widths and offsets, the tile order, and what a driver may rely on.
    :mod:`wire.gemm_protocol`
        GEMM jobs (golden operands) to stream beats and result beats back to golden
        objects.
    :mod:`wire.host_link`
        The UART host link: frames, CRC, commands, STATUS, beats on the wire.
    :mod:`wire.host_driver`
        The host's half of the host link (sequence numbers, retries, flow control) over
        any link object.
    :mod:`wire.axi`
        ``nibble_axi``'s AXI4-Lite register map (the one definition; C header and
        Markdown table generated from it) and its AXI4-Stream data widths.

Why a package of its own
    The formats sit between two layers. They build on :mod:`golden` (parameters, kinds,
    the golden result a job must give) and are what :mod:`rtl` implements: the gateware
    builds its Amaranth layouts from them (:mod:`rtl.layouts`), not the other way round.
    The host side (training on the golden model, the board driver, the testbenches'
    stimulus) packs and checks beats with them and so needs no HDL. Inside
    :mod:`golden` they would blur what golden is, the numbers the hardware computes;
    inside :mod:`rtl` they would drag Amaranth into every host program.

The layer rule (checked by ``tests/test_layers.py``)
    ``golden`` -> ``wire`` -> ``rtl`` -> ``fpga`` -> ``verif`` -> ``nibble``: a package
    imports only from the ones to its left (and :mod:`edatools`). This package imports
    :mod:`golden`, NumPy and the standard library only: no Amaranth.
"""
