"""GEMM backends for training: golden (NumPy), rtl (the Verilated accelerator), axi (the
Verilated ``nibble_axi``, through its AXI4-Stream ports) and serial (a board through
:class:`nibble.device.Device`).

Every backend takes the same :class:`wire.gemm_protocol.GemmJob` and returns the same
:class:`wire.gemm_protocol.GemmOutput`, so the training loop cannot tell them apart. The
hardware backends check every result against golden as they go and stop the run at the
first mismatch with a report (layer, step, GEMM kind, coordinates, both values).
"""

from __future__ import annotations

from golden.params import NibbleParams
from wire.gemm_protocol import GemmJob, GemmOutput, expected
from verif.scoreboard import first_mismatch

from .training import GoldenBackend

__all__ = ["BACKENDS", "GemmMismatch", "CheckedBackend", "RtlBackend", "AxiBackend",
           "SerialBackend", "make_backend"]

BACKENDS = ("golden", "rtl", "axi", "serial")


class GemmMismatch(RuntimeError):
    """A hardware GEMM differed from golden; the message is the report."""


class CheckedBackend(GoldenBackend):
    """Runs each job on hardware (``_execute``) and compares it with golden.

    Attributes
    ----------
    checked : int
        GEMMs that matched golden bit for bit.

    The hardware has the gradient unit (dual fp4 output, stochastic rounding), so
    training runs each backward dX GEMM as one fused pass on it; ``fused=False`` runs
    the three passes (raw, phase 0, phase 1) instead, for comparison.
    """

    name = "hardware"

    def __init__(self, params: NibbleParams, *, fused: bool = True):
        super().__init__(params, fused=fused)
        self.checked = 0

    def _execute(self, job: GemmJob) -> GemmOutput:
        raise NotImplementedError

    def run(self, job: GemmJob, role: str, layer: int) -> GemmOutput:
        self._count(job, role)
        got = self._execute(job)
        report = first_mismatch(job, got, expected(job, self.params))
        if report:
            raise GemmMismatch(f"{self.name} backend: layer {layer}, step {self.step}, "
                               f"{role} GEMM (#{self.gemms} of the run): {report}")
        self.checked += 1
        return got


class RtlBackend(CheckedBackend):
    """The Verilated ``nibble_top`` through the fast C++ harness
    (:class:`verif.fast_sim.FastAccelerator`); ``cycles`` counts simulated clocks."""

    name = "rtl"
    #: The generated top the harness drives (:data:`verif.fast_sim.TOPS`).
    top = "nibble_top"

    def __init__(self, params: NibbleParams, *, seed: int | None = 0, p_stall: float = 0.0,
                 fused: bool = True):
        from verif.fast_sim import FastAccelerator

        super().__init__(params, fused=fused)
        self.sim = FastAccelerator(params, seed=seed, p_stall=p_stall, top=self.top)
        self._start = self.sim.cycles            # the harness's reset cycles
        #: per GEMM role: GEMMs, simulated cycles, ideal cycles (one T-deep tile step
        #: per T cycles with every PE busy), for array utilization, and the MACs of the
        #: unpadded shapes (their share of ideal * T * T is what padding to tiles leaves)
        self.role_cycles = {}

    def run(self, job: GemmJob, role: str, layer: int) -> GemmOutput:
        before = self.sim.cycles
        out = super().run(job, role, layer)
        mt, kt, nt = job.tiles
        used = self.role_cycles.setdefault(role, {"gemms": 0, "cycles": 0, "ideal": 0, "macs": 0})
        used["gemms"] += 1
        m, k, n = job.shape
        used["macs"] += m * k * n
        used["cycles"] += self.sim.cycles - before
        used["ideal"] += mt * kt * nt * self.params.tile
        return out

    def _execute(self, job: GemmJob) -> GemmOutput:
        out = self.sim.run(job)
        self.cycles = self.sim.cycles - self._start
        return out


class AxiBackend(RtlBackend):
    """The Verilated ``nibble_axi`` (:class:`rtl.nibble_axi.NibbleAxi`) on the fast C++
    harness: every GEMM's beats through its AXI4-Stream slaves, its results from the
    AXI4-Stream master (TLAST ends each GEMM); the AXI4-Lite slave stays idle."""

    name = "axi"
    top = "nibble_axi"


class SerialBackend(CheckedBackend):
    """A board running the nibble bitstream, through :class:`nibble.device.Device`."""

    name = "serial"

    def __init__(self, params: NibbleParams, port: str, baud: int | None = None):
        from .device import Device

        super().__init__(params)
        kwargs = {} if baud is None else {"baud": baud}
        try:
            self.device = Device.serial(port, params=params, **kwargs)
        except (RuntimeError, OSError) as exc:     # no pyserial, no port, no board answering
            raise ValueError(f"serial backend on {port}: {exc}") from None

    def _execute(self, job: GemmJob) -> GemmOutput:
        return self.device.run(job)


def make_backend(name: str, params: NibbleParams, *, port: str | None = None) -> GoldenBackend:
    """The backend called ``name`` (one of :data:`BACKENDS`)."""
    if name == "golden":
        return GoldenBackend(params)
    if name == "rtl":
        return RtlBackend(params)
    if name == "axi":
        return AxiBackend(params)
    if name == "serial":
        if not port:
            raise ValueError("the serial backend needs --port (e.g. /dev/ttyUSB0)")
        return SerialBackend(params, port)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
