"""The nibble accelerator: command and operand streams in, GEMM results out.

Data path (see BRIEF section 2)::

    a_codes, b_codes -> TileBuffer x2 -> SystolicArray (T x T PEs) -> psum rows
    a_exps, b_exps   -> exponent prefetch: s_t and out_exp per output tile
    psum rows + (s_t - out_exp) -> TileRescaler -> accumulator rows
        -> raw | Requantizer (int4/uint4) | Log4Quantizer (fp4) -> result

With ``lanes`` L < T, the output path from the rescaler on is L elements wide: each
psum row enters the rescaler as T / L beats, the mask rows are split the same way, and
the result rows are gathered back from T / L beats, so the ports stay T wide.

The stream formats are defined once, in :mod:`rtl.layouts`.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from golden.params import ELEMENT_MAX, NibbleParams

from .bit_length import bit_length
from .layouts import (CODE_BITS, KIND_CODES, OUT_EXP_BITS, OUT_MODES, TILE_COUNT_BITS,
                      TILE_EXP_BITS, command_layout, operand_row_layout, result_layout)
from .log4_quantizer import Log4Quantizer
from .requantizer import Requantizer
from .systolic_array import SystolicArray
from .tile_buffer import TileBuffer
from .tile_rescaler import TileRescaler

__all__ = ["Accelerator"]

#: s_t = Ea + Eb + phases spans -256..256.
S_BITS = 10


class Accelerator(wiring.Component):
    """nibble's top level: one GEMM per command, bit-exact with ``golden.gemm.tiled_gemm``
    followed by the chosen output stage (``golden.formats.quantize``).

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T, the array edge), ``acc_bits`` and ``lanes`` (L, elements per cycle
        of the output path: with L < T the array waits T / L cycles for every psum row,
        so a GEMM takes about T / L times the cycles).

    Attributes
    ----------
    cmd : In(stream.Signature(command_layout()))
        GEMM commands. A command is taken when the previous GEMM has fully left.
    a_codes, b_codes : In(stream.Signature(operand_row_layout(params)))
        Operand tile rows, in the order :mod:`rtl.layouts` gives.
    a_exps, b_exps : In(stream.Signature(signed(8)))
        Operand tile exponents, one per reduction tile per output tile.
    mask : In(stream.Signature(T))
        ReLU' mask rows (bit n = 0 zeroes element n) for int or fp4 mode with ``mask_en``.
    result : Out(stream.Signature(result_layout(params)))
        Result rows, T per output tile.
    busy : Out(1)
        A GEMM is in progress.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        T = params.tile
        super().__init__({
            "cmd": In(stream.Signature(command_layout())),
            "a_codes": In(stream.Signature(operand_row_layout(params))),
            "a_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "b_codes": In(stream.Signature(operand_row_layout(params))),
            "b_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "mask": In(stream.Signature(T)),
            "result": Out(stream.Signature(result_layout(params))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        p = self._params
        T, acc_bits = p.tile, p.acc_bits
        m = Module()
        m.submodules.buf_a = buf_a = TileBuffer(p)
        m.submodules.buf_b = buf_b = TileBuffer(p)
        m.submodules.array = array = SystolicArray(p)
        m.submodules.rescaler = rescaler = TileRescaler(p)
        m.submodules.requant = requant = Requantizer(p)
        m.submodules.log4 = log4 = Log4Quantizer(p)
        max_k_tiles = 1 << TILE_COUNT_BITS
        m.submodules.s_fifo = s_fifo = SyncFIFOBuffered(width=S_BITS, depth=2 * max_k_tiles)
        m.submodules.oe_fifo = oe_fifo = SyncFIFOBuffered(width=OUT_EXP_BITS, depth=3)

        # ---- Command register. A command is taken only when the previous GEMM is done.
        cmd = Signal(command_layout())
        busy = Signal()
        m.d.comb += [self.cmd.ready.eq(~busy), self.busy.eq(busy)]
        start = self.cmd.valid & self.cmd.ready
        with m.If(start):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1)]
        m.d.comb += rescaler.clear.eq(start)

        # ---- Exponent prefetch: s_t = Ea[i,t] + Eb[t,j] + phases for every t, then
        # out_exp = max_t s_t + bit_length(Kt * T * Amax * Bmax) - (acc_bits - 1).
        pf_i = Signal(TILE_COUNT_BITS)
        pf_j = Signal(TILE_COUNT_BITS)
        pf_t = Signal(TILE_COUNT_BITS)
        pf_done = Signal()
        s_max = Signal(signed(S_BITS))
        s_now = Signal(signed(S_BITS))
        m.d.comb += s_now.eq(self.a_exps.payload + self.b_exps.payload
                             + cmd.a_phase + cmd.b_phase)
        # bound_bits = bit_length(Kt * T * Amax * Bmax), fixed for the whole GEMM, so it
        # is computed once per command, in two registered steps after the command register
        # (the prefetch waits for it: the arithmetic in one cycle was the longest path of
        # the iCE40 build). Each Amax is odd * 2**z with odd in {1, 15} (int4 8, uint4 15,
        # fp4 4096), so the product is Kt times at most two factors 15 = 16 - 1 (two
        # subtractions, no multiplier), shifted by the z's and log2 T, which only add to
        # the bit length.
        bound_bits = Signal(range(64), name="bound_bits")
        bound_wait = Signal(2)  # cycles until bound_bits holds this command's value
        with m.If(start):
            m.d.sync += bound_wait.eq(2)
        with m.Elif(bound_wait != 0):
            m.d.sync += bound_wait.eq(bound_wait - 1)
        odd_15 = {}
        pow_2 = {}
        for kind, code in KIND_CODES.items():
            value = ELEMENT_MAX[kind]
            z = (value & -value).bit_length() - 1
            assert value >> z in (1, 15), f"{kind}: Amax {value} is not (1 or 15) * 2**z"
            odd_15[code], pow_2[code] = value >> z == 15, z
        times = Signal(TILE_COUNT_BITS + 1)
        m.d.comb += times.eq(cmd.k_last + 1)
        scaled = times
        for kind_field in (cmd.a_kind, cmd.b_kind):
            is_15 = Cat(*(kind_field == code for code, yes in odd_15.items() if yes)).any()
            wider = Signal(len(scaled) + 4)
            m.d.comb += wider.eq(Mux(is_15, (scaled << 4) - scaled, scaled))
            scaled = wider
        pow_sum = Signal(range(64))
        with m.Switch(Cat(cmd.a_kind, cmd.b_kind)):
            for ka, za in pow_2.items():
                for kb, zb in pow_2.items():
                    with m.Case(ka | (kb << 2)):
                        m.d.comb += pow_sum.eq(za + zb + (T.bit_length() - 1))
        scaled_r = Signal.like(scaled, name="scaled_r")
        pow_sum_r = Signal.like(pow_sum, name="pow_sum_r")
        m.d.sync += [scaled_r.eq(scaled), pow_sum_r.eq(pow_sum),
                     bound_bits.eq(bit_length(m, scaled_r, "scaled_bits") + pow_sum_r)]
        pf_last_t = pf_t == cmd.k_last
        pf_go = (busy & (bound_wait == 0) & ~pf_done & self.a_exps.valid & self.b_exps.valid & s_fifo.w_rdy
                 & (~pf_last_t | oe_fifo.w_rdy))
        tile_max = Signal(signed(S_BITS))
        m.d.comb += tile_max.eq(Mux((pf_t == 0) | (s_now > s_max), s_now, s_max))
        m.d.comb += [
            self.a_exps.ready.eq(pf_go),
            self.b_exps.ready.eq(pf_go),
            s_fifo.w_en.eq(pf_go),
            s_fifo.w_data.eq(s_now),
            oe_fifo.w_en.eq(pf_go & pf_last_t),
            oe_fifo.w_data.eq(tile_max + bound_bits - (acc_bits - 1)),
        ]
        with m.If(pf_go):
            m.d.sync += [s_max.eq(tile_max), pf_t.eq(pf_t + 1)]
            with m.If(pf_last_t):
                m.d.sync += [pf_t.eq(0), pf_j.eq(pf_j + 1)]
                with m.If(pf_j == cmd.n_last):
                    m.d.sync += [pf_j.eq(0), pf_i.eq(pf_i + 1)]
                    with m.If(pf_i == cmd.m_last):
                        m.d.sync += [pf_i.eq(0), pf_done.eq(1)]

        # ---- Feeder: operand tiles into the buffers, one k-step per cycle into the array.
        wiring.connect(m, wiring.flipped(self.a_codes), buf_a.load)
        wiring.connect(m, wiring.flipped(self.b_codes), buf_b.load)
        k = Signal(range(T))
        fd_t = Signal(TILE_COUNT_BITS)
        fd_j = Signal(TILE_COUNT_BITS)
        fd_i = Signal(TILE_COUNT_BITS)
        fd_done = Signal()
        # Operands of the next GEMM may already wait in the buffers: feed only this one's.
        operands_ready = busy & ~fd_done & buf_a.full & buf_b.full
        en = Signal()
        m.d.comb += [
            en.eq(~array.psum.valid | array.psum.ready),
            array.en.eq(en),
            array.valid.eq(operands_ready),
            array.first.eq(k == 0),
            array.a_signed.eq(cmd.a_kind == KIND_CODES["int4"]),
            array.b_fp4.eq(cmd.b_kind == KIND_CODES["fp4"]),
            array.a_fp4.eq(cmd.a_kind == KIND_CODES["fp4"]),
            buf_a.step.eq(k),
            buf_b.step.eq(k),
            # A needs column k of its tile: a stored column, or a stored row if transposed.
            buf_a.read_col.eq(~cmd.a_trans),
            buf_b.read_col.eq(cmd.b_trans),
            array.a_col.eq(buf_a.vector),
            array.b_row.eq(buf_b.vector),
        ]
        step = en & operands_ready
        with m.If(step):
            m.d.sync += k.eq(k + 1)
            with m.If(k == T - 1):
                m.d.sync += fd_t.eq(fd_t + 1)
                with m.If(fd_t == cmd.k_last):
                    m.d.sync += [fd_t.eq(0), fd_j.eq(fd_j + 1)]
                    with m.If(fd_j == cmd.n_last):
                        m.d.sync += [fd_j.eq(0), fd_i.eq(fd_i + 1)]
                        with m.If(fd_i == cmd.m_last):
                            m.d.sync += [fd_i.eq(0), fd_done.eq(1)]
        m.d.comb += [buf_a.release.eq(step & (k == T - 1)), buf_b.release.eq(step & (k == T - 1))]

        # ---- Drain: psum rows with their shift into the rescaler, L elements per beat.
        L, slices = p.lanes, T // p.lanes
        dr_row = Signal(range(T))
        dr_t = Signal(TILE_COUNT_BITS)
        # which L elements of the psum row go next (no counter, and no zero-width signal
        # in the Verilog, at full width)
        dr_slice = Signal(range(slices)) if slices > 1 else None
        dr_slice_last = dr_slice == slices - 1 if slices > 1 else C(1, 1)
        shift_ready = s_fifo.r_rdy & oe_fifo.r_rdy
        beat = rescaler.psum_in.payload
        m.d.comb += [
            rescaler.psum_in.valid.eq(array.psum.valid & shift_ready),
            array.psum.ready.eq(rescaler.psum_in.ready & shift_ready & dr_slice_last),
            beat.psums.eq(array.psum.payload if slices == 1 else
                          array.psum.payload.as_value().word_select(
                              dr_slice, len(beat.psums.as_value()))),
            beat.shift.eq(s_fifo.r_data.as_signed() - oe_fifo.r_data.as_signed()),
            beat.out_exp.eq(oe_fifo.r_data),
            beat.first.eq(dr_t == 0),
            beat.last.eq(dr_t == cmd.k_last),
        ]
        beat_take = rescaler.psum_in.valid & rescaler.psum_in.ready
        dr_take = beat_take & dr_slice_last  # a whole psum row is in
        if slices > 1:
            with m.If(beat_take):
                m.d.sync += dr_slice.eq(Mux(dr_slice_last, 0, dr_slice + 1))
        with m.If(dr_take):
            m.d.sync += dr_row.eq(dr_row + 1)
            with m.If(dr_row == T - 1):
                m.d.sync += dr_t.eq(dr_t + 1)
                with m.If(dr_t == cmd.k_last):
                    m.d.sync += dr_t.eq(0)
        m.d.comb += [
            s_fifo.r_en.eq(dr_take & (dr_row == T - 1)),
            oe_fifo.r_en.eq(dr_take & (dr_row == T - 1) & (dr_t == cmd.k_last)),
        ]

        # ---- Output stage, L elements per beat. A mask row is split like the
        # accumulator rows: slice acc_slice of it goes with the current beat.
        mode = cmd.out_mode
        m.d.comb += [
            requant.unsigned_out.eq(cmd.out_unsigned),
            requant.clip_en.eq(cmd.clip_en),
            requant.clip_mant.eq(cmd.clip_mant),
            requant.clip_exp.eq(cmd.clip_exp),
            requant.mask_en.eq(cmd.mask_en),
            log4.phase.eq(cmd.out_phase),
            log4.linear.eq(cmd.out_linear),
            log4.ext_exp_en.eq(cmd.ext_exp_en),
            log4.ext_exp.eq(cmd.ext_exp),
        ]
        acc = rescaler.acc_out
        acc_slice = Signal(range(slices)) if slices > 1 else None
        acc_slice_last = acc_slice == slices - 1 if slices > 1 else C(1, 1)
        if slices > 1:
            with m.If(acc.valid & acc.ready):
                m.d.sync += acc_slice.eq(Mux(acc_slice_last, 0, acc_slice + 1))
        mask_slice = self.mask.payload if slices == 1 else \
            self.mask.payload.word_select(acc_slice, L)
        m.d.comb += [
            requant.mask_in.payload.eq(mask_slice),
            requant.acc_in.payload.eq(acc.payload),
            log4.acc_in.payload.out_exp.eq(acc.payload.out_exp),
        ]
        # fp4 mode with mask_en: ReLU' zeroes masked accumulators before the log4 unit
        # (dX of the backward pass), so the tile maximum sees the masked values.
        fp4_mask = cmd.mask_en & (mode == OUT_MODES["fp4"])
        for n in range(L):
            m.d.comb += log4.acc_in.payload.acc[n].eq(
                Mux(fp4_mask & ~mask_slice[n], 0, acc.payload.acc[n]))
        # The chosen unit's beats: acc_bits or 4 bits per element.
        out_valid, out_ready = Signal(), Signal()
        out_data = Signal(L * acc_bits)
        out_exp = Signal(signed(OUT_EXP_BITS))
        with m.Switch(mode):
            with m.Case(OUT_MODES["raw"]):
                m.d.comb += [
                    out_valid.eq(acc.valid),
                    acc.ready.eq(out_ready),
                    out_data.eq(acc.payload.acc.as_value()),
                    out_exp.eq(acc.payload.out_exp),
                ]
            with m.Case(OUT_MODES["int"]):
                m.d.comb += [
                    requant.mask_in.valid.eq(self.mask.valid),
                    self.mask.ready.eq(requant.mask_in.ready & acc_slice_last),
                    requant.acc_in.valid.eq(acc.valid),
                    acc.ready.eq(requant.acc_in.ready),
                    out_valid.eq(requant.codes_out.valid),
                    requant.codes_out.ready.eq(out_ready),
                    out_data.eq(requant.codes_out.payload.codes.as_value()),
                    out_exp.eq(requant.codes_out.payload.exp),
                ]
            with m.Default():
                # with fp4_mask, a beat moves only together with its mask row
                mask_ok = ~fp4_mask | self.mask.valid
                m.d.comb += [
                    log4.acc_in.valid.eq(acc.valid & mask_ok),
                    acc.ready.eq(log4.acc_in.ready & mask_ok),
                    self.mask.ready.eq(fp4_mask & log4.acc_in.ready & acc.valid
                                       & acc_slice_last),
                    out_valid.eq(log4.codes_out.valid),
                    log4.codes_out.ready.eq(out_ready),
                    out_data.eq(log4.codes_out.payload.codes.as_value()),
                    out_exp.eq(log4.codes_out.payload.exp),
                ]
        # Result rows: T / L beats gathered; the last one goes out with the held ones.
        res = self.result.payload
        if slices == 1:
            m.d.comb += [self.result.valid.eq(out_valid & busy), out_ready.eq(self.result.ready),
                         res.data.eq(out_data), res.exp.eq(out_exp)]
        else:
            out_slice = Signal(range(slices))
            out_slice_last = out_slice == slices - 1
            held = [Signal(L * acc_bits, name=f"held_beat{j}") for j in range(slices - 1)]
            m.d.comb += [
                self.result.valid.eq(out_valid & out_slice_last & busy),
                out_ready.eq(~out_slice_last | self.result.ready),
                res.data.eq(Mux(mode == OUT_MODES["raw"], Cat(*held, out_data),
                                Cat(*(h[:CODE_BITS * L] for h in held + [out_data])))),
                res.exp.eq(out_exp),
            ]
            with m.If(out_valid & out_ready):
                m.d.sync += out_slice.eq(Mux(out_slice_last, 0, out_slice + 1))
                with m.Switch(out_slice):
                    for j in range(slices - 1):
                        with m.Case(j):
                            m.d.sync += held[j].eq(out_data)

        # ---- Result counting: the GEMM ends with its last result row.
        out_row = Signal(range(T))
        out_j = Signal(TILE_COUNT_BITS)
        out_i = Signal(TILE_COUNT_BITS)
        is_last = (out_row == T - 1) & (out_j == cmd.n_last) & (out_i == cmd.m_last)
        # The sticky flag may rise while a beat waits; freeze it in a stalled beat so the
        # payload stays stable (it is final on the last beat: every accumulation is done).
        stalled_before = Signal()
        saturated_before = Signal()
        m.d.sync += [stalled_before.eq(self.result.valid & ~self.result.ready),
                     saturated_before.eq(res.saturated)]
        m.d.comb += [
            res.saturated.eq(Mux(stalled_before, saturated_before, rescaler.saturated)),
            res.last.eq(is_last),
        ]
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += out_row.eq(out_row + 1)
            with m.If(out_row == T - 1):
                m.d.sync += out_j.eq(out_j + 1)
                with m.If(out_j == cmd.n_last):
                    m.d.sync += [out_j.eq(0), out_i.eq(out_i + 1)]
            with m.If(is_last):
                m.d.sync += [busy.eq(0), pf_done.eq(0), fd_done.eq(0), out_i.eq(0), out_j.eq(0)]
        return m
