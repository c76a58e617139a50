"""The Verilated ``nibble_axi`` as a device (``nibble.device.Device.axi``): the API of
:class:`wire.host_driver.HostDriver` (``status``, ``reset``, ``write``, ``read``,
``gemm``, ``run``) over the AXI ports instead of the UART host link.

The bus models are :class:`verif.axi_link.AxiLink`'s (cocotbext-axi). The device is
synchronous code: it runs in a ``cocotb.task.bridge`` thread, and every method blocks it
on ``cocotb.task.resume``-d coroutines while simulated time passes (like
:class:`verif.sim_link.SimLink`). ``run`` returns the same
:class:`wire.gemm_protocol.GemmOutput` as :func:`wire.gemm_protocol.expected`.
"""

from __future__ import annotations

from cocotb.task import resume
from cocotb.utils import get_sim_time

from wire.axi import decode_params
from wire.gemm_protocol import decode
from wire.host_driver import DeviceError, GemmDevice
from wire.host_link import Status

from .axi_link import CLOCK_NS, AxiLink

__all__ = ["AxiDevice"]


async def _call(fn, *args):
    """``fn(*args)`` inside the cocotb scheduler (cocotb objects are not thread-safe)."""
    return fn(*args)


async def _started(dut) -> AxiLink:
    link = AxiLink(dut)
    await link.start()
    return link


class AxiDevice(GemmDevice):
    """A ``nibble_axi`` behind its AXI ports, with the API of
    :class:`wire.host_driver.HostDriver`.

    Parameters
    ----------
    link : AxiLink
        Started (:meth:`verif.axi_link.AxiLink.start`: ID and VERSION checked, PARAMS
        read).
    params : NibbleParams or None
        Expected parameters; None takes the build's (from PARAMS). A build with other
        ones (T, acc_bits, lanes, out_lanes or stochastic rounding: PARAMS has them
        all) raises :class:`DeviceError`.
    poll_cycles : int
        Clock cycles :meth:`read` waits for results when it holds none, and how often
        :meth:`run` reads STATUS while it waits.
    timeout_cycles : int or None
        Clock cycles :meth:`run` allows a GEMM before :class:`DeviceError`; None: 16 per
        beat the GEMM moves, plus 10,000 (a GEMM takes about half a cycle per beat).

    Opening the device (:meth:`open`) checks the build and soft-resets it.
    """

    def __init__(self, link: AxiLink, params=None, *, poll_cycles: int = 1000,
                 timeout_cycles: int | None = None):
        self.link = link
        self.poll_cycles, self.timeout_cycles = poll_cycles, timeout_cycles
        board = link.params
        if params is not None and params != board:
            raise DeviceError(f"nibble_axi has {board}; expected {params}")
        self.params = board
        self._inbox = []          # result beats taken from the sink, not read yet
        self.reset()

    @classmethod
    def open(cls, dut, params=None, **kwargs) -> "AxiDevice":
        """The ``nibble_axi`` top ``dut``, from a ``cocotb.task.bridge`` thread: start its
        clock and bus models, reset it (``aresetn``), check ID and VERSION (else
        :class:`DeviceError`), read PARAMS."""
        return cls(resume(_started)(dut), params, **kwargs)

    # ------------------------------------------------------------------ registers
    def read_register(self, name: str) -> int:
        """The word register ``name`` (:data:`wire.axi.REGISTERS`) holds, e.g. a counter."""
        return resume(self.link.read)(name)

    def status(self) -> Status:
        """The :class:`wire.host_link.Status` of the UART link, from the registers:
        ``version`` is VERSION (the register map's, :data:`wire.axi.MAP_VERSION`, not
        the UART protocol's); ``tile`` and ``acc_bits`` are PARAMS's fields (PARAMS has
        lanes, out_lanes and stochastic too: :attr:`params`); ``busy`` and ``refused``
        are STATUS's (its ``saturated`` and ``fault`` have no place there:
        :meth:`read_register`). ``results`` counts the result beats that came out of
        ``m_axis_result`` and wait, in the host's buffer, for :meth:`read`: whole GEMMs
        only, since the sink hands a GEMM's beats over at its TLAST."""
        return resume(self._status)()

    async def _status(self) -> Status:
        version = await self.link.read("VERSION")
        params = decode_params(await self.link.read("PARAMS"))
        flags = await self.link.fields("STATUS")
        return Status(version, params.tile, params.acc_bits, bool(flags["busy"]),
                      self._collect(), bool(flags["refused"]))

    def reset(self) -> None:
        """CONTROL.soft_reset, with the DMA channels stopped around it (beats not yet
        taken and results not yet read are dropped); returns once it has acted: STATUS
        idle (not busy, refused or fault) and GEMMS 0, else :class:`DeviceError`."""
        resume(self._reset)()

    async def _reset(self) -> None:
        await self.link.soft_reset()
        self._inbox.clear()
        flags = await self.link.fields("STATUS")
        gemms = await self.link.read("GEMMS")
        if flags["busy"] or flags["refused"] or flags["fault"] or gemms:
            raise DeviceError(f"the soft reset did not act: STATUS {flags}, GEMMS {gemms}")

    # ------------------------------------------------------------------ streams
    def write(self, port: str, words) -> bool:
        """Queue beats on input stream ``port``'s AXI4-Stream source, one frame (a DMA
        transfer), sent at the port's pace as simulated time passes (in :meth:`read`,
        :meth:`status`, :meth:`run`). Always True: a DMA channel does not refuse beats, it
        waits for ``tready`` (the UART link's ``write`` is False when its inlet is
        full)."""
        if port not in AxiLink.INPUTS:
            raise ValueError(f"no input stream {port!r}; the streams are {', '.join(AxiLink.INPUTS)}")
        resume(_call)(self.link.send, port, list(words))
        return True

    def read(self, max_beats: int) -> list:
        """Up to ``max_beats`` result beats the host holds (as the UART link's ``read``
        returns them: ``last`` set on each GEMM's final beat), waiting up to
        :attr:`poll_cycles` clock cycles for results if it holds none. Beats arrive a
        GEMM at a time: the sink hands a frame over at its TLAST."""
        return resume(self._read)(max_beats)

    async def _read(self, max_beats: int) -> list:
        if not self._collect():
            await self.link.sink.wait(self.poll_cycles * CLOCK_NS, "ns")
            self._collect()
        out = self._inbox[:max_beats]
        del self._inbox[:max_beats]
        return out

    def _collect(self) -> int:
        """Move the frames the sink holds into the inbox; the inbox's length."""
        sink = self.link.sink
        while not sink.empty():
            self._inbox += self.link.result_words(sink.recv_nowait())
        return len(self._inbox)

    # ------------------------------------------------------------------ GEMM
    def run(self, job):
        """Run one :class:`~wire.gemm_protocol.GemmJob`; return its ``GemmOutput``.

        A job the hardware cannot run raises ``ValueError`` before any beat is sent
        (:func:`wire.gemm_protocol.check_job`). Every stream's beats are queued at once
        (each port has a DMA channel of its own), then the results are read; STATUS is
        read every :attr:`poll_cycles` cycles without them, and a refused command, a
        fault or :attr:`timeout_cycles` raise :class:`DeviceError`."""
        return resume(self._run)(job)

    async def _run(self, job):
        beats = self.link.send_job(job)
        wanted = beats.result_beats
        moved = sum(map(len, beats.inputs().values())) + wanted
        limit = self.timeout_cycles or 16 * moved + 10_000
        start = get_sim_time("ns")
        results = []
        while len(results) < wanted:
            got = await self._read(wanted - len(results))
            results += got
            if got:
                continue
            flags = await self.link.fields("STATUS")
            if flags["refused"] or flags["fault"]:
                why = "refused a command as illegal" if flags["refused"] else "raised its fault flag"
                raise DeviceError(f"the accelerator {why} (STATUS); reset it")
            cycles = (get_sim_time("ns") - start) // CLOCK_NS
            if cycles > limit:
                raise DeviceError(f"no results in {cycles:,} cycles: {len(results)} of "
                                  f"{wanted} result beats; STATUS {flags}")
        return decode(job, self.params, results)
