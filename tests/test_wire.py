"""wire.streams, the pure-Python beat descriptions, against the Amaranth layouts that
rtl.layouts builds from them: the same fields at the same offsets, of the same widths and
signedness, and packing that gives the words Amaranth's constants give."""

import random

import pytest
from amaranth.hdl import Shape
from amaranth.lib import data

from golden.params import NibbleParams
from rtl.layouts import command_layout, mask_row_layout, operand_row_layout, result_layout
from wire import streams

PARAMS = [NibbleParams(tile=t, acc_bits=a) for t, a in ((2, 18), (4, 32), (8, 24), (16, 32),
                                                          (64, 48))]


def _fields(layout: data.StructLayout) -> list:
    return [(name, field.offset, Shape.cast(field.shape).width, Shape.cast(field.shape).signed)
            for name, field in layout]


def _pairs():
    yield "command", streams.COMMAND, command_layout()
    for p in PARAMS:
        yield f"result T={p.tile} acc={p.acc_bits}", streams.result(p), result_layout(p)
        yield f"mask T={p.tile}", streams.mask_row(p), mask_row_layout(p)


@pytest.mark.parametrize("name, struct, layout", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_structs_agree_with_the_amaranth_layouts(name, struct, layout):
    assert struct.size == layout.size
    assert [(f.name, f.offset, f.width, f.signed) for f in struct] == _fields(layout)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"T{p.tile}")
def test_operand_row_agrees(params):
    row, layout = streams.operand_row(params), operand_row_layout(params)
    assert row.size == layout.size
    assert row.length == layout.length
    elem = Shape.cast(layout.elem_shape)
    assert (row.elem_width, row.signed) == (elem.width, elem.signed)


def test_port_widths_are_the_layouts_sizes():
    for p in PARAMS:
        bits = streams.port_beat_bits(p)
        assert bits["cmd"] == command_layout().size == 98
        assert bits["a_codes"] == bits["b_codes"] == operand_row_layout(p).size == 4 * p.tile
        assert bits["a_exps"] == bits["b_exps"] == streams.TILE_EXP_BITS
        assert bits["mask"] == mask_row_layout(p).size == 2 * p.tile


def _random_values(struct, rng):
    out = {}
    for f in struct:
        lo, hi = ((-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed
                  else (0, (1 << f.width) - 1))
        out[f.name] = rng.choice([lo, hi, 0, rng.randint(lo, hi)])
    return out


@pytest.mark.parametrize("name, struct, layout", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_pack_and_unpack_agree_with_amaranth_constants(name, struct, layout):
    rng = random.Random(13)
    for _ in range(50):
        values = _random_values(struct, rng)
        word = struct.pack(values)
        assert word == layout.const(values).as_value().value
        assert struct.unpack(word) == values
        const = data.Const(layout, word)
        assert {n: int(const[n]) for n in values} == values


def test_pack_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="m_last holds 0..255, got 256"):
        streams.COMMAND.pack({"m_last": 256})
    with pytest.raises(ValueError, match="clip_exp holds -128..127, got -129"):
        streams.COMMAND.pack({"clip_exp": -129})
    with pytest.raises(ValueError, match="no field bogus"):
        streams.COMMAND.pack({"bogus": 1})
    with pytest.raises(ValueError, match="does not fit 98 bits"):
        streams.COMMAND.unpack(1 << 98)
    with pytest.raises(ValueError, match="seed holds 0..4294967295, got 4294967296"):
        streams.COMMAND.pack({"seed": 1 << 32})


# ------------------------------------------------------------- the gradient unit's fields

import numpy as np  # noqa: E402

from golden.formats import quantize  # noqa: E402
from golden.output import alpha_sum_bits  # noqa: E402
from wire.gemm_protocol import (GemmJob, OutputSpec, decode, encode, expected,  # noqa: E402
                                result_words)


def _backward_job(params, rng, shape, *, extreme=False, **out):
    """dX = dY . W^T with fp4 dY and int4 W of ``shape`` (M, K, N); ``extreme`` makes
    every operand element its kind's largest magnitude, so the accumulators reach the
    widest sums."""
    m, k, n = shape
    dy = rng.standard_normal((m, k)) * 2.0 ** rng.integers(-20, 20)
    w = rng.standard_normal((n, k))
    if extreme:
        dy, w = np.where(rng.random((m, k)) < 0.5, -1.0, 1.0), -np.ones((n, k))
    return GemmJob(quantize(dy, "fp4", tile=params.tile), quantize(w, "int4", tile=params.tile),
                   b_trans=True, out=OutputSpec("fp4", **out))


def test_encode_carries_dual_stochastic_and_seed_in_the_command():
    params = NibbleParams(tile=4)
    rng = np.random.default_rng(1)
    job = _backward_job(params, rng, (5, 6, 7), dual=True, rounding="stochastic",
                        seed=0xDEADBEEF, ext_exp=-3)
    fields = streams.COMMAND.unpack(encode(job, params).cmd)
    assert (fields["out_mode"], fields["out_dual"], fields["out_stochastic"], fields["seed"],
            fields["out_linear"], fields["ext_exp_en"], fields["ext_exp"], fields["mask_en"]
            ) == (streams.OUT_MODES["fp4"], 1, 1, 0xDEADBEEF, 0, 1, -3, 0)
    plain = streams.COMMAND.unpack(encode(_backward_job(params, rng, (5, 6, 7), phase=1,
                                                        rounding="linear"), params).cmd)
    assert (plain["out_dual"], plain["out_stochastic"], plain["seed"], plain["out_phase"],
            plain["out_linear"]) == (0, 0, 0, 1, 1)


@pytest.mark.parametrize("with_mask", [False, True])
def test_mask_beats_carry_the_clip_mask_above_the_relu_mask(with_mask):
    """Row r of tile (i, j): bit c is mask[iT + r, jT + c] (all ones without a mask),
    bit T + c clip_mask's; padding bits 0. Without either mask there are no beats."""
    params = NibbleParams(tile=4)
    T = params.tile
    rng = np.random.default_rng(2)
    m, n = 6, 7
    mask = rng.random((m, n)) < 0.5 if with_mask else None
    clip = rng.random((m, n)) < 0.5
    job = _backward_job(params, rng, (m, 5, n), dual=True, mask=mask, clip_mask=clip)
    beats = encode(job, params)
    assert streams.COMMAND.unpack(beats.cmd)["mask_en"] == 1
    mt, nt = 2, 2
    assert len(beats.mask) == mt * nt * T
    row = streams.mask_row(params)
    want_mask = np.ones((m, n), bool) if mask is None else mask
    for idx, beat in enumerate(beats.mask):
        tile_no, r = divmod(idx, T)
        i, j = divmod(tile_no, nt)
        got = row.unpack(beat)
        for c in range(T):
            y, x = i * T + r, j * T + c
            inside = y < m and x < n
            assert got["mask"] >> c & 1 == (inside and want_mask[y, x])
            assert got["clip_mask"] >> c & 1 == (inside and clip[y, x])
    assert encode(_backward_job(params, rng, (m, 5, n), dual=True), params).mask == []


def _result_beats(job, params, want):
    """The result beats the hardware sends for golden's ``want``, packed field by field
    as the wire.streams docstring spells the dual format."""
    T, layout = params.tile, streams.result(params)
    f = want.fused
    mt, _, nt = job.tiles
    pad = np.zeros((mt * T, nt * T), dtype=np.int64)
    codes = [pad.copy(), pad.copy()]
    for p in (0, 1):
        codes[p][:f.phase0.shape[0], :f.phase0.shape[1]] = f.phase(p).codes
    beats = []
    for i in range(mt):
        for j in range(nt):
            common = {"saturated": int(want.saturated), "last": 0}
            for r in range(T):
                data = sum(int(codes[p][i * T + r, j * T + c]) << (4 * (p * T + c))
                           for p in (0, 1) for c in range(T))
                beats.append({"data": data, "exp": int(f.phase0.exps[i, j]), **common})
            width = alpha_sum_bits(T, params.acc_bits)
            beats.append({"data": int(f.alpha_sums[i, j]) & ((1 << width) - 1),
                          "exp": int(f.out_exps[i, j]), **common})
            beats.append({"data": int(f.tile_max[i, j]), "exp": int(f.out_exps[i, j]), **common})
    beats[-1]["last"] = 1
    return [layout.pack(b) for b in beats]


@pytest.mark.parametrize("params", [NibbleParams(tile=2, acc_bits=18), NibbleParams(tile=8),
                                    NibbleParams(tile=64, acc_bits=53)],
                         ids=lambda p: f"T{p.tile}a{p.acc_bits}")
@pytest.mark.parametrize("extreme", [False, True])
def test_dual_results_decode_to_golden(params, extreme):
    """T + 2 beats per tile decode to golden's FusedLog4 field for field: both phases'
    codes, the shared exponents, alpha partials (negative ones too, and over 64 bits at
    T = 64, acc_bits = 53), tile maxima and out_exps."""
    T = params.tile
    rng = np.random.default_rng(3)
    shape = (2 * T - 1, T + 1, 2 * T - 1)
    clip = rng.random((shape[0], shape[2])) < 0.5
    job = _backward_job(params, rng, shape, extreme=extreme, dual=True,
                        mask=rng.random((shape[0], shape[2])) < 0.7, clip_mask=clip)
    want = expected(job, params)
    beats = encode(job, params)
    assert beats.result_beats == 2 * 2 * (T + 2)
    got = decode(job, params, _result_beats(job, params, want)).fused
    w = want.fused
    for a, b in ((got.phase0.codes, w.phase0.codes), (got.phase1.codes, w.phase1.codes),
                 (got.phase0.exps, w.phase0.exps), (got.phase1.exps, w.phase1.exps),
                 (got.out_exps, w.out_exps), (got.tile_max, w.tile_max)):
        np.testing.assert_array_equal(a, b)
    assert got.alpha_sums.tolist() == w.alpha_sums.tolist()
    assert (got.phase0.phase, got.phase1.phase) == (0, 1)
    assert got.alpha_grad() == w.alpha_grad() and got.amax() == w.amax()
    if extreme:
        assert (w.alpha_sums < 0).any() and w.tile_max.max() > 1 << (params.acc_bits // 2)
    with pytest.raises(ValueError, match=f"expected {4 * (T + 2)} result beats, got {4 * T}"):
        decode(job, params, _result_beats(job, params, want)[:4 * T])
    assert result_words(job, params, want) == _result_beats(job, params, want)


@pytest.mark.parametrize("out", [OutputSpec("raw"), OutputSpec("fp4", phase=1),
                                 OutputSpec("fp4", dual=True, rounding="stochastic", seed=9)])
def test_result_words_decode_to_what_they_pack(out):
    """result_words (the hardware's stand-in) and decode are inverses in every mode."""
    params = NibbleParams(tile=4, acc_bits=24)
    rng = np.random.default_rng(4)
    job = _backward_job(params, rng, (7, 5, 6), extreme=True)
    job = GemmJob(job.a, job.b, b_trans=True, out=out)
    want = expected(job, params)
    got = decode(job, params, result_words(job, params, want))
    if out.mode == "raw":
        assert np.array_equal(got.raw.acc, want.raw.acc) and got.saturated == want.saturated
        assert np.array_equal(got.raw.out_exps, want.raw.out_exps)
    elif out.dual:
        for p in (0, 1):
            assert np.array_equal(got.fused.phase(p).codes, want.fused.phase(p).codes)
        assert got.fused.alpha_sums.tolist() == want.fused.alpha_sums.tolist()
    else:
        assert np.array_equal(got.codes.codes, want.codes.codes)
        assert got.codes.phase == 1


@pytest.mark.parametrize("out", [OutputSpec("raw"), OutputSpec("int", kind="int4"),
                                 OutputSpec("fp4", dual=True)])
def test_a_row_whose_exp_differs_from_its_tiles_is_refused(out):
    """Every beat of a tile repeats its exponent (wire.streams): a code row (or raw
    row) of tile (0, 1) carrying another exp does not decode, in every mode."""
    params = NibbleParams(tile=4, acc_bits=24)
    rng = np.random.default_rng(4)
    job = _backward_job(params, rng, (7, 5, 6), extreme=True)
    job = GemmJob(job.a, job.b, b_trans=True, out=out)
    words = result_words(job, params, expected(job, params))
    exp = streams.result(params)["exp"]
    per_tile = streams.tile_result_beats(params, out.dual)
    bad = list(words)
    bad[per_tile + 2] ^= 1 << exp.offset            # tile (0, 1), row 2
    with pytest.raises(ValueError, match=r"tile \(0, 1\): row 2 carries exp"):
        decode(job, params, bad)
