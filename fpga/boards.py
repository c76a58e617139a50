"""The boards ``nibble synth`` builds for, and the board top that goes on each.

Board table (:data:`BOARDS`)
    =============  ==========================  ==========  ===========  ===================
    name           amaranth-boards platform    device      oscillator   default clock
    =============  ==========================  ==========  ===========  ===================
    ``ulx3s``      ``ULX3S_85F_Platform``      LFE5U-85F   25 MHz       100 MHz (EHXPLLL)
    ``orangecrab`` ``OrangeCrabR0_2_25FPlatform`` LFE5U-25F 48 MHz      48 MHz (no PLL)
    ``icebreaker`` ``ICEBreakerPlatform``      iCE40UP5K   12 MHz       20 MHz (SB_PLL40_PAD)
    =============  ==========================  ==========  ===========  ===================

Board top (:class:`BoardTop`)
    The :class:`rtl.host_bridge.HostBridge` (a UART host bridge around
    :class:`rtl.accelerator.Accelerator`) plus what the board needs around it:

    * **clock**: a PLL from the board oscillator to the requested frequency, or the
      oscillator itself when the two are equal (a PLL that would only multiply by one is
      left out). The PLL's achieved frequency (``clock_mhz``) may differ a little from the
      request; it is the frequency the design is constrained and reported at (nextpnr
      derives it from the oscillator pin's constraint and the PLL dividers).
    * **reset**: the PLL's lock and one user button, synchronised into the ``sync`` domain
      (asserted at once, released on the clock). ULX3S: ``button_fire`` 0 (FIRE1, ball R1);
      OrangeCrab: ``button`` 0 (the user button); iCEBreaker: ``button`` 0 (the user button
      BTN_N, pin 10). Configuration also starts the design in reset.
    * **UART** (3.3 V, 8N1, ``baud`` default 115200): ULX3S: the FTDI ``uart`` 0 (the USB
      port marked US1, ``/dev/ttyUSB0``); iCEBreaker: the FTDI's second channel, ``uart`` 0
      (``/dev/ttyUSB1``). The OrangeCrab has no UART on its board: its USB goes straight to
      the FPGA. nibble puts the UART on the Feather header, following the Feather pin
      names: **rx on pin "0" (ball N17), tx on pin "1" (ball M18)**, for a 3.3 V USB-serial
      adapter (adapter TX to pin 0, adapter RX to pin 1, GND to GND).
    * **busy LED**: the bridge's ``busy`` lights ``led`` 0 (ULX3S), the green of the RGB
      LED (OrangeCrab) or the green LED ``led_g`` 0 (iCEBreaker).

Building never runs a programming tool (see :mod:`fpga.synth`). Programming is a separate,
optional step with the board's usual loader, for instance::

    openFPGALoader -b ulx3s DIR/top.bit          # ULX3S (SRAM; add -f for flash)
    dfu-suffix -v 1209 -p 5af0 -a DIR/top.bit && dfu-util -a 0 -D DIR/top.bit  # OrangeCrab bootloader
    iceprog DIR/top.bin                          # iCEBreaker

Fit check
    :func:`estimate_luts` is a calibrated size model used to refuse an array that clearly
    cannot fit (estimate above :data:`EARLY_MARGIN` x the device) before any tool runs;
    :mod:`fpga.synth` checks again on the synthesised netlist before place and route, and
    turns nextpnr's packing overflow into the same one-line error.

    Measured (acc_bits 32 unless given, 100 MHz targets; docs/boards.md has the table, the
    critical paths and the earlier builds):

    ==========  ============  ===============  ======================================
    board       T             logic cells      verdict
    ==========  ============  ===============  ======================================
    orangecrab  8 (L=4, 24)   18111 (75 %)     133.6 MHz, target met (cbd4e2e); with
                                               acc_bits 32 (20706, 85 % at a054782)
                                               nextpnr found no legal placement
    orangecrab  8 (L=8)       24305 (100 %)    does not fit (packer; a054782)
    ulx3s       8             24272 (29 %)     102.1 MHz, target met (11a4f22, seed 1;
                                               90.9-107.1 over the last eight builds)
    ulx3s       16            61045 (73 %)     routes in 31 minutes; 88.4 MHz, target
                                               missed (11a4f22, seed 1; 91.5 at 3bb81ba)
    icebreaker  2 (18, L=1)   7760 (147 %)     does not fit (packer; 2026-12-07)
    icebreaker  2 (18, L=1)   8435 (160 %)     the profile, not pipelined: does not fit
                                               (packer; 9622 pipelined, same day)
    icebreaker  4 (19, L=1)   11144 (211 %)    the profile: does not fit (packer; 13518
                                               pipelined, same day)
    ==========  ============  ===============  ======================================

    Since the output path was pipelined for 100 MHz on the ECP5 boards, no size fits the
    iCE40UP5K: most of its flip-flops are fed by other flip-flops and take a logic cell
    each. The board's profile (``default_pipelined`` False: no queue rings, register
    slices or tile-sum delay lines; the rescaler's ring in block RAM from 16 beats per
    tile) takes 1,174 cells off T = 2 and 2,376 off T = 4; the rest is the fixed part of
    the top (docs/boards.md has the cells per unit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.build import Attrs
import operator
from functools import reduce

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Instance,
                          Module, ResetSignal, Signal, Value)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.resources import UARTResource
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from golden.params import NibbleParams

from .pll import ECP5PLL, ICE40PLL, ecp5_pll_config, ice40_pll_config

__all__ = ["Board", "BOARDS", "get_board", "estimate_luts", "EARLY_MARGIN", "clock_config",
           "BoardTop", "UnitProbeTop", "probe_ports", "probe_flops", "DEFAULT_BAUD",
           "global_buffer"]

#: UART speed of the host bridge on every board.
DEFAULT_BAUD = 115200


@dataclass(frozen=True)
class Board:
    """One row of the board table.

    Attributes
    ----------
    name : str
        What ``nibble synth --board`` takes.
    platform : type
        The amaranth-boards platform class.
    family : str
        ``"ecp5"`` or ``"ice40"``.
    device : str
        FPGA part.
    osc_mhz : float
        Board oscillator.
    default_mhz : float
        Clock (and timing target) when ``--freq`` is not given.
    uart : tuple
        (resource name, number) of the UART pins.
    reset : tuple
        (resource name, number) of the reset button.
    luts, ffs, brams, dsps : int
        Device capacity: logic cells (ECP5 TRELLIS_COMB / iCE40 ICESTORM_LC), flip-flops,
        block RAMs (DP16KD / SB_RAM40_4K), multipliers (MULT18X18D / SB_MAC16).
    lut_model : tuple
        The size model of :func:`estimate_luts`.
    default_lanes : int or None
        ``lanes`` when ``nibble synth`` is not given ``--lanes`` (None: T, full width).
    default_out_lanes : dict
        ``out_lanes`` per size T when ``nibble synth`` is not given ``--out-lanes``
        (a size not listed: ``lanes``).
    default_stochastic : bool
        ``NibbleParams.stochastic`` when ``nibble synth`` is given neither
        ``--stochastic`` nor ``--no-stochastic``: False where the log4 unit's stochastic
        rounding does not fit beside the rest (the 25F and the UP5K).
    default_pipelined : bool
        ``NibbleParams.pipelined`` when ``nibble synth`` is given neither
        ``--pipelined`` nor ``--no-pipelined``: False on the iCE40, whose 30 MHz target
        needs none of the register stages the ECP5 boards' 100 MHz does, and whose
        logic cells each hold one flip-flop beside one LUT.
    global_reset : bool
        The core's reset goes through a global network (:func:`global_buffer`). Off on
        the OrangeCrab's 25F: with the PLL's clock on a DCC, nextpnr's router2 found no
        route from the reset register into a second DCC's input (8x8, seeds 1 and 2,
        2026-12-07), while without it the 8x8 met 129.8 MHz.
    """

    name: str
    platform: type
    family: str
    device: str
    osc_mhz: float
    default_mhz: float
    uart: tuple
    reset: tuple
    luts: int
    ffs: int
    brams: int
    dsps: int
    lut_model: tuple
    default_lanes: int | None = None
    global_reset: bool = True
    default_stochastic: bool = True
    default_out_lanes: dict = field(default_factory=dict)
    default_pipelined: bool = True

    def params(self, tile: int, acc_bits: int = 32, lanes: int | None = None,
               out_lanes: int | None = None, stochastic: bool | None = None,
               pipelined: bool | None = None):
        """The :class:`golden.params.NibbleParams` ``nibble synth`` builds on this board:
        the values given, the board's defaults for those left None (``out_lanes``: the
        board's for the size, never above the lanes)."""
        lanes = self.default_lanes if lanes is None else lanes
        if out_lanes is None and tile in self.default_out_lanes:
            out_lanes = min(self.default_out_lanes[tile], tile if lanes is None else lanes)
        stochastic = self.default_stochastic if stochastic is None else stochastic
        pipelined = self.default_pipelined if pipelined is None else pipelined
        return NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, out_lanes=out_lanes,
                            stochastic=stochastic, pipelined=pipelined)

    def make_platform(self):
        """A fresh platform instance (resources added for OrangeCrab's UART)."""
        plat = self.platform()
        if self.name == "orangecrab":
            plat.add_resources([
                UARTResource(0, rx="0", tx="1", conn=("io", 0),
                             attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP")),
            ])
        return plat


#: Size model of the board top, in post-place-and-route logic cells (see estimate_luts):
#: (base, per column, per PE, per accumulator bit, per accumulator bit and column).
#: ECP5 (TRELLIS_COMB): fitted exactly to the measured T = 4, 8, 16 builds at acc_bits 32
#: (10083, 21381, 60661 cells); the accumulator terms from yosys LUT4 counts of the whole
#: HostBridge at T = 2 and 4 with acc_bits 32 against 18/19. iCE40 (ICESTORM_LC), the
#: board's profile (one lane, no stochastic rounding, not pipelined): the ECP5 model's
#: column and accumulator terms x 1.08 (the measured ratio of a T = 2, acc_bits 18 build
#: of 2026-11-30), base and PE terms fitted exactly to nextpnr's packer counts of the
#: profile at T = 2, acc_bits 18 (8435) and T = 4, acc_bits 19 (11144; 2026-12-07).
_ECP5_MODEL = (4346, 739, 173.8, 26, 21)
_ICE40_MODEL = (7462.1, 798.1, 221.52, 28.1, 22.7)

#: The early check refuses a build only when the estimate exceeds the device by this
#: factor; closer calls go on to the exact checks (netlist after synthesis, nextpnr packing).
EARLY_MARGIN = 1.25

BOARDS = {
    "ulx3s": Board(
        name="ulx3s", platform=ULX3S_85F_Platform, family="ecp5", device="LFE5U-85F",
        osc_mhz=25.0, default_mhz=100.0, uart=("uart", 0), reset=("button_fire", 0),
        luts=83640, ffs=83640, brams=208, dsps=156, lut_model=_ECP5_MODEL,
        # the 16x16's output stages at a quarter width: at full width they filled the
        # die with the gradient unit (77,110 logic cells, 92 %, did not route at 51a3cab)
        default_out_lanes={16: 4}),
    "orangecrab": Board(
        name="orangecrab", platform=OrangeCrabR0_2_25FPlatform, family="ecp5",
        device="LFE5U-25F", osc_mhz=48.0, default_mhz=48.0, uart=("uart", 0),
        reset=("button", 0), luts=24288, ffs=24288, brams=56, dsps=28,
        lut_model=_ECP5_MODEL, global_reset=False, default_stochastic=False,
        # at full width nextpnr's HeAP placer hung after its first iteration on the
        # 8x8 (4 lanes, acc_bits 24; seeds 1-3, 2026-12-07, at e53ad2f and later); with 2
        # output lanes it packs 75 % and meets 113.7 MHz
        default_out_lanes={8: 2}),
    "icebreaker": Board(
        name="icebreaker", platform=ICEBreakerPlatform, family="ice40", device="iCE40UP5K",
        osc_mhz=12.0, default_mhz=20.0, uart=("uart", 0), reset=("button", 0),
        luts=5280, ffs=5280, brams=30, dsps=8, lut_model=_ICE40_MODEL, default_lanes=1,
        default_stochastic=False, default_pipelined=False),
}


class UnknownBoard(ValueError):
    pass


def get_board(name: str) -> Board:
    """The board called ``name``; ValueError (one line) naming the choices otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UnknownBoard(f"unknown board {name!r}; choose from {', '.join(BOARDS)}") from None


def estimate_luts(board: Board, tile: int, acc_bits: int = 32, lanes: int | None = None) -> int:
    """Rough logic-cell count of the board top with a ``tile`` x ``tile`` array::

        base + per_col * L + per_pe * T**2 + (acc_bits - 32) * (per_bit + per_bit_col * L)

    with L = ``lanes`` (default T) and the board family's calibrated numbers
    (``board.lut_model``). The PE term is the array; the column term is mostly the output
    path (rescaler, requantizer, log4 quantizer), L elements wide; the base is the host
    bridge, the FIFOs and the controller. ECP5: fitted to full-width builds (L = T),
    within about 5 % of each; since the output path was pipelined (issue 12) it
    underestimates by 4 to 18 % (21381 against 24533 at ULX3S T = 8; 60662 against 63456
    at T = 16), so it refuses late, never wrongly. iCE40: fitted to the board's profile
    with one lane (exact at T = 2 and 4); a build with ``--pipelined`` or more lanes is
    larger. Used only to refuse hopeless builds before any tool runs (see
    :data:`EARLY_MARGIN`)."""
    base, per_col, per_pe, per_bit, per_bit_col = board.lut_model
    lanes = tile if lanes is None else lanes
    return int(base + per_col * lanes + per_pe * tile * tile
               + (acc_bits - 32) * (per_bit + per_bit_col * lanes))


def clock_config(board: Board, freq_mhz: float | None):
    """(achieved MHz, PLL config or None) for running ``board`` at ``freq_mhz``
    (None: the board's default). Raises ValueError if no PLL setting reaches it."""
    want = board.default_mhz if freq_mhz is None else float(freq_mhz)
    if want <= 0:
        raise ValueError(f"clock frequency must be positive, got {want:g} MHz")
    if abs(want - board.osc_mhz) < 1e-6:
        return board.osc_mhz, None
    if board.family == "ecp5":
        cfg = ecp5_pll_config(board.osc_mhz, want)
    else:
        cfg = ice40_pll_config(board.osc_mhz, want)
    return cfg.f_out_mhz, cfg


class BoardTop(Elaboratable):
    """The host bridge with its accelerator, on a board's clock, reset, UART and LED.

    Parameters
    ----------
    params : NibbleParams
    board : Board or str
    freq_mhz : float or None
        Clock of the design; None: ``board.default_mhz``.
    baud : int
        UART speed.

    Attributes
    ----------
    clock_mhz : float
        The clock the design actually runs at (the PLL's nearest setting).
    pll : ECP5PLLConfig, ICE40PLLConfig or None
    """

    def __init__(self, params: NibbleParams, board, freq_mhz=None, *, baud=DEFAULT_BAUD):
        self.params = params
        self.board = get_board(board) if isinstance(board, str) else board
        self.clock_mhz, self.pll = clock_config(self.board, freq_mhz)
        self.baud = baud

    def elaborate(self, platform):
        m = Module()
        self._clock_and_reset(m, platform)
        self._design(m, platform)
        return m

    def _clock_and_reset(self, m, platform):
        """The ``sync`` domain: the board clock or a PLL; reset from a button or the PLL's
        lock, released synchronously."""
        b = self.board
        m.domains.sync = ClockDomain("sync")
        clk_port = platform.request(platform.default_clk, dir="-")
        locked = Signal(init=1)
        if self.pll is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.d.comb += ClockSignal("sync").eq(clk_buf.i)
        elif b.family == "ecp5":
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.submodules.pll = pll = ECP5PLL(self.pll, clk_buf.i)
            m.d.comb += [ClockSignal("sync").eq(pll.clk_out), locked.eq(pll.locked)]
        else:
            m.submodules.pll = pll = ICE40PLL(self.pll, clk_port.io)
            m.d.comb += [ClockSignal("sync").eq(pll.clk_out), locked.eq(pll.locked)]
        # The oscillator pin carries the board's clock constraint; nextpnr derives the
        # PLL output's constraint from it and the PLL's dividers.
        m.submodules.button = button = io.Buffer("i", platform.request(*b.reset, dir="-"))
        m.submodules.rst_sync = ResetSynchronizer(button.i | ~locked, domain="sync")

    def _uart_and_led(self, m, platform):
        """(rx input, tx output, led output) buffers of the board's UART and busy LED."""
        b = self.board
        uart = platform.request(*b.uart, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        if b.name == "ulx3s":
            led = platform.request("led", 0, dir="-")
        elif b.name == "orangecrab":
            led = platform.request("rgb_led", 0, dir="-").g
        else:
            led = platform.request("led_g", 0, dir="-")
        m.submodules.led = led_buf = io.Buffer("o", led)
        return uart_rx.i, uart_tx.o, led_buf.o

    def _design(self, m, platform):
        """The host bridge on the UART, busy on the LED; the accelerator in a ``core``
        domain on the same clock, reset by the bridge's registered ``core_rst`` through a
        global buffer (:func:`global_buffer`)."""
        from rtl.host_bridge import HostBridge
        m.submodules.bridge = bridge = HostBridge(
            self.params, clk_hz=int(round(self.clock_mhz * 1e6)), baud=self.baud,
            core_domain="core")
        m.domains.core = ClockDomain("core")
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")),
                     ResetSignal("core").eq(global_buffer(m, self.board, bridge.core_rst))]
        rx, tx, led = self._uart_and_led(m, platform)
        m.d.comb += [bridge.rx.eq(rx), tx.eq(bridge.tx), led.eq(bridge.busy)]


def global_buffer(m, board: Board, net: Value) -> Value:
    """``net`` through one of the die's global (clock) networks, for a control net that
    reaches thousands of flip-flops: a reset.

    nextpnr-ecp5 promotes only clock nets to globals by itself (``ecp5/globals.cc``), so
    on an ECP5 the net goes through a ``DCCA`` placed here, and every flip-flop's LSR
    takes it off the global network in its own tile. nextpnr-ice40 promotes high-fanout
    resets and enables by itself; there the net is returned as it is, as on a board whose
    ``global_reset`` is off."""
    if board.family != "ecp5" or not board.global_reset:
        return net
    out = Signal(name="global_rst")
    m.submodules.global_rst = Instance("DCCA", i_CLKI=net, i_CE=1, o_CLKO=out)
    return out


#: Ports of a unit that take the board's clock and reset, not a probe flip-flop: the AXI
#: top's (:class:`rtl.nibble_axi.NibbleAxi`) ``aclk`` and active-low ``aresetn``.
_CLOCK_PORTS = {("aclk",): lambda: ClockSignal("sync"), ("aresetn",): lambda: ~ResetSignal("sync")}


def probe_ports(unit):
    """A unit's ports as :class:`UnitProbeTop` drives them: (input signals, output signals,
    [(path, signal)] of its clock and reset ports); constant members are left out."""
    inputs, outputs, clocks = [], [], []
    for path, member, value in unit.signature.flatten(unit):
        value = Value.cast(value)
        if not isinstance(value, Signal):
            continue                       # a constant member (always-ready stream)
        if path in _CLOCK_PORTS:
            clocks.append((path, value))
        else:
            (inputs if member.flow == In else outputs).append(value)
    return inputs, outputs, clocks


def probe_flops(unit) -> int:
    """Flip-flops :class:`UnitProbeTop` adds around ``unit``: one per input bit (the
    chain), one per output bit, and the registers of the XOR folding (4 into 1 per level)."""
    inputs, outputs, _ = probe_ports(unit)
    n_in, n_out = sum(len(v) for v in inputs), sum(len(v) for v in outputs)
    folds, level = 0, n_out
    while level > 1:
        level = -(-level // 4)
        folds += level
    return max(1, n_in) + max(1, n_out) + folds


class UnitProbeTop(BoardTop):
    """One unit alone on a board, between registers, for its own timing.

    Every input port of the unit is driven by a flip-flop of one long shift register
    fed from the UART's rx pin, and every output port goes into a flip-flop whose bits are
    folded by registered XOR levels into the LED, so all of the unit's logic stays and
    every path that starts or ends outside it is one register to one register. Its
    critical path is therefore the unit's own. A unit with clock and reset ports of its
    own (the AXI top's ``aclk``, ``aresetn``) gets the board's clock and reset on them.

    Parameters
    ----------
    make_unit : callable(NibbleParams) -> wiring.Component
    (others as :class:`BoardTop`)
    """

    def __init__(self, params, board, freq_mhz=None, *, make_unit, baud=DEFAULT_BAUD):
        super().__init__(params, board, freq_mhz, baud=baud)
        self.make_unit = make_unit

    def _design(self, m, platform):
        unit = self.make_unit(self.params)
        clocked = any(path in _CLOCK_PORTS for path, _, _ in unit.signature.flatten(unit))
        # Its own (local) sync domain would collide with the board's in Amaranth 0.5's
        # domain propagation, so a unit with clock ports has it renamed.
        m.submodules.unit = DomainRenamer({"sync": "unit"})(unit) if clocked else unit
        rx, tx, led = self._uart_and_led(m, platform)
        inputs, outputs, clocks = probe_ports(unit)
        for path, value in clocks:             # a unit with its own clock and reset ports
            m.d.comb += value.eq(_CLOCK_PORTS[path]())
        chain = Signal(max(1, sum(len(v) for v in inputs)), reset_less=True)
        m.d.sync += chain.eq(Cat(rx, chain[:-1]))
        at = 0
        for value in inputs:
            m.d.comb += value.eq(chain[at:at + len(value)])
            at += len(value)
        bits = Signal(max(1, sum(len(v) for v in outputs)), reset_less=True)
        m.d.sync += bits.eq(Cat(*outputs))
        level = [bits[i] for i in range(len(bits))]
        while len(level) > 1:
            folded = []
            for i in range(0, len(level), 4):
                reg = Signal(reset_less=True)
                m.d.sync += reg.eq(reduce(operator.xor, level[i:i + 4]))
                folded.append(reg)
            level = folded
        m.d.comb += [led.eq(level[0]), tx.eq(1)]
