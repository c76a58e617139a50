"""cocotb drivers and monitors for Amaranth ``lib.stream`` ports in generated Verilog
(``<name>__payload``, ``<name>__valid``, ``<name>__ready``), payloads as packed integers."""

from __future__ import annotations

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["StreamDriver", "StreamMonitor"]


class StreamDriver:
    """Offers packed beats on ``<name>__payload``/``__valid`` with random gaps; valid
    never waits on ready."""

    def __init__(self, dut, name, rng, p_gap):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng, self.p_gap = rng, p_gap
        self.valid.value = 0

    async def send(self, words):
        for word in words:
            while self.rng.random() < self.p_gap:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = word
            while True:
                await ReadOnly()
                taken = bool(self.ready.value)
                await RisingEdge(self.clk)
                if taken:
                    break
        self.valid.value = 0


class StreamMonitor:
    """Takes beats from ``<name>__payload`` with random ready backpressure, and checks
    that a stalled beat is neither dropped nor changed."""

    def __init__(self, dut, name, rng, p_stall):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng, self.p_stall = rng, p_stall
        self.ready.value = 0
        self.cycles = 0

    async def receive(self, count):
        words, held = [], None
        while len(words) < count:
            self.ready.value = int(self.rng.random() >= self.p_stall)
            await ReadOnly()
            valid, ready = bool(self.valid.value), bool(self.ready.value)
            word = self.payload.value.to_unsigned() if valid else None
            if held is not None:
                assert valid and word == held, "result: a stalled beat was dropped or changed"
            if valid and ready:
                words.append(word)
            held = word if valid and not ready else None
            await RisingEdge(self.clk)
            self.cycles += 1
        self.ready.value = 0
        return words
