"""cocotb tests of ``nibble.device.Device.axi`` on the Verilated ``nibble_axi``, run by
``tests/test_cocotb_axi.py`` on the bench's build (T = 4). Here and not in ``verif/``
because they open the device through :mod:`nibble`, which ``verif`` may not import.

The device runs in a ``cocotb.task.bridge`` thread, as a user's code does; every GEMM
is compared with :func:`wire.gemm_protocol.expected` bit for bit.
"""

from dataclasses import replace

import cocotb
import numpy as np
from cocotb.task import bridge

from nibble.device import Device
from verif.runner import params_from_env, seed_from_env
from verif.scoreboard import first_mismatch
from verif.stimulus import OUTPUT_VARIANTS, extreme_jobs, random_job, random_role_job
from wire.axi import MAP_VERSION
from wire.gemm_protocol import OutputSpec, decode, encode, expected
from wire.host_driver import DeviceError
from wire.host_link import Status


def check(device, job, got) -> None:
    mismatch = first_mismatch(job, got, expected(job, device.params))
    if mismatch:
        raise AssertionError(mismatch)
    gemms = device.read_register("GEMMS")
    assert gemms == 1, f"GEMMS reads {gemms} after one GEMM"


def through_streams(device, job):
    """``job`` by hand: its beats written port by port, its results read."""
    beats = encode(job, device.params)
    for port, words in beats.inputs().items():
        assert device.write(port, words) if words else True
    results = []
    while len(results) < beats.result_beats:
        results += device.read(beats.result_beats - len(results))
    return decode(job, device.params, results)


def gemms(dut) -> int:
    """In the bridge thread: open the device, run GEMMs in every role and several output
    modes through ``gemm``, ``run`` and ``write``/``read``, resetting between them.
    Returns how many were checked."""
    params = params_from_env()
    rng = np.random.default_rng(seed_from_env())
    t = params.tile
    device = Device.axi(dut, params=params)
    assert device.params == params
    assert device.status() == Status(MAP_VERSION, t, params.acc_bits, False, 0, False)

    fp4 = OutputSpec("fp4", phase=1, rounding="stochastic" if params.stochastic else "log",
                     seed=12345)
    calls = [  # (job, how): random_role_job's shapes with partial tiles
        (random_role_job(rng, "forward", (t + 1, 2 * t, t - 1), t), "gemm"),
        (random_role_job(rng, "backward", (2 * t, t + 3, t), t, OutputSpec("int", kind="int4")),
         "gemm"),
        (random_role_job(rng, "weight_grad", (t, 3 * t, 2 * t + 1), t, fp4), "gemm"),
        (random_job(rng, params, (1, OUTPUT_VARIANTS.index(("dual", "linear", 0)), True)), "run"),
        # all zeros: every tile exponent and code 0
        (random_role_job(rng, "forward", (t, t, t), t, OutputSpec("int", kind="uint4"),
                         zeros=1.0), "run"),
        # operands at their largest magnitude (the accumulators within 4x of saturating)
        (extreme_jobs(rng, params)[1], "run"),
        (random_job(rng, params, (2, OUTPUT_VARIANTS.index(("fp4", "log", 0)), False)), "streams"),
    ]
    for job, how in calls:
        if how == "gemm":
            got = device.gemm(job.a, job.b, job.out, a_trans=job.a_trans, b_trans=job.b_trans)
        elif how == "run":
            got = device.run(job)
        else:
            got = through_streams(device, job)
        check(device, job, got)
        status = device.status()
        assert not status.busy and status.results == 0 and not status.refused, status
        device.reset()
        assert device.read_register("GEMMS") == 0

    # a reset in the middle of a GEMM (its beats queued, results never read), then exact
    job = calls[0][0]
    for port, words in encode(job, params).inputs().items():
        if words:
            device.write(port, words)
    assert device.status().busy, "the GEMM should be under way"   # (a few AXI4-Lite reads)
    device.reset()
    assert device.status().results == 0
    check(device, job, device.run(job))
    return len(calls) + 1


@cocotb.test()
async def gemms_through_device_axi(dut):
    """Device.axi from a bridge thread: GEMMs in every role (raw, int, fp4, dual; all
    zeros; extreme operands) through gemm, run and write/read, bit-exact with golden."""
    count = await bridge(gemms)(dut)
    dut._log.info(f"{count} GEMMs through Device.axi, bit-exact with golden")


def mismatch(dut) -> None:
    params = params_from_env()
    other = replace(params, tile=2 * params.tile)
    try:
        Device.axi(dut, params=other)
    except DeviceError as err:
        assert f"tile={params.tile}" in str(err), err
    else:
        raise AssertionError(f"Device.axi accepted {other} on a T={params.tile} build")


@cocotb.test()
async def params_mismatch_is_a_device_error(dut):
    """Expecting other parameters than PARAMS says raises DeviceError."""
    await bridge(mismatch)(dut)


def wrong_id(dut) -> None:
    import verif.axi_link

    real = verif.axi_link.ID_MAGIC
    verif.axi_link.ID_MAGIC = real ^ 1              # the driver now expects another ID
    try:
        Device.axi(dut)
    except DeviceError as err:
        assert "not a nibble_axi" in str(err), err
    else:
        raise AssertionError("Device.axi opened a top whose ID is not the expected one")
    finally:
        verif.axi_link.ID_MAGIC = real


@cocotb.test()
async def wrong_id_is_a_device_error(dut):
    """A top whose ID register is not the one the driver expects raises DeviceError."""
    await bridge(wrong_id)(dut)
