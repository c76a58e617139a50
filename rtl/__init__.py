"""nibble's gateware in Amaranth HDL: the accelerator (PE, systolic array, tile buffers,
controller, rescaler, requantizer, log4 quantizer; see ``docs/architecture.md``), the UART
and the host bridge with its FIFOs, the stream layouts (built from :mod:`wire.streams`)
and Verilog generation. Imports :mod:`golden`, :mod:`wire` and
:mod:`edatools` only (``tests/test_layers.py``).
Where each rule of golden is built, benched and tested (golden -> rtl unit -> cocotb
bench in :mod:`verif` -> pytest file; the benches and tests call golden for every
expected value):

* codes and kinds, ``golden.formats.quantize`` -> ``pe.PE`` (decode, product) ->
  ``tb_units.pe_exhaustive`` -> ``test_rtl_pe.py``, ``test_formal.py``;
* tile products, ``golden.gemm.tiled_gemm`` -> ``systolic_array.SystolicArray`` ->
  ``tb_accelerator.random_gemms`` -> ``test_rtl_systolic_array.py``;
* the rescale, ``golden.gemm.out_exponents`` and ``shift_round_half_even`` ->
  ``tile_rescaler.TileRescaler`` -> ``tb_units.rescaler_shifts`` ->
  ``test_rtl_tile_rescaler.py``;
* the int output stage, ``golden.output.requantize`` -> ``requantizer.Requantizer`` ->
  ``tb_units.requantizer_tiles`` -> ``test_rtl_requantizer.py``;
* the FP4 output stage, ``golden.output.log4_quantize`` and the gradient unit
  ``golden.output.log4_quantize_fused`` -> ``log4_quantizer.Log4Quantizer`` ->
  ``tb_units.log4_quantizer_tiles`` (single phase) -> ``test_rtl_log4_quantizer.py``;
* stochastic rounding's random words, ``golden.xorshift.element_words`` ->
  ``column_random.ColumnRandom`` -> (no cocotb bench yet) -> ``test_rtl_column_random.py``,
  and its rule, ``golden.formats.quantize(rounding="stochastic")`` ->
  ``stochastic_round.stochastic_exponent`` -> (none yet) -> ``test_rtl_stochastic_round.py``;
  both inside the log4 unit (``test_rtl_log4_quantizer.py``, ``test_rtl_accelerator.py``);
* legal commands, ``golden.gemm.check_kind_pair`` -> ``accelerator.Accelerator``
  (``refused``) -> (no cocotb bench: Amaranth's simulator) -> ``test_contract.py``;
* a whole GEMM in every output stage -> ``accelerator.Accelerator`` (``nibble_top``) ->
  ``tb_accelerator`` and the C++ harness ``verif.fast_sim`` ->
  ``test_rtl_accelerator.py``, ``test_cocotb_accelerator.py``, ``test_fast_sim.py``;
* the same behind AXI ports (the register map of ``wire.axi``) ->
  ``nibble_axi.NibbleAxi`` (``nibble_axi``; its register file ``axi_lite.AxiLiteRegisters``)
  -> ``tb_axi`` (cocotbext-axi) and ``verif.fast_sim`` (``top="nibble_axi"``) ->
  ``test_cocotb_axi.py``, ``test_rtl_axi_lite.py``, ``test_fast_sim.py``.
"""
