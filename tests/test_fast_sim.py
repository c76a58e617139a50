"""The fast C++ harness of the generated ``nibble_top`` (verif/fast_sim.py) against
golden, and the vectorized beat packing of wire/gemm_protocol.py against a per-row
Amaranth ``Const`` reference."""

import numpy as np
import pytest
from amaranth.lib import data

from golden.formats import quantize
from golden.params import NibbleParams, psum_bits
from wire.gemm_protocol import GemmBeats, GemmJob, OutputSpec, decode, encode, expected
from rtl.layouts import command_layout, operand_row_layout, result_layout
from verif.fast_sim import FastAccelerator, SimHang
from verif.scoreboard import first_mismatch
from verif.stimulus import GEMM_ROLES, OUTPUT_VARIANTS, edge_jobs, random_job

T4 = NibbleParams(tile=4, acc_bits=32)


@pytest.fixture(scope="module")
def acc():
    """One T=4 harness for the module (the first use builds or loads the library)."""
    return FastAccelerator(T4, seed=1)


def random_jobs(params, rng, count=0):
    """The cocotb bench's job generator at ``params``: one job per (training role,
    output variant, partial tiles) bin, then ``count`` random ones."""
    jobs = [random_job(rng, params, (role, variant, partial)) for role in range(len(GEMM_ROLES))
            for variant in range(len(OUTPUT_VARIANTS)) for partial in (False, True)]
    return jobs + [random_job(rng, params) for _ in range(count)]


def assert_matches(job, params, got, index=0):
    want = expected(job, params)
    if job.out.dual:
        problem = first_mismatch(job, got, want)
        assert problem is None, f"GEMM {index}: {problem}"
        return
    if job.out.mode == "raw":
        pairs = [(got.raw.acc, want.raw.acc), (got.raw.out_exps, want.raw.out_exps)]
    else:
        pairs = [(got.codes.codes, want.codes.codes), (got.codes.exps, want.codes.exps)]
        assert (got.codes.kind, got.codes.phase) == (want.codes.kind, want.codes.phase)
    for g, w in pairs:
        np.testing.assert_array_equal(g, w, err_msg=f"GEMM {index}: {job.out}")
    assert got.saturated == want.saturated


# ------------------------------------------------------------ packing reference


def reference_encode(job, params):
    """encode() as it was before vectorizing: one Amaranth Const per row."""
    T = params.tile
    mt, kt, nt = job.tiles
    a_op, b_op, out = job.a_op, job.b_op, job.out
    cmd = encode(job, params).cmd      # the command is still packed by its layout
    row_layout = operand_row_layout(params)

    def padded(q):
        rows, cols = q.exps.shape
        x = np.zeros((rows * T, cols * T), dtype=np.int64)
        x[: q.shape[0], : q.shape[1]] = q.codes.astype(np.int64) & 0xF
        return x

    def pack(tile):
        return [row_layout.const([int(c) for c in row]).as_value().value for row in tile]

    a_store, b_store = padded(job.a), padded(job.b)
    tile_of = lambda x, r, c: x[r * T:(r + 1) * T, c * T:(c + 1) * T]
    a_codes, a_exps, b_codes, b_exps = [], [], [], []
    for i in range(mt):
        for j in range(nt):
            for t in range(kt):
                a_exps.append(int(a_op.exps[i, t]))
                b_exps.append(int(b_op.exps[t, j]))
                a_codes += pack(tile_of(a_store, t, i) if job.a_trans else tile_of(a_store, i, t))
                b_codes += pack(tile_of(b_store, j, t) if job.b_trans else tile_of(b_store, t, j))
    mask = []
    if out.mode != "raw" and (out.mask is not None or out.clip_mask is not None):
        m, _, n = job.shape
        halves = []
        for bits, fill in ((out.mask, True), (out.clip_mask, False)):
            pad = np.zeros((mt * T, nt * T), dtype=np.int64)
            pad[:m, :n] = fill if bits is None else np.asarray(bits).astype(bool)
            halves.append(pad)
        for i in range(mt):
            for j in range(nt):
                mask += [int(sum(int(bit) << c for c, bit in enumerate(np.concatenate(rows))))
                         for rows in zip(tile_of(halves[0], i, j), tile_of(halves[1], i, j))]
    return GemmBeats(cmd, a_codes, a_exps, b_codes, b_exps, mask,
                     mt * nt * (T + 2 if out.dual else T))


def reference_fields(params, beats):
    """Every result beat unpacked through an Amaranth Const of the result layout."""
    layout = result_layout(params)
    return [(int(c.data), int(c.exp), int(c.saturated), int(c.last))
            for c in (data.Const(layout, w) for w in beats)]


@pytest.mark.parametrize("tile", [2, 4, 8, 16, 32])
def test_encode_matches_per_row_reference(tile):
    params = NibbleParams(tile=tile, acc_bits=max(32, psum_bits(tile)))
    rng = np.random.default_rng(tile)
    for job in random_jobs(params, rng)[:: 1 if tile <= 16 else 6]:
        got, want = encode(job, params), reference_encode(job, params)
        assert got == want
        assert all(type(w) is int for name in GemmBeats.INPUTS for w in got.inputs()[name])


def test_command_packing_is_the_layout():
    job = GemmJob(quantize(np.ones((5, 9)), "fp4", tile=4),
                  quantize(np.ones((6, 9)), "int4", tile=4), b_trans=True,
                  out=OutputSpec("fp4", phase=1, rounding="linear", ext_exp=-7,
                                 mask=np.ones((5, 6))))
    cmd = data.Const(command_layout(), encode(job, T4).cmd)
    assert (cmd.m_last, cmd.k_last, cmd.n_last, cmd.b_trans, cmd.mask_en, cmd.ext_exp) == \
        (1, 2, 1, 1, 1, -7)


@pytest.mark.parametrize("tile", [4, 16])
def test_decode_matches_const_unpacking(tile):
    """Random result beats (in-range exponents, one per tile, 'last' on the final beat)
    decode to the fields an Amaranth Const of the result layout gives."""
    params = NibbleParams(tile=tile, acc_bits=max(32, psum_bits(tile)))
    rng = np.random.default_rng(tile)
    layout = result_layout(params)
    # (dual results decode in tests/test_wire.py, against a packer of their own)
    for job in [j for j in random_jobs(params, rng) if not j.out.dual][::3]:
        n = encode(job, params).result_beats
        beats = [int.from_bytes(rng.bytes(layout.size // 8 + 1), "little")
                 & ((1 << layout["exp"].offset) - 1) for _ in range(n)]
        # (every row of a tile repeats its exponent, or the beats do not decode)
        exps = np.repeat(rng.integers(-128, 128, size=n // tile), tile)
        beats = [w | ((int(e) & 0x3FF) << layout["exp"].offset)
                 | (int(rng.integers(2)) << layout["saturated"].offset)
                 | (int(i == n - 1) << layout["last"].offset)
                 for i, (w, e) in enumerate(zip(beats, exps))]
        got = decode(job, params, beats)
        fields = reference_fields(params, beats)
        mt, _, nt = job.tiles
        m, _, nn = job.shape
        width = params.acc_bits if job.out.mode == "raw" else 4
        values = np.array([[(f[0] >> (c * width)) & ((1 << width) - 1) for c in range(tile)]
                           for f in fields]).reshape(mt, nt, tile, tile)
        values = values.transpose(0, 2, 1, 3).reshape(mt * tile, nt * tile)[:m, :nn]
        tile_exps = np.array([f[1] for f in fields]).reshape(mt, nt, tile)[:, :, -1]
        if job.out.mode == "raw":
            want = np.where(values >= 1 << (width - 1), values - (1 << width), values)
            np.testing.assert_array_equal(got.raw.acc, want)
            np.testing.assert_array_equal(got.raw.out_exps, tile_exps)
        else:
            want = values if job.out.mode == "fp4" or job.out.kind == "uint4" else \
                np.where(values >= 8, values - 16, values)
            np.testing.assert_array_equal(got.codes.codes, want)
            np.testing.assert_array_equal(got.codes.exps, tile_exps)
        assert got.saturated == bool(fields[-1][2])
    bad = beats[:-1] + [beats[-1] & ~(1 << layout["last"].offset)]
    with pytest.raises(ValueError, match="'last' flag"):
        decode(job, params, bad)
    with pytest.raises(ValueError, match="does not fit"):
        decode(job, params, beats[:-1] + [1 << layout.size])


# ------------------------------------------------------------ the harness


def test_beats_cross_to_c_as_little_endian_words():
    """Negative exponents as two's complement, codes with bit 63 set, and beats wider
    than 64 bits (operand rows at T >= 32) in 32-bit words, lowest first."""
    from verif.fast_sim import _beat_words
    assert _beat_words([1, -128, (1 << 64) - 1], 2).tolist() == \
        [1, 0, 0xFFFFFF80, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF]
    assert _beat_words([-1, 1 << 63], 2).tolist() == [0xFFFFFFFF, 0xFFFFFFFF, 0, 1 << 31]
    assert _beat_words([(1 << 100) | 5], 4).tolist() == [5, 0, 0, 1 << 4]


@pytest.mark.parametrize("p_stall", [0.0, 0.3])
def test_random_gemms_match_golden(p_stall):
    """Every (mode, output variant, partial) bin plus random jobs: int4 / uint4 with
    PACT clip, fp4 both phases and roundings, masks, ext_exp, transposed operands,
    extreme tile exponents. Half one GEMM per call, half batched."""
    params = T4
    rng = np.random.default_rng(int(p_stall * 10) + 1)
    jobs = random_jobs(params, rng, count=24)
    sim = FastAccelerator(params, seed=7, p_stall=p_stall)
    half = len(jobs) // 2
    outs = [sim.run(job) for job in jobs[:half]] + sim.run_many(jobs[half:])
    for i, (job, got) in enumerate(zip(jobs, outs)):
        assert_matches(job, params, got, i)
    assert sim.gemms == len(jobs)
    assert not sim.busy


@pytest.mark.parametrize("tile,out_lanes", [(4, 1), pytest.param(16, 4, marks=pytest.mark.long)])
def test_narrow_output_stages_match_golden(tile, out_lanes):
    """out_lanes < lanes (the narrower behind the rescaler; T=16 with 4 is the ULX3S
    16x16 build) in the generated Verilog: every bin, with stalls, batched, so a GEMM's
    finished tiles queue in the narrower behind the previous GEMM's."""
    params = NibbleParams(tile=tile, acc_bits=max(32, psum_bits(tile)), out_lanes=out_lanes)
    jobs = random_jobs(params, np.random.default_rng(40 + tile), count=24 if tile == 4 else 8)
    sim = FastAccelerator(params, seed=tile, p_stall=0.3)
    for i, (job, got) in enumerate(zip(jobs, sim.run_many(jobs))):
        assert_matches(job, params, got, i)
    assert sim.gemms == len(jobs)


def test_edge_shapes(acc):
    """1x1x1 and the longest reduction the exponent buffers allow (256 tiles of K)."""
    jobs = edge_jobs(np.random.default_rng(2), 4)
    for i, (job, got) in enumerate(zip(jobs, acc.run_many(jobs))):
        assert_matches(job, T4, got, i)


def test_counters_and_determinism():
    rng = np.random.default_rng(5)
    jobs = random_jobs(T4, rng)[:6]
    runs = []
    for _ in range(2):
        sim = FastAccelerator(T4, seed=11, p_stall=0.2)
        start = sim.cycles                    # the initial reset
        sim.run_many(jobs)
        runs.append(sim.cycles - start)
        assert sim.gemms == len(jobs)
    assert runs[0] == runs[1] > 0
    # at full rate a GEMM takes at least one array step per reduction tile and output tile
    sim = FastAccelerator(T4, seed=0)
    start = sim.cycles
    job = jobs[0]
    sim.run(job)
    mt, kt, nt = job.tiles
    assert sim.cycles - start >= mt * kt * nt * 4


def test_reset_between_gemms_and_after_a_hang(acc):
    """A GEMM without its B exponents hangs with a message naming the waiting streams;
    after reset() the next GEMMs are exact."""
    rng = np.random.default_rng(3)
    jobs = random_jobs(T4, rng)[:4]
    assert_matches(jobs[0], T4, acc.run(jobs[0]))
    acc.reset()
    assert_matches(jobs[1], T4, acc.run(jobs[1]))
    beats = encode(jobs[2], T4)
    beats.b_exps = []
    acc.hang_cycles = 200
    try:
        with pytest.raises(SimHang, match=r"no handshake for 200 cycles.*0 of \d+ result "
                           r"beats received; beats still waiting: \{.*'a_exps': \d+"):
            acc.run_beats([beats])
        assert acc.busy
    finally:
        acc.hang_cycles = 10_000
    acc.reset()
    assert not acc.busy
    assert_matches(jobs[3], T4, acc.run(jobs[3]))


def test_bad_jobs_raise(acc):
    four = quantize(np.ones((4, 4)), "int4", tile=4)
    with pytest.raises(ValueError, match="tiles"):
        acc.run(GemmJob(four, quantize(np.ones((4, 4)), "int4", tile=8)))
    with pytest.raises(ValueError, match="inner dimensions"):
        acc.run(GemmJob(four, quantize(np.ones((5, 4)), "int4", tile=4)))
    with pytest.raises(ValueError, match="fp4"):
        acc.run(GemmJob(quantize(np.ones((4, 4)), "fp4", tile=4),
                        quantize(np.ones((4, 4)), "fp4", tile=4)))
    with pytest.raises(ValueError, match="p_stall"):
        FastAccelerator(T4, p_stall=1.0)
    # surplus input beats: the GEMM finishes but the harness reports them
    beats = encode(GemmJob(four, four), T4)
    beats.a_exps = beats.a_exps + [0]
    with pytest.raises(RuntimeError, match="left over: {'a_exps': 1}"):
        acc.run_beats([beats])
    with pytest.raises(RuntimeError, match="reset"):
        acc.run(GemmJob(four, four))
    acc.reset()
    assert_matches(GemmJob(four, four), T4, acc.run(GemmJob(four, four)))


@pytest.mark.long
@pytest.mark.parametrize("tile", [8, 16])
def test_wide_tiles_match_golden(tile):
    """T=8 and T=16 (results of 268 and 524 bits): every bin, with stalls."""
    params = NibbleParams(tile=tile)
    jobs = random_jobs(params, np.random.default_rng(tile), count=8)
    sim = FastAccelerator(params, seed=tile, p_stall=0.2)
    for i, (job, got) in enumerate(zip(jobs, sim.run_many(jobs))):
        assert_matches(job, params, got, i)


def test_a_slow_consumer_fills_the_queues_and_stays_exact(acc):
    """The result's ready low 90 % of the cycles, inputs at full rate: the GEMM takes
    several times as long (every queue and credit pool behind the array fills) and is
    exact; the setting is validated."""
    from verif.stimulus import backpressure_jobs

    rng = np.random.default_rng(11)
    for job in backpressure_jobs(rng, T4):
        acc.p_stall, acc.p_result_stall = 0.0, None
        before = acc.cycles
        fast = acc.run(job)
        free = acc.cycles - before
        acc.p_result_stall = 0.9
        before = acc.cycles
        slow = acc.run(job)
        assert acc.cycles - before > 3 * free
        for got in (fast, slow):
            assert first_mismatch(job, got, expected(job, T4)) is None
    acc.p_result_stall = None
    with pytest.raises(ValueError, match="p_result_stall"):
        acc.p_result_stall = 1.0


def test_a_burst_consumer_takes_results_only_in_its_bursts(acc):
    """result_burst = (low, high): the result's ready low ``low`` cycles, then high
    ``high``, repeating from each call's first cycle, whatever the seed. With one-cycle
    bursts every result beat costs a whole period, so a GEMM of R beats takes at least
    R periods (and not much more); a long burst drains at full rate; both exact."""
    job = random_job(np.random.default_rng(5), T4, (0, 1, False), shape=(16, 4, 16))
    beats = 16 * 4
    acc.p_stall, acc.p_result_stall = 0.0, 0.9       # ignored while result_burst is set
    cycles = {}
    for burst in ((7, 1), (7, 1), (2, 40)):
        acc.reset()                                   # each from the same state
        acc.reseed(len(cycles))
        acc.result_burst = burst
        before = acc.cycles
        got = acc.run(job)
        cycles.setdefault(burst, []).append(acc.cycles - before)
        assert first_mismatch(job, got, expected(job, T4)) is None
    slow, again = cycles[(7, 1)]
    assert slow == again                              # the same cycles at either seed
    assert beats * 8 - 8 <= slow <= beats * 8 + 100     # (+ the first result's latency)
    assert cycles[(2, 40)][0] < beats + 100
    acc.result_burst, acc.p_result_stall = None, None
    for bad in ((0, 3), (3, 0), (3,)):
        with pytest.raises(ValueError, match="result_burst"):
            acc.result_burst = bad


def test_reseed_restarts_the_stall_pattern(acc):
    """After reseed(s) a run stalls exactly as after any other reseed(s): the cycle
    count of a stalled GEMM does not depend on what ran before."""
    job = random_job(np.random.default_rng(4), T4, (0, 1, False))
    acc.p_stall, acc.p_result_stall = 0.3, None
    counts = []
    for warmup in (0, 3):
        for _ in range(warmup):
            acc.run(job)
        acc.reseed(99)
        before = acc.cycles
        acc.run(job)
        counts.append(acc.cycles - before)
    acc.p_stall = 0.0
    assert counts[0] == counts[1] and acc.seed == 99


def test_axi_top_matches_golden_at_the_bare_cycles():
    """``nibble_axi`` on the harness (``nibble train --backend axi``): random GEMMs with
    stalls on every AXI4-Stream port match golden, and without stalls the same GEMMs
    take exactly the cycles of the bare ``nibble_top`` (the ports are wires)."""
    params = NibbleParams(tile=4)
    rng = np.random.default_rng(11)
    jobs = [random_job(rng, params) for _ in range(24)]
    axi = FastAccelerator(params, seed=2, p_stall=0.3, top="nibble_axi")
    for job, got in zip(jobs, axi.run_many(jobs)):
        assert first_mismatch(job, got, expected(job, params)) is None
    cycles = {}
    for top in ("nibble_top", "nibble_axi"):
        sim = FastAccelerator(params, seed=0, top=top)
        before = sim.cycles
        sim.run_many(jobs)
        cycles[top] = sim.cycles - before
    assert cycles["nibble_axi"] == cycles["nibble_top"] > 0, cycles
    with pytest.raises(ValueError, match="nibble_top or nibble_axi"):
        FastAccelerator(params, top="host_bridge")
