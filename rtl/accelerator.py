"""The nibble accelerator: command and operand streams in, GEMM results out.

Data path (see ``docs/architecture.md``)::

    a_codes, b_codes -> RegisterSlice -> TileBuffer x2 -> Feeder -> SystolicArray (T x T)
                                                                        | psum rows
    a_exps, b_exps -> ExponentPrefetch                                  v (valid only)
                        s_t, out_exp queues -> PsumDrain <- psum queue
                                                  | beats of L elements
                                                  v
                                            TileRescaler -> [Narrower] -> raw | Requantizer | Log4Quantizer
                                                              -> result queue -> ResultGather -> result

Flow control without a ready chain
    Inside, nothing stops through a combinational ``ready``: the array, the rescaler and
    the output units' read sides never stall. Each writes into a buffer only with a
    *credit* for a free slot (:class:`rtl.queue.Credits`), taken when it commits and
    given back when the slot frees:

    * the feeder starts a tile with a credit for T rows of the psum queue (given back
      when the drain has read the tile's last row);
    * the drain sends a beat that ends an output tile (``last``) with a credit for the
      output unit: the requantizer's or log4 unit's tile bank, or in raw mode the result
      queue (with a narrower, for the narrower, which reads each of its narrow beats out
      with one of those credits instead);
    * the requantizer and log4 unit read a beat out with a credit for the result queue.

    Only the ports have a ready: the input streams' are registered state (a free tile
    buffer, the prefetch's room), the result stream comes out of a queue's registers.

With ``lanes`` L < T, the output path from the rescaler on is L elements wide: each
psum row enters the rescaler as T / L beats, the mask rows are split the same way, and
the result rows are gathered back, so the ports stay T wide. With ``out_lanes`` Q < L,
a :class:`rtl.narrower.Narrower` behind the rescaler splits its beats again, and the
output stages, the result queue and the gather are Q elements wide: the rescaler keeps
pace with the array (a partial-sum tile every T cycles), the output stages with the
finished tiles (one every K cycles for a reduction depth K; T * T / Q cycles each).

The stream formats are defined once, in :mod:`wire.streams` (layouts: :mod:`rtl.layouts`).
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.streams import OUT_MODES, TILE_EXP_BITS

from .drain import PsumDrain
from .exponent_prefetch import ExponentPrefetch
from .pipeline import register_copy, stage
from .feeder import Feeder
from .layouts import (command_is_legal, command_layout, mask_row_layout, operand_row_layout,
                      psum_row_layout, result_layout)
from .log4_quantizer import Log4Quantizer
from .narrower import Narrower
from .queue import Credits, RegisterSlice, StreamQueue
from .requantizer import Requantizer
from .result_gather import ResultGather, out_beat_layout
from .systolic_array import SystolicArray
from .tile_buffer import TileBuffer
from .tile_rescaler import TileRescaler

__all__ = ["Accelerator", "psum_queue_tiles"]

#: Result beats the result queue holds: enough for a credit's round trip (the output
#: units' read latency, at most the requantizer's 9 cycles, the write register and the
#: queue's own four with two read stages) at one beat per cycle.
RESULT_QUEUE_DEPTH = 16
#: Mask rows buffered at the mask port.
MASK_QUEUE_DEPTH = 4
#: Beats per tile from which the iCE40 profile keeps the rescaler's ring in block RAM:
#: at T = 4 with one lane (16 beats) 2 block RAMs save 259 flip-flops and 209 logic
#: cells of the UP5K; at T = 2 (4 beats) the flip-flop rows are 47 logic cells smaller.
ICE40_RING_RAM_BEATS = 16


def psum_queue_tiles(tile: int) -> int:
    """Tiles the psum queue holds: a credit is out from a tile's first k-step until the
    drain has read its last row, about 3T + 9 cycles, while a tile starts every T
    cycles; one more tile keeps the array busy while the credit comes back."""
    return -(-(3 * tile + 9) // tile) + 1


class Accelerator(wiring.Component):
    """nibble's top level: one GEMM per command, bit-exact with ``golden.gemm.tiled_gemm``
    followed by the chosen output stage (``golden.formats.quantize``; in dual fp4 mode
    the gradient unit, ``golden.output.log4_quantize_fused``).

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T, the array edge), ``acc_bits``, ``lanes`` (L, elements per cycle
        of the output path: with L < T a psum row takes T / L cycles to drain, so a GEMM
        takes about T / L times the cycles), ``out_lanes`` (Q, of the output stages:
        a finished tile takes T * T / Q cycles to leave them) and ``pipelined`` (False,
        the iCE40 profile: the queues without output rings and the register slices as
        wires; the same results, a few cycles less latency, longer paths).

    Attributes
    ----------
    cmd : In(stream.Signature(command_layout()))
        GEMM commands. A command is taken once the previous GEMM has produced its last
        result beat (which may still wait at ``result``); an illegal one
        (:func:`rtl.layouts.command_is_legal`, which includes stochastic rounding on a
        build without it) is taken and refused.
    a_codes, b_codes : In(stream.Signature(operand_row_layout(params)))
        Operand tile rows, in the order :mod:`wire.streams` gives.
    a_exps, b_exps : In(stream.Signature(signed(8)))
        Operand tile exponents, one per reduction tile per output tile.
    mask : In(stream.Signature(mask_row_layout(params)))
        Mask rows for int or fp4 mode with ``mask_en``: ``mask`` (ReLU'; bit n = 0
        zeroes element n) and ``clip_mask`` (dual fp4 mode: bit n = 1 adds element n's
        accumulator to its tile's alpha partial).
    result : Out(stream.Signature(result_layout(params)))
        Result rows, T per output tile (T + 2 in dual fp4 mode: :mod:`wire.streams`).
    busy : Out(1)
        A GEMM is in progress.
    refused : Out(1)
        Sticky until reset: an illegal command was taken and refused (no GEMM ran, no
        result came for it). Beats sent for it are still queued: reset before going on.
    fault : Out(1)
        Sticky until reset: an internal queue or credit counter was misused (a write into
        a full queue, a read of an empty one). Never set in a correct design; the
        testbenches check it.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        T = params.tile
        self.psum_tiles = psum_queue_tiles(T)
        super().__init__({
            "cmd": In(stream.Signature(command_layout())),
            "a_codes": In(stream.Signature(operand_row_layout(params))),
            "a_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "b_codes": In(stream.Signature(operand_row_layout(params))),
            "b_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "mask": In(stream.Signature(mask_row_layout(params))),
            "result": Out(stream.Signature(result_layout(params))),
            "busy": Out(1),
            "refused": Out(1),
            "fault": Out(1),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        # ---- Command register. A command is taken only when the previous GEMM is done.
        cmd = Signal(command_layout())
        busy, taken, run = Signal(name="busy"), Signal(), Signal()
        m.d.comb += [self.cmd.ready.eq(~busy), self.busy.eq(busy),
                     taken.eq(self.cmd.valid & self.cmd.ready),
                     run.eq(taken & command_is_legal(self.cmd.payload, p))]
        with m.If(taken):
            m.d.sync += cmd.eq(self.cmd.payload)
        with m.If(run):
            m.d.sync += busy.eq(1)
        with m.If(taken & ~run):                      # illegal: refused, nothing starts
            m.d.sync += self.refused.eq(1)
        # The units start one cycle after the command is taken, each from a start
        # register of its own (the pulse restarts counters all over the design).
        def start(unit):
            return register_copy(m, run, f"start_{unit}")

        faults = []
        drain, beat_clip = self._front(m, cmd, start, faults)
        rescaler, out = self._output_path(m, cmd, start, drain, beat_clip, faults, platform)
        m.submodules.gather = gather = ResultGather(p.out_params)
        # The result queue's head is a four-way multiplexer of its ring: through a
        # register slice, so the gather's row multiplexer starts at flip-flops.
        self._cut(m, "beat_slice", out_beat_layout(p.out_params), out.r, gather.beats)
        # The result leaves through a register slice: the host side may sit far away
        # on the die, and the gather's payload is a multiplexer of the result queue.
        self._cut(m, "result_slice", result_layout(p), gather.result,
                  wiring.flipped(self.result))
        m.d.comb += [gather.start.eq(start("gather")), gather.cmd.eq(cmd),
                     gather.saturated.eq(rescaler.saturated)]
        with m.If(gather.done):
            m.d.sync += busy.eq(0)
        m.d.comb += self.fault.eq(reduce(operator.or_, faults))  # each is sticky
        return m

    def _front(self, m, cmd, start, faults):
        """Exponent prefetch, operand buffers, feeder, array, psum queue and drain.
        Returns the drain and the clip-mask bits of its beat (beside ``beat_mask``)."""
        p = self._params
        m.submodules.prefetch = prefetch = ExponentPrefetch(p)
        wiring.connect(m, wiring.flipped(self.a_exps), prefetch.a_exps)
        wiring.connect(m, wiring.flipped(self.b_exps), prefetch.b_exps)
        m.d.comb += [prefetch.start.eq(start("prefetch")), prefetch.cmd.eq(cmd)]

        m.submodules.buf_a = buf_a = TileBuffer(p)
        m.submodules.buf_b = buf_b = TileBuffer(p)
        # The operand rows come from the host side, which may sit far away on the die:
        # through a register slice each, so the buffers' row enables start at registers.
        for port, buf in (("a_codes", buf_a), ("b_codes", buf_b)):
            self._cut(m, f"{port}_slice", operand_row_layout(p),
                      wiring.flipped(getattr(self, port)), buf.load)
        m.submodules.feeder = feeder = Feeder(p)
        m.submodules.array = array = SystolicArray(p)
        m.d.comb += [
            feeder.start.eq(start("feeder")), feeder.cmd.eq(cmd),
            feeder.a_full.eq(buf_a.full), feeder.b_full.eq(buf_b.full),
            buf_a.read.eq(feeder.read), buf_b.read.eq(feeder.read),
            buf_a.read_col.eq(feeder.a_read_col), buf_b.read_col.eq(feeder.b_read_col),
            buf_a.release.eq(feeder.release), buf_b.release.eq(feeder.release),
            array.valid.eq(feeder.valid), array.last.eq(feeder.last),
            array.a_signed.eq(feeder.a_signed), array.b_fp4.eq(feeder.b_fp4),
            array.a_fp4.eq(feeder.a_fp4),
            array.a_col.eq(buf_a.vector), array.b_row.eq(buf_b.vector),
        ]

        # The psum queue holds whole tiles; the feeder starts one only with a credit.
        # (two read stages: a block RAM's 5.8 ns clock-to-out and the route to the ring
        # were a 10.5 ns path on the ULX3S 16x16 at 11a4f22)
        m.submodules.psum_queue = psum_queue = StreamQueue(
            psum_row_layout(p), self.psum_tiles * p.tile, credited=True,
            read_stages=2 if p.pipelined else 0)
        m.submodules.psum_credits = psum_credits = Credits(self.psum_tiles)
        m.d.comb += [psum_queue.w.valid.eq(array.psum.valid),
                     psum_queue.w.payload.eq(array.psum.payload),
                     feeder.credit.eq(psum_credits.ok), psum_credits.take.eq(feeder.take_credit)]

        # (without the pipelining, for the iCE40, in flip-flops: its 2T x 4 bits would
        # take one of the UP5K's 30 block RAMs, which the rescaler's ring needs)
        m.submodules.mask_queue = mask_queue = StreamQueue(
            mask_row_layout(p), MASK_QUEUE_DEPTH, credited=False,
            read_stages=1 if p.pipelined else 0, registers=not p.pipelined)
        wiring.connect(m, wiring.flipped(self.mask), mask_queue.w)
        m.submodules.drain = drain = PsumDrain(p)
        wiring.connect(m, psum_queue.r, drain.psum)
        wiring.connect(m, prefetch.s, drain.s)
        wiring.connect(m, prefetch.out_exp, drain.out_exp)
        # (the drain takes the ReLU' half; the clip_mask half is dual mode's, not used yet)
        m.d.comb += [drain.mask.valid.eq(mask_queue.r.valid),
                     drain.mask.payload.eq(mask_queue.r.payload.mask),
                     mask_queue.r.ready.eq(drain.mask.ready)]
        m.d.comb += [drain.start.eq(start("drain")), drain.k_last.eq(cmd.k_last),
                     # from a flip-flop: the drain's beat decision is a long path
                     drain.mask_en.eq(register_copy(
                         m, cmd.mask_en & (cmd.out_mode != OUT_MODES["raw"]), "mask_en_drain")),
                     psum_credits.give.eq(drain.tile_read)]
        faults += [prefetch.fault, psum_queue.fault, psum_credits.fault, mask_queue.fault]
        # The clip-mask half of the mask row the drain reads, the beat's L bits of it: the
        # drain takes its ReLU' half the same way (row held at the queue's head while its
        # T / L beats go out, slice ``part`` advancing with every beat).
        beat_clip = mask_queue.r.payload.clip_mask
        if p.tile > p.lanes:
            part = Signal(range(p.tile // p.lanes), name="clip_part")
            with m.If(drain.beat.valid):
                m.d.sync += part.eq(part + 1)      # T / L is a power of two: wraps
            beat_clip = beat_clip.word_select(part, p.lanes)
        return drain, beat_clip

    def _output_path(self, m, cmd, start, drain, beat_clip, faults, platform=None):
        """Rescaler, the three output stages, the result queue and their credits.
        Returns the rescaler and the result queue."""
        p = self._params
        # The output mode, decoded into flip-flops, one set per consumer of the wide
        # multiplexers, through a copy of the mode field near them: the command register
        # sits by the command port, and one step from it to the decode was a 10 ns
        # route (ULX3S 8x8 at c6d25df). The command is steady from the cycle after it
        # was taken until the GEMM's last result, and the first beat reaches the output
        # path 2T + 4 cycles after the units start at the earliest, so two cycles of
        # copies are in time.
        def mode(key, unit):
            near = register_copy(m, cmd.out_mode, f"out_mode_{key}_{unit}")
            return register_copy(m, near == OUT_MODES[key], f"{key}_{unit}")
        raw, int_mode, fp4_mode = (mode(k, "path") for k in ("raw", "int", "fp4"))
        rescaler, acc, mask, clip = self._rescale(m, start, drain, beat_clip, platform)
        acc, mask, clip, edge = self._narrow(m, drain, acc, mask, clip, faults)
        requant, log4 = self._output_units(m, cmd, start, acc, mask, clip, int_mode, fp4_mode)
        q = p.out_params

        # The units' tile banks: the drain's credits for int and fp4 mode.
        m.submodules.bank_credits = bank_credits = Credits(requant.capacity)
        # (in LUT RAM: a block RAM's 5.8 ns clock-to-out was most of a 10.9 ns path to
        # the register behind it, ULX3S 16x16 at 11a4f22; 16 beats are one LUT RAM deep;
        # two read stages: the LUT RAMs' read into one register was still 10.1 ns at
        # df084b0)
        m.submodules.results = results = StreamQueue(out_beat_layout(q), RESULT_QUEUE_DEPTH,
                                                      credited=True, lut_ram=True,
                                                      read_stages=2 if p.pipelined else 0)
        m.submodules.out_credits = out_credits = Credits(results.capacity)
        # (a unit takes a credit only in its own mode: its ``credit`` input is gated)
        unit_take = requant.take_credit | log4.take_credit
        m.d.comb += [
            edge.credit.eq(Mux(raw, out_credits.ok, bank_credits.ok)),
            bank_credits.take.eq(edge.take_credit & ~raw),
            bank_credits.give.eq(requant.freed | log4.freed),
            requant.credit.eq(out_credits.ok & int_mode),
            log4.credit.eq(out_credits.ok & fp4_mode),
            out_credits.take.eq((raw & edge.take_credit) | unit_take),
            out_credits.give.eq(results.r.valid & results.r.ready),
        ]
        self._result_write(m, results, mode, acc, requant, log4)
        faults += [bank_credits.fault, out_credits.fault, results.fault]
        return rescaler, results

    def _rescale(self, m, start, drain, beat_clip, platform):
        """The rescaler on the drain's beats, and the beat's mask bits beside it, delayed
        as many cycles as it takes. Returns the rescaler, its output stream and the
        ReLU' and clip mask bits of each of its beats."""
        L = self._params.lanes
        # Its accumulators in LUT RAM, or in flip-flops on an iCE40, which has no LUT RAM;
        # without the pipelining (the iCE40 profile) and with a ring of at least
        # ICE40_RING_RAM_BEATS beats, in a memory there too: yosys folds the ring's
        # read-address register into a block RAM's read port.
        iCE40 = getattr(platform, "family", None) == "iCE40"
        in_ram = not iCE40 or (not self._params.pipelined
                               and self._params.beats_per_tile >= ICE40_RING_RAM_BEATS)
        ring = "ram" if in_ram else "registers"
        m.submodules.rescaler = rescaler = TileRescaler(self._params, ring=ring)
        m.d.comb += [rescaler.psum_in.valid.eq(drain.beat.valid),
                     rescaler.psum_in.payload.eq(drain.beat.payload), rescaler.clear.eq(start("rescaler"))]
        mask = Cat(drain.beat_mask, beat_clip)
        for i in range(TileRescaler.latency):
            later = Signal(2 * L, name=f"mask_delay{i}", reset_less=True)
            m.d.sync += later.eq(mask)
            mask = later
        return rescaler, rescaler.acc_out, mask[:L], mask[L:]

    def _narrow(self, m, drain, acc, mask, clip, faults):
        """With out_lanes < lanes, the narrower behind the rescaler (credited by the
        drain), which hands each beat on as L / Q beats of Q. Returns the output stages'
        beats and mask bits, and the unit that takes their credits (the narrower, or
        else the drain)."""
        p = self._params
        if p.out_lanes == p.lanes:
            return acc, mask, clip, drain
        m.submodules.narrower = narrower = Narrower(p)
        m.submodules.narrow_credits = narrow_credits = Credits(narrower.capacity)
        m.d.comb += [narrower.w.valid.eq(acc.valid), narrower.w.payload.eq(acc.payload),
                     narrower.w_mask.eq(mask), narrower.w_clip_mask.eq(clip),
                     drain.credit.eq(narrow_credits.ok),
                     narrow_credits.take.eq(drain.take_credit),
                     narrow_credits.give.eq(narrower.freed)]
        faults += [narrower.fault, narrow_credits.fault]
        return narrower.r, narrower.r_mask, narrower.r_clip_mask, narrower

    def _output_units(self, m, cmd, start, acc, mask, clip, int_mode, fp4_mode):
        """The requantizer and the log4 unit, each on the output stages' beats in its
        own mode, with their configuration from the command. Returns both."""
        q = self._params.out_params
        m.submodules.requant = requant = Requantizer(q)
        m.submodules.log4 = log4 = Log4Quantizer(q)
        # Each output unit takes the rescaler's beat through a register of its own (the
        # three consumers sit apart: the shared register's route to the units' first
        # logic was 10.4-11.3 ns on the ULX3S 16x16 at 40440bf); the mask goes along.
        requant_beat = stage(m, acc.payload, "requant_beat")
        m.d.sync += requant.acc_in.valid.eq(acc.valid & int_mode)
        m.d.comb += [
            requant.acc_in.payload.eq(requant_beat),
            requant.mask_in.eq(self._lane_copies(m, mask, "requant_mask")),
            # (the configuration in flip-flops of the requantizer's own: the command
            # register sits elsewhere, and the requantizer takes it 6 cycles ahead)
            requant.unsigned_out.eq(register_copy(m, cmd.out_unsigned, "unsigned_requant")),
            requant.clip_en.eq(register_copy(m, cmd.clip_en, "clip_en_requant")),
            requant.clip_mant.eq(register_copy(m, cmd.clip_mant, "clip_mant_requant")),
            requant.clip_exp.eq(register_copy(m, cmd.clip_exp, "clip_exp_requant")),
            requant.mask_en.eq(register_copy(m, cmd.mask_en, "mask_en_requant")),
            # (through two registers: with one, its route to the unit's magnitudes was
            # 7.6 of a 10.3 ns path, ULX3S 8x8 at 12884dc; the second sits by the unit)
            log4.acc_in.payload.eq(stage(m, stage(m, acc.payload, "log4_beat"),
                                         "log4_beat_near")),
            # fp4 mode with mask_en: the unit zeroes masked accumulators (dX of the
            # backward pass), so the tile maximum sees the masked values
            log4.mask_in.eq(self._lane_copies(m, stage(m, mask, "log4_mask_far"), "log4_mask")),
            log4.mask_en.eq(register_copy(m, cmd.mask_en, "mask_en_log4")),
            log4.clip_mask_in.eq(stage(m, stage(m, clip, "log4_clip_far"), "log4_clip_mask")),
            log4.dual.eq(cmd.out_dual),
            log4.phase.eq(cmd.out_phase), log4.linear.eq(cmd.out_linear),
            # the generators are seeded as each GEMM starts (from the command register)
            log4.stochastic.eq(cmd.out_stochastic), log4.seed.eq(cmd.seed),
            log4.load.eq(start("log4")),
            log4.ext_exp_en.eq(cmd.ext_exp_en), log4.ext_exp.eq(cmd.ext_exp),
        ]
        log4_valid = Signal(name="log4_valid_far")
        m.d.sync += [log4_valid.eq(acc.valid & fp4_mode), log4.acc_in.valid.eq(log4_valid)]

        return requant, log4

    def _cut(self, m, name, shape, src, dst):
        """Stream ``src`` into ``dst`` through a :class:`rtl.queue.RegisterSlice` called
        ``name`` (both sides' valid, payload and ready from flip-flops), or straight
        without ``NibbleParams.pipelined``."""
        if not self._params.pipelined:
            wiring.connect(m, src, dst)
            return
        m.submodules[name] = cut = RegisterSlice(shape)
        wiring.connect(m, src, cut.w)
        wiring.connect(m, cut.r, dst)

    @staticmethod
    def _lane_copies(m, bits, name):
        """``bits`` (one per lane) a cycle later, each in a flip-flop copy of its own: a
        lane's mask bit reaches all of that lane's magnitude bits, and one register
        for the whole mask sat far from the lanes (10.8 ns into the log4 unit's
        magnitudes, ULX3S 8x8 at 13f042d)."""
        return Cat(*(register_copy(m, bits[n], f"{name}_lane{n}") for n in range(len(bits))))

    def _result_write(self, m, results, mode, acc, requant, log4):
        """The result queue's write: the beat of the GEMM's output mode, through one
        register (the sources sit across the die from the queue). The mode selects every
        data bit of a beat: one copy of the select registers per lane, so no select net
        reaches all of them (one copy drove 520 bits at T = 16: a 10.9 ns route on the
        ULX3S at 11a4f22)."""
        L = self._params.out_lanes
        valid = Signal(name="result_w_valid")
        beat = Signal.like(results.w.payload, name="result_w", reset_less=True)
        m.d.comb += [results.w.valid.eq(valid), results.w.payload.eq(beat)]
        sources = {"raw": (acc.valid, acc.payload.acc, acc.payload.out_exp),
                   "int": (requant.codes_out.valid, requant.codes_out.payload.codes,
                           requant.codes_out.payload.exp),
                   "fp4": (log4.codes_out.valid, log4.codes_out.payload.data,
                           log4.codes_out.payload.exp)}

        def pick(unit, field):
            raw_sel, int_sel = mode("raw", unit), mode("int", unit)
            return Mux(raw_sel, sources["raw"][field],
                       Mux(int_sel, sources["int"][field], sources["fp4"][field]))
        m.d.sync += [valid.eq(pick("results", 0)), beat.exp.eq(pick("results_exp", 2))]
        data_width = len(beat.data) // L
        for n in range(L):
            m.d.sync += beat.data[n * data_width:(n + 1) * data_width].eq(
                pick(f"results_lane{n}", 1)[n * data_width:(n + 1) * data_width])

