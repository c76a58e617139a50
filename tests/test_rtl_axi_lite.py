"""Tests of ``rtl.axi_lite.AxiLiteRegisters`` in the Amaranth simulator, and the round
trip of the register map: the C header and the Markdown table that :mod:`wire.axi`
generates are read back (the header also through gcc) and every offset, field and
value they give is checked against the decoder by bus reads and writes."""

import random
import re
import subprocess

import pytest

from rtl.axi_lite import WRITE_RESPONSE_CYCLES, AxiLiteRegisters, field_port
from verif.amaranth_streams import simulate
from golden.params import NibbleParams
from wire.axi import (ID_MAGIC, MAP_VERSION, REGISTERS, RESP, c_header, decode_params,
                      markdown_table, register)


async def axil_write(ctx, dut, addr, data, strb=0xF):
    """One AXI4-Lite write; returns bresp."""
    ctx.set(dut.awaddr, addr)
    ctx.set(dut.wdata, data)
    ctx.set(dut.wstrb, strb)
    ctx.set(dut.awvalid, 1)
    ctx.set(dut.wvalid, 1)
    await ctx.tick().until(dut.awready & dut.wready)
    ctx.set(dut.awvalid, 0)
    ctx.set(dut.wvalid, 0)
    ctx.set(dut.bready, 1)
    resp, = await ctx.tick().sample(dut.bresp).until(dut.bvalid)
    ctx.set(dut.bready, 0)
    return resp


async def axil_read(ctx, dut, addr):
    """One AXI4-Lite read; returns (rdata, rresp)."""
    ctx.set(dut.araddr, addr)
    ctx.set(dut.arvalid, 1)
    await ctx.tick().until(dut.arready)
    ctx.set(dut.arvalid, 0)
    ctx.set(dut.rready, 1)
    data, resp = await ctx.tick().sample(dut.rdata, dut.rresp).until(dut.rvalid)
    ctx.set(dut.rready, 0)
    return data, resp


def header_defines(text: str) -> dict:
    """{macro: value} of the C header's ``#define NAME VALUEu`` lines."""
    return {name: int(value, 0) for name, value in
            re.findall(r"^#define (\w+) (0x[0-9A-F]+|\d+)u", text, re.M)}


def table_fields(text: str) -> list:
    """(offset, register, field, lsb, width, access) of each row of the Markdown table."""
    rows, offset, reg = [], None, None
    for line in text.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0]:
            offset, reg = int(cells[0], 16), cells[1]
        hi, _, lo = cells[3].strip("[]").partition(":")
        lsb = int(lo or hi)
        rows.append((offset, reg, cells[2], lsb, int(hi) - lsb + 1, cells[4]))
    return rows


def test_pack_unpack_and_params():
    """A register's fields by name and back; PARAMS to NibbleParams (what drivers read)."""
    rng = random.Random(5)
    for reg in REGISTERS:
        word = rng.getrandbits(32) & sum(f.mask for f in reg.fields)
        assert reg.pack(**reg.unpack(word)) == word
    params = NibbleParams(tile=8, acc_bits=24, lanes=4, out_lanes=2, stochastic=False)
    word = register("PARAMS").pack(tile=8, acc_bits=24, lanes=4, out_lanes=2, stochastic=0)
    assert decode_params(word) == params
    with pytest.raises(ValueError, match="PARAMS.tile is 8 bits wide"):
        register("PARAMS").pack(tile=256)


def test_c_header_compiles_and_names_every_field(tmp_path):
    header = tmp_path / "nibble_axi_regs.h"
    header.write_text(c_header())
    main = tmp_path / "main.c"
    main.write_text('#include "nibble_axi_regs.h"\n#include <stdio.h>\nint main(void) {'
                    ' printf("%x %x\\n", NIBBLE_AXI_ID_MAGIC_VALUE, NIBBLE_AXI_SCRATCH_OFFSET);'
                    ' return 0; }\n')
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "main"), str(main)],
                   check=True)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"{ID_MAGIC:x}", "20"]
    defines = header_defines(c_header())
    assert len({d for d in defines if d.endswith("_OFFSET")}) == len(REGISTERS)
    assert len({d for d in defines if d.endswith("_SHIFT")}) == sum(len(r.fields) for r in REGISTERS)


def test_markdown_table_agrees_with_the_header():
    defines = header_defines(c_header())
    rows = table_fields(markdown_table())
    assert len(rows) == sum(len(r.fields) for r in REGISTERS)
    for offset, reg, field, lsb, width, _ in rows:
        assert defines[f"NIBBLE_AXI_{reg}_OFFSET"] == offset
        assert defines[f"NIBBLE_AXI_{reg}_{field.upper()}_SHIFT"] == lsb
        assert defines[f"NIBBLE_AXI_{reg}_{field.upper()}_MASK"] == ((1 << width) - 1) << lsb


def test_reads_agree_with_header_and_table():
    """Every register read at the header's offset: const fields hold the header's VALUE,
    ro fields show their port's value at the header's SHIFT and MASK (random values),
    and the table's bits say the same."""
    dut = AxiLiteRegisters()
    defines = header_defines(c_header())
    table = {(reg, field): (lsb, width, access)
             for _, reg, field, lsb, width, access in table_fields(markdown_table())}
    rng = random.Random(3)

    async def bench(ctx):
        for _ in range(4):
            values = {}
            for reg in REGISTERS:
                for f in reg.fields:
                    if f.access == "ro":
                        values[reg.name, f.name] = rng.getrandbits(f.width)
                        ctx.set(getattr(dut, field_port(reg, f)), values[reg.name, f.name])
            for reg in REGISTERS:
                word, resp = await axil_read(ctx, dut, defines[f"NIBBLE_AXI_{reg.name}_OFFSET"])
                assert resp == RESP["OKAY"]
                for f in reg.fields:
                    macro = f"NIBBLE_AXI_{reg.name}_{f.name.upper()}"
                    got = (word & defines[f"{macro}_MASK"]) >> defines[f"{macro}_SHIFT"]
                    lsb, width, access = table[reg.name, f.name]
                    assert got == (word >> lsb) & ((1 << width) - 1) and access == f.access
                    if f.access == "const":
                        assert got == defines[f"{macro}_VALUE"]
                    elif f.access == "ro":
                        assert got == values[reg.name, f.name], (reg.name, f.name)
                    elif f.access == "pulse":
                        assert got == 0
        assert defines["NIBBLE_AXI_VERSION_VERSION_VALUE"] == MAP_VERSION

    simulate(dut, bench)


def test_writes_strobes_pulses_and_errors():
    dut = AxiLiteRegisters()
    defines = header_defines(c_header())
    scratch, control = defines["NIBBLE_AXI_SCRATCH_OFFSET"], defines["NIBBLE_AXI_CONTROL_OFFSET"]
    pulses = []

    async def watch(ctx):
        async for _, _, soft, clear in ctx.tick().sample(dut.control_soft_reset,
                                                          dut.control_clear_counters):
            if soft or clear:
                pulses.append((soft, clear))

    async def bench(ctx):
        assert await axil_write(ctx, dut, scratch, 0x12345678) == RESP["OKAY"]
        assert (await axil_read(ctx, dut, scratch)) == (0x12345678, RESP["OKAY"])
        assert ctx.get(dut.scratch_value) == 0x12345678
        assert await axil_write(ctx, dut, scratch + 2, 0xAABBCCDD, strb=0b0101) == RESP["OKAY"]
        assert (await axil_read(ctx, dut, scratch))[0] == 0x12BB56DD  # low 2 bits ignored
        # read-only: ignored, OKAY; no register there: SLVERR, reads 0
        assert await axil_write(ctx, dut, defines["NIBBLE_AXI_ID_OFFSET"], 0) == RESP["OKAY"]
        assert (await axil_read(ctx, dut, 0))[0] == ID_MAGIC
        assert await axil_write(ctx, dut, 0xFC, 1) == RESP["SLVERR"]
        assert (await axil_read(ctx, dut, 0xFC)) == (0, RESP["SLVERR"])
        assert (await axil_read(ctx, dut, scratch))[0] == 0x12BB56DD
        # a pulse field: one cycle per write of a 1 with its byte strobe
        assert pulses == []
        soft = defines["NIBBLE_AXI_CONTROL_SOFT_RESET_MASK"]
        clear = defines["NIBBLE_AXI_CONTROL_CLEAR_COUNTERS_MASK"]
        await axil_write(ctx, dut, control, soft)
        await axil_write(ctx, dut, control, soft | clear, strb=0b1110)   # byte 0 not strobed
        await axil_write(ctx, dut, control, clear)
        await axil_write(ctx, dut, control, 0)
        assert (await axil_read(ctx, dut, control))[0] == 0
        assert pulses == [(1, 0), (0, 1)]

    simulate(dut, bench, watch)


@pytest.mark.parametrize("stall", [0, 3])
def test_handshakes_wait_for_the_master(stall):
    """A write's response comes WRITE_RESPONSE_CYCLES after its handshake and stays
    valid until taken; a new request waits for it (no second response is lost while
    the master holds ``bready``/``rready`` low)."""
    dut = AxiLiteRegisters()
    scratch = REGISTERS[-1].offset

    async def bench(ctx):
        for value in (5, 6):
            ctx.set(dut.awaddr, scratch)
            ctx.set(dut.wdata, value)
            ctx.set(dut.wstrb, 0xF)
            ctx.set(dut.awvalid, 1)
            ctx.set(dut.wvalid, 1)
            await ctx.tick().until(dut.awready)
            ctx.set(dut.awvalid, 0)
            ctx.set(dut.wvalid, 0)
            for _ in range(WRITE_RESPONSE_CYCLES - 1):        # the response waits ...
                assert not ctx.get(dut.bvalid) and not ctx.get(dut.awready)
                await ctx.tick()
            await ctx.tick().repeat(stall + 1)               # ... and then stays
            assert ctx.get(dut.bvalid)
            ctx.set(dut.bready, 1)
            await ctx.tick()
            ctx.set(dut.bready, 0)
        ctx.set(dut.araddr, scratch)
        ctx.set(dut.arvalid, 1)
        await ctx.tick().until(dut.arready)
        ctx.set(dut.arvalid, 0)
        await ctx.tick().repeat(stall + 1)
        assert ctx.get(dut.rvalid) and ctx.get(dut.rdata) == 6
        assert not ctx.get(dut.arready)

    simulate(dut, bench)


def test_docs_page_shows_the_generated_table():
    from pathlib import Path
    page = (Path(__file__).resolve().parent.parent / "docs" / "axi.md").read_text()
    assert markdown_table() in page, "docs/axi.md: paste wire.axi.markdown_table() again"
