"""cocotb testbench of ``host_bridge``: the Accelerator behind the UART bridge, driven
through the host driver :class:`wire.host_driver.HostDriver` (what
:class:`nibble.device.Device` is) on the simulated line.

The driver runs in a ``cocotb.task.bridge`` thread; :class:`verif.sim_link.SimLink`
is the line (driver and monitor), :func:`wire.gemm_protocol.expected` the model, and a
:class:`verif.scoreboard.Scoreboard` compares. :class:`LineFaults` damages frames
on their way to the board and bytes on their way to the host; the driver must retry
and every result must stay exact. Each test's :class:`TB` owns its parameters and
seed (:class:`verif.runner.Bench`), stimulus and scoreboard.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.task import bridge

from wire.host_driver import HostDriver

from .runner import Bench
from .sim_link import SimLink
from .stimulus import random_job


class LineFaults:
    """Seeded line faults; counts what it did.

    Parameters
    ----------
    rng : random.Random
    p_flip, p_cut : float
        Per frame to the board: probability of one flipped bit, of cutting it short.
    p_host : float
        Per byte to the host: probability of one flipped bit.
    """

    def __init__(self, rng, p_flip=0.0, p_cut=0.0, p_host=0.0):
        self.rng, self.p_flip, self.p_cut, self.p_host = rng, p_flip, p_cut, p_host
        self.flipped = self.cut = self.host_flipped = 0

    def to_board(self, frame: bytes) -> bytes:
        r = self.rng.random()
        if r < self.p_cut:
            self.cut += 1
            return frame[:self.rng.randrange(1, len(frame))]
        if r < self.p_cut + self.p_flip:
            self.flipped += 1
            frame = bytearray(frame)
            frame[self.rng.randrange(len(frame))] ^= 1 << self.rng.randrange(8)
            return bytes(frame)
        return frame

    def to_host(self, byte: int) -> int:
        if self.rng.random() < self.p_host:
            self.host_flipped += 1
            return byte ^ (1 << self.rng.randrange(8))
        return byte


class TB(Bench):
    """One test's bench (parameters and seeds: :class:`Bench`): a scoreboard, and
    :meth:`run_gemms`, which runs in a bridge thread."""

    def __init__(self, dut, seed_offset: int = 0):
        super().__init__(dut, seed_offset)
        self.scoreboard = self.make_scoreboard()

    def run_gemms(self, count, faults=None):
        """Open a driver on the simulated board and run ``count`` random GEMMs, each
        checked against golden. Returns the driver (for its stats)."""
        device = HostDriver(SimLink.open(self.dut), self.params)
        if faults is not None:          # after opening: STATUS/RESET themselves are clean
            device.link.to_board, device.link.to_host = faults.to_board, faults.to_host
        rng = np.random.default_rng(self.seed)
        for i in range(count):
            # roles and output variants in turn, shapes at random (random_job's bins)
            job = random_job(rng, self.params, (i % 3, i % 5, bool(rng.random() < 0.7)))
            self.scoreboard.check(job, device.run(job), i, stalled=True)
        return device


@cocotb.test()
async def gemms_over_uart(dut):
    """Random GEMMs in every training and output mode over a clean line."""
    tb = TB(dut)
    count = tb.gemms(default=6)
    device = await bridge(tb.run_gemms)(count)
    dut._log.info(f"link: {device.stats}; {device.link.sent} bytes sent, "
                  f"{device.link.received} received")
    assert device.stats.retries == 0, f"retries on a clean line: {device.stats}"


@cocotb.test()
async def gemms_over_a_faulty_line(dut):
    """Flipped bits both ways and frames cut short: the driver retries, the results
    stay exact, and no request is executed twice."""
    tb = TB(dut, seed_offset=1)
    faults = LineFaults(random.Random(tb.seed), p_flip=0.08, p_cut=0.08, p_host=0.002)
    count = tb.gemms(default=8, name="NIBBLE_FAULTY_GEMMS")
    device = await bridge(tb.run_gemms)(count, faults)
    stats = device.stats
    dut._log.info(f"seed {tb.seed}; link: {stats}; injected {faults.flipped} flipped and "
                  f"{faults.cut} cut frames to the board, {faults.host_flipped} flipped bytes "
                  f"to the host")
    assert faults.flipped and faults.cut and faults.host_flipped, "a fault kind was never injected"
    # every damaged frame to the board costs an attempt; damaged replies cost more
    assert stats.retries >= faults.flipped + faults.cut, str(stats)
    assert stats.naks["BAD_CRC"] and stats.naks["TIMEOUT"], str(stats)
    assert stats.bad_replies or stats.no_reply, str(stats)


@cocotb.test()
async def repeated_reads_return_the_same_beats(dut):
    """Only replies are damaged: READs and WRITEs are resent with the same sequence
    number, and the board replays instead of executing twice."""
    tb = TB(dut, seed_offset=2)
    faults = LineFaults(random.Random(tb.seed), p_host=0.003)
    device = await bridge(tb.run_gemms)(3, faults)
    dut._log.info(f"seed {tb.seed}; link: {device.stats}; "
                  f"{faults.host_flipped} flipped bytes to the host")
    assert faults.host_flipped and device.stats.resent["READ"], str(device.stats)
