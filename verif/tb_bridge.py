"""cocotb testbench of ``host_bridge``: the Accelerator behind the UART bridge, driven
through the host driver :class:`nibble.device.Device` on the ``sim`` link.

The Device runs in a ``cocotb.task.bridge`` thread; :class:`verif.sim_link.SimLink`
is the line (driver and monitor), :func:`rtl.gemm_protocol.expected` the model, and
:func:`verif.tb_accelerator.scoreboard` compares. :class:`LineFaults` damages frames
on their way to the board and bytes on their way to the host; the driver must retry
and every result must stay exact. Parameters come from the environment
(:mod:`verif.runner`).
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.task import bridge

from nibble.device import Device

from .stimulus import random_job
from .tb_accelerator import PARAMS, SEED, scoreboard


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


def _run_gemms(dut, count, seed, faults=None):
    """Open a Device on the simulated board and run ``count`` random GEMMs; runs in a
    bridge thread. Returns the Device (for its stats)."""
    device = Device.sim(dut, params=PARAMS)
    if faults is not None:          # after opening: STATUS/RESET themselves are clean
        device.link.to_board, device.link.to_host = faults.to_board, faults.to_host
    rng = np.random.default_rng(seed)
    for i in range(count):
        # roles and output variants in turn, shapes at random (random_job's bins)
        job = random_job(rng, PARAMS, (i % 3, i % 5, bool(rng.random() < 0.7)))
        scoreboard(job, device.run(job), i, stalled=True)
    return device


@cocotb.test()
async def gemms_over_uart(dut):
    """Random GEMMs in every training and output mode over a clean line."""
    count = int(os.environ.get("NIBBLE_GEMMS", "6"))
    dut._log.info(f"seed {SEED}, T={PARAMS.tile}, acc_bits={PARAMS.acc_bits}, {count} GEMMs")
    device = await bridge(_run_gemms)(dut, count, SEED)
    dut._log.info(f"link: {device.stats}; {device.link.sent} bytes sent, "
                  f"{device.link.received} received")
    assert device.stats.retries == 0, f"retries on a clean line: {device.stats}"


@cocotb.test()
async def gemms_over_a_faulty_line(dut):
    """Flipped bits both ways and frames cut short: the driver retries, the results
    stay exact, and no request is executed twice."""
    faults = LineFaults(random.Random(SEED + 1), p_flip=0.08, p_cut=0.08, p_host=0.002)
    count = int(os.environ.get("NIBBLE_FAULTY_GEMMS", "8"))
    device = await bridge(_run_gemms)(dut, count, SEED + 1, faults)
    stats = device.stats
    dut._log.info(f"seed {SEED + 1}; link: {stats}; injected {faults.flipped} flipped and "
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
    faults = LineFaults(random.Random(SEED + 2), p_host=0.003)
    device = await bridge(_run_gemms)(dut, 3, SEED + 2, faults)
    dut._log.info(f"seed {SEED + 2}; link: {device.stats}; "
                  f"{faults.host_flipped} flipped bytes to the host")
    assert faults.host_flipped and device.stats.resent["READ"], str(device.stats)
