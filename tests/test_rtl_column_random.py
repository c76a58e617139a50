"""ColumnRandom against golden.xorshift: every element's word, in Amaranth's simulator.

The testbench drives a script of cycles (step, load a seed, reset, or nothing) and
samples ``words`` and ``group`` every cycle. A step's words must be on ``words`` exactly
``STEP_LATENCY`` cycles later; what they must be comes from golden
(:func:`golden.xorshift.element_words` for a GEMM's element sequence,
:func:`golden.xorshift.column_words` for the other scripts). Only the harness knows the
output path's beat order (tiles i outer, j inner, rows, then T / L beats per row), to
place each step's L words on their elements.
"""

import random
import re

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.params import NibbleParams
from golden.xorshift import COLUMN_STRIDE, ZERO_SEED_STATE, column_states, column_words, \
    element_words
from rtl.column_random import ColumnRandom
from rtl.generate import convert, lint

#: (T, lanes): every lane count of T = 2, 4, 8 (None: L = T).
SHAPES = [(2, None), (2, 1), (4, None), (4, 2), (4, 1), (8, None), (8, 4), (8, 2), (8, 1)]
LATENCY = ColumnRandom.STEP_LATENCY


def zero_sum_seed(column: int) -> int:
    """The seed whose sum for ``column`` is 0, so that column starts at all ones (checked
    against golden's seeding)."""
    seed = -(column + 1) * COLUMN_STRIDE % 2 ** 32
    return seed


def seeds_for(tile: int):
    """0, all ones, a seed that hits the all-ones replacement in the first and in the
    last column, and an arbitrary one."""
    seeds = [0, 0xFFFFFFFF, zero_sum_seed(0), zero_sum_seed(tile - 1), 0x2545F491]
    for c in (0, tile - 1):
        assert column_states(zero_sum_seed(c), tile)[c] == ZERO_SEED_STATE
    return seeds


# ---------------------------------------------------------------------------- simulation

def run_script(params, script):
    """Drive ``script``, a list of cycles, each a dict with optional keys ``step``
    (bool), ``load`` (a seed) and ``rst`` (bool, a synchronous reset of the unit);
    return ``[(words, group)]`` sampled in each cycle of the script and LATENCY + 1
    cycles after it."""
    dut = ColumnRandom(params)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    samples = []

    async def bench(ctx):
        for cycle in script + [{}] * (LATENCY + 1):
            ctx.set(dut.step, cycle.get("step", False))
            ctx.set(dut.load, "load" in cycle)
            ctx.set(dut.seed, cycle.get("load", 0))
            ctx.set(rst, cycle.get("rst", False))
            samples.append(([int(w) for w in ctx.get(dut.words)], int(ctx.get(dut.group))))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return samples


def effective_steps(script):
    """The steps the contract defines: ``[(cycle, seed, k)]``, the k-th step (from 0)
    since the load of ``seed``. A step in the cycle of a load or of a reset is dropped;
    after a reset nothing counts until the next load; a step whose words would appear
    after a reset (a reset in the next cycle) is not checked."""
    steps, seed, k = [], None, 0
    for t, cycle in enumerate(script):
        if cycle.get("rst"):
            seed = None
            if steps and steps[-1][0] == t - 1:
                steps.pop()
        elif "load" in cycle:
            seed, k = cycle["load"], 0
        elif cycle.get("step") and seed is not None:
            steps.append((t, seed, k))
            k += 1
    return steps


def check_words(params, script, samples):
    """Every effective step's words and group, LATENCY cycles after it, against
    :func:`golden.xorshift.column_words`. Returns how many steps were checked."""
    T, L = params.tile, params.lanes
    G = T // L
    steps = effective_steps(script)
    table = {}
    for _, seed, k in steps:
        table[seed] = max(table.get(seed, 0), k // G + 1)
    golden_words = {seed: column_words(seed, T, n) for seed, n in table.items()}
    for t, seed, k in steps:
        g = k % G
        want = [int(w) for w in golden_words[seed][k // G, g * L:(g + 1) * L]]
        assert samples[t + LATENCY] == (want, g), \
            f"step {k} after loading {seed:#x} (cycle {t})"
    return len(steps)


def gemm_script(params, seed, shape, rng, idle=0.3, step_at_load=False):
    """A load of ``seed`` and the steps of one GEMM of result ``shape`` (every beat of
    every tile, padding included), with idle cycles at random (probability ``idle``
    before each step). ``step_at_load``: ``step`` is also high in the load's cycle (it
    must be dropped)."""
    T, L = params.tile, params.lanes
    mt, nt = -(-shape[0] // T), -(-shape[1] // T)
    script = [{"load": seed, "step": step_at_load}]
    for _ in range(mt * nt * T * (T // L)):
        while rng.random() < idle:
            script.append({})
        script.append({"step": True})
    return script


def gemm_elements(params, shape, words):
    """Place the words of a GEMM's steps (each a list of L words, in step order) on the
    result's elements, in the output path's beat order; padding is cut off."""
    T, L = params.tile, params.lanes
    mt, nt = -(-shape[0] // T), -(-shape[1] // T)
    out = np.zeros((mt * T, nt * T), dtype=np.uint32)
    beats = iter(words)
    for i in range(mt):
        for j in range(nt):
            for row in range(T):
                for g in range(T // L):
                    col = j * T + g * L
                    out[i * T + row, col:col + L] = next(beats)
    return out[:shape[0], :shape[1]]


def gemm_words(params, script, samples):
    """The words of the script's effective steps, each sampled LATENCY cycles after it."""
    return [samples[t + LATENCY][0] for t, _, _ in effective_steps(script)]


# ---------------------------------------------------------------------------- tests

@pytest.mark.parametrize("tile,lanes", SHAPES)
def test_gemm_words_equal_golden(tile, lanes):
    """One GEMM per seed (shape not a multiple of T, so edge tiles have padding beats),
    with idle cycles between steps: every element's word is golden's, and the unit's
    ``group`` names the column group of each step's words."""
    params = NibbleParams(tile=tile, lanes=lanes)
    rng = random.Random(f"gemm-{tile}-{lanes}")
    shape = (2 * tile + 1, tile + 1)
    for seed in seeds_for(tile):
        script = gemm_script(params, seed, shape, rng)
        samples = run_script(params, script)
        assert check_words(params, script, samples) == 3 * 2 * tile * tile // params.lanes
        got = gemm_elements(params, shape, gemm_words(params, script, samples))
        np.testing.assert_array_equal(got, element_words(seed, shape, tile),
                                      err_msg=f"seed {seed:#x}")


@pytest.mark.parametrize("tile,lanes", [(2, None), (4, 1), (8, 2)])
def test_back_to_back_steps_and_a_step_with_the_load(tile, lanes):
    """A step in every cycle (full rate), starting the cycle right after the load, and
    ``step`` also high in the load's cycle: that step is dropped, the load wins."""
    params = NibbleParams(tile=tile, lanes=lanes)
    shape = (tile, 2 * tile)
    for seed in (0x9E3779B9, zero_sum_seed(1)):
        script = gemm_script(params, seed, shape, random.Random(0), idle=0.0,
                             step_at_load=True)
        samples = run_script(params, script)
        got = gemm_elements(params, shape, gemm_words(params, script, samples))
        np.testing.assert_array_equal(got, element_words(seed, shape, tile))


@pytest.mark.parametrize("tile,lanes", SHAPES)
def test_reload_in_the_middle(tile, lanes):
    """A GEMM cut off after a number of steps that is not a multiple of T / L (mid-row),
    then a load of another seed (in the cycle after a step, and with ``step`` held high
    in the load's cycle) and a whole GEMM: the second GEMM starts from its own seed at
    column group 0, its words exactly golden's; the first one's words were golden's too."""
    params = NibbleParams(tile=tile, lanes=lanes)
    rng = random.Random(f"reload-{tile}-{lanes}")
    shape = (tile + 1, 2 * tile)
    G = tile // params.lanes
    kept = tile * G // 2 + 1                     # not a multiple of G when G > 1
    first = gemm_script(params, 0xFFFFFFFF, shape, rng)
    cut = [i for i, c in enumerate(first) if c.get("step")][kept - 1]
    second = gemm_script(params, zero_sum_seed(tile - 1), shape, rng, step_at_load=True)
    script = first[:cut + 1] + second
    samples = run_script(params, script)
    assert check_words(params, script, samples) == kept + 2 * 2 * tile * G
    got = gemm_elements(params, shape, gemm_words(params, second, samples[cut + 1:]))
    np.testing.assert_array_equal(got, element_words(zero_sum_seed(tile - 1), shape, tile))


@pytest.mark.parametrize("tile,lanes", [(2, 1), (4, None), (8, 2)])
@pytest.mark.parametrize("where", ["mid-stream", "after-load", "long"])
def test_reset_in_the_middle(tile, lanes, where):
    """A reset in the middle of a GEMM (one cycle with ``step`` high, the cycle right
    after a load, or several cycles with ``load`` and ``step`` high, both ignored), then
    a load and a whole GEMM: ``group`` reads G - 1 from the reset until the new stream's
    first words (the step in the reset cycle did not advance it), and nothing of the old
    stream leaks into the new one."""
    params = NibbleParams(tile=tile, lanes=lanes)
    rng = random.Random(f"reset-{tile}-{lanes}-{where}")
    shape = (2 * tile, tile)
    first = gemm_script(params, 0x12345678, shape, rng)
    if where == "after-load":
        script = first[:1] + [{"rst": True, "step": True}]
    elif where == "mid-stream":
        steps = [i for i, c in enumerate(first) if c.get("step")]
        script = first[:steps[tile + 1]] + [{"rst": True, "step": True}]
    else:
        steps = [i for i, c in enumerate(first) if c.get("step")]
        script = first[:steps[3]] + [{"rst": True, "step": True, "load": 1}] * 3
    second = gemm_script(params, 0, shape, rng)
    start = len(script)
    script += second
    samples = run_script(params, script)
    check_words(params, script, samples)
    G = tile // params.lanes
    assert [g for _, g in samples[start:start + LATENCY + 1]] == [G - 1] * (LATENCY + 1)
    got = gemm_elements(params, shape, gemm_words(params, second, samples[start:]))
    np.testing.assert_array_equal(got, element_words(0, shape, tile))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(SHAPES), st.integers(0, 2 ** 32 - 1),
       st.lists(st.tuples(st.sampled_from(["step", "step", "step", "idle", "load", "rst"]),
                          st.integers(0, 2 ** 32 - 1), st.booleans()),
                min_size=1, max_size=120))
def test_random_scripts(shape, seed, ops):
    """Any mix of steps, idle cycles, loads (also with ``step`` high) and resets: every
    step that the contract defines gives golden's words with its group, on time."""
    tile, lanes = shape
    params = NibbleParams(tile=tile, lanes=lanes)
    script = [{"load": seed}]
    for op, value, flag in ops:
        if op == "step":
            script.append({"step": True})
        elif op == "idle":
            script.append({})
        elif op == "load":
            script.append({"load": value, "step": flag})
        else:
            script.append({"rst": True, "step": flag})
    samples = run_script(params, script)
    check_words(params, script, samples)


def test_group_constants_are_golden_seeding():
    """The per-column constants the unit adds and compares with, against golden's
    seeding: seed Z_c gives all ones in column c, and seed 0 gives K_c."""
    consts = ColumnRandom.column_constants(8)
    assert [int(s) for s in column_states(0, 8)] == [k for k, _ in consts]
    for c, (_, z) in enumerate(consts):
        assert column_states(z, 8)[c] == ZERO_SEED_STATE


@pytest.mark.parametrize("tile,lanes", [(8, None), (8, 2), (2, 1)])
def test_converts_to_verilog_and_lints(tile, lanes, tmp_path):
    """Converts and passes ``verilator --lint-only -Wall`` (L = T once declared its
    zero-width ``group`` as [-1:0]); the states are registers, not a memory."""
    params = NibbleParams(tile=tile, lanes=lanes)
    text = convert(ColumnRandom(params), "column_random")
    assert "module column_random" in text
    path = tmp_path / "column_random.v"
    path.write_text(text)
    result = lint(path, "column_random")
    assert result.returncode == 0, result.stderr
    assert not re.search(r"reg \[\d+:0\] \S+ \[", text)          # no memory array
