"""wire.streams, the pure-Python beat descriptions, against the Amaranth layouts that
rtl.layouts builds from them: the same fields at the same offsets, of the same widths and
signedness, and packing that gives the words Amaranth's constants give."""

import random

import pytest
from amaranth.hdl import Shape
from amaranth.lib import data

from golden.params import NibbleParams
from rtl.layouts import command_layout, operand_row_layout, result_layout
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
        assert bits["cmd"] == command_layout().size == 64
        assert bits["a_codes"] == bits["b_codes"] == operand_row_layout(p).size == 4 * p.tile
        assert bits["a_exps"] == bits["b_exps"] == streams.TILE_EXP_BITS
        assert bits["mask"] == p.tile


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
    with pytest.raises(ValueError, match="does not fit 64 bits"):
        streams.COMMAND.unpack(1 << 64)
