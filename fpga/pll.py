"""Board clock synthesis: PLL settings and instances for ECP5 (``EHXPLLL``) and iCE40
(``SB_PLL40_PAD``).

The settings are searched exhaustively over the divider ranges, the way Project Trellis'
``ecppll`` and IceStorm's ``icepll`` do, and the closest output frequency wins; the
achieved frequency is returned so the caller can constrain and report the real clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Elaboratable, Instance, Module, Signal

__all__ = ["ECP5PLLConfig", "ICE40PLLConfig", "ecp5_pll_config", "ice40_pll_config",
           "ECP5PLL", "ICE40PLL"]


@dataclass(frozen=True)
class ECP5PLLConfig:
    """EHXPLLL dividers: f_out = f_in / clki_div * clkfb_div (feedback from CLKOP),
    f_vco = f_out * clkop_div."""

    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in_mhz: float
    f_out_mhz: float
    f_vco_mhz: float


@dataclass(frozen=True)
class ICE40PLLConfig:
    """SB_PLL40 dividers (SIMPLE feedback): f_out = f_in * (divf + 1) / (divr + 1) / 2**divq."""

    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in_mhz: float
    f_out_mhz: float
    f_vco_mhz: float


def ecp5_pll_config(f_in_mhz: float, f_out_mhz: float) -> ECP5PLLConfig:
    """Closest EHXPLLL setting (PFD 3.125..400 MHz, VCO 400..800 MHz, output 3.125..400 MHz).

    Raises ValueError if the output frequency is out of the PLL's range."""
    if not 3.125 <= f_out_mhz <= 400:
        raise ValueError(f"ECP5 PLL output must be 3.125..400 MHz, got {f_out_mhz:g} MHz")
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            if not 3.125 <= f_out <= 400:
                continue
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if 400 <= f_vco <= 800:
                    # closest output first, then the VCO nearest the middle of its range
                    key = (abs(f_out - f_out_mhz), abs(f_vco - 600))
                    if best is None or key < best[0]:
                        best = (key, ECP5PLLConfig(clki_div, clkfb_div, clkop_div,
                                                   f_in_mhz, f_out, f_vco))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting for {f_in_mhz:g} -> {f_out_mhz:g} MHz")
    return best[1]


def ice40_pll_config(f_in_mhz: float, f_out_mhz: float) -> ICE40PLLConfig:
    """Closest SB_PLL40 setting in SIMPLE feedback mode (input 10..133 MHz, PFD 10..133 MHz,
    VCO 533..1066 MHz, output 16..275 MHz), as IceStorm's ``icepll`` searches it.

    Raises ValueError if the output frequency is out of the PLL's range."""
    if not 16 <= f_out_mhz <= 275:
        raise ValueError(f"iCE40 PLL output must be 16..275 MHz, got {f_out_mhz:g} MHz")
    best = None
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = f_vco / (1 << divq)
                key = abs(f_out - f_out_mhz)
                if best is None or key < best[0]:
                    filter_range = (1 if f_pfd < 17 else 2 if f_pfd < 26 else 3 if f_pfd < 44
                                    else 4 if f_pfd < 66 else 5 if f_pfd < 101 else 6)
                    best = (key, ICE40PLLConfig(divr, divf, divq, filter_range,
                                                f_in_mhz, f_out, f_vco))
    if best is None:
        raise ValueError(f"no iCE40 PLL setting for {f_in_mhz:g} -> {f_out_mhz:g} MHz")
    return best[1]


class ECP5PLL(Elaboratable):
    """One EHXPLLL, CLKOP fed back to CLKFB.

    Parameters
    ----------
    config : ECP5PLLConfig
    clk_in : Signal
        The reference clock (from an input buffer).

    Attributes
    ----------
    clk_out : Signal
        CLKOP, ``config.f_out_mhz``.
    locked : Signal
        LOCK.
    """

    def __init__(self, config: ECP5PLLConfig, clk_in):
        self.config = config
        self.clk_in = clk_in
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        c = self.config
        m = Module()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{c.f_in_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{c.f_out_mhz:g}",
            a_ICP_CURRENT="12",
            a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=c.clki_div,
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=c.clkop_div,
            p_CLKOP_CPHASE=c.clkop_div - 1,
            p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=c.clkfb_div,
            i_RST=Const(0),
            i_STDBY=Const(0),
            i_CLKI=self.clk_in,
            i_CLKFB=self.clk_out,
            i_PHASESEL0=Const(0),
            i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=self.clk_out,
            o_LOCK=self.locked,
        )
        return m


class ICE40PLL(Elaboratable):
    """One SB_PLL40_PAD in SIMPLE feedback mode, driving the global network.

    Parameters
    ----------
    config : ICE40PLLConfig
    pad : IOValue
        The clock input pad (a PLL-capable global input, e.g. iCEBreaker pin 35).

    Attributes
    ----------
    clk_out : Signal
        PLLOUTGLOBAL, ``config.f_out_mhz``.
    locked : Signal
        LOCK.
    """

    def __init__(self, config: ICE40PLLConfig, pad):
        self.config = config
        self.pad = pad
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        c = self.config
        m = Module()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=c.divr,
            p_DIVF=c.divf,
            p_DIVQ=c.divq,
            p_FILTER_RANGE=c.filter_range,
            i_PACKAGEPIN=self.pad,
            i_RESETB=Const(1),
            i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=self.clk_out,
            o_LOCK=self.locked,
        )
        return m
