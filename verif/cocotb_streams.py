"""cocotb drivers and monitors for Amaranth ``lib.stream`` ports in generated Verilog
(``<name>__payload``, ``<name>__valid``, ``<name>__ready``), payloads as packed integers,
and for the valid-only, credit-counted ports of the accelerator's inner units."""

from __future__ import annotations

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["StreamDriver", "StreamMonitor", "ValidOnlyDriver", "CreditCounter", "CreditedSink",
           "check_port_widths"]


def check_port_widths(dut, params, ports: dict) -> None:
    """Fail at once unless every port of ``ports`` ({name: layout function of params})
    is as wide as ``params`` make it: a bench run on a build for other parameters."""
    for port, layout in ports.items():
        width, need = len(getattr(dut, port)), layout(params).size
        assert width == need, f"{port} is {width} bits, {params} needs {need}: " \
                              f"the simulation was built for other parameters"


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


class ValidOnlyDriver:
    """Drives a valid-only stream (``always_ready``: no ``__ready`` port) with random
    gaps, one beat per cycle it is valid. With ``credits`` (a :class:`CreditCounter`) it
    sends only while it holds one."""

    def __init__(self, dut, name, rng, p_gap, credits=None):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng, self.p_gap, self.credits = rng, p_gap, credits
        self.valid.value = 0

    async def send(self, words, sideband=None):
        """Send ``words``; ``sideband`` = (handle, values) is driven beside each beat."""
        for i, word in enumerate(words):
            while self.rng.random() < self.p_gap or (self.credits and not self.credits.count):
                self.valid.value = 0
                await RisingEdge(self.clk)
            if self.credits:
                self.credits.count -= 1
            self.valid.value = 1
            self.payload.value = word
            if sideband:
                sideband[0].value = sideband[1][i]
            await RisingEdge(self.clk)
        self.valid.value = 0


class CreditCounter:
    """A producer's credits for a unit's input, given back by the unit's ``freed``
    pulses (counted by :meth:`run`)."""

    def __init__(self, dut, capacity, freed="freed"):
        self.clk, self.freed = dut.clk, getattr(dut, freed)
        self.capacity = self.count = capacity

    async def run(self):
        while True:
            await ReadOnly()
            self.count += int(self.freed.value)
            assert self.count <= self.capacity, "the unit gave back more credits than it had"
            await RisingEdge(self.clk)


class CreditedSink:
    """The buffer behind a never-stalling unit's valid-only output: ``slots`` credits on
    ``credit``, one taken per ``take_credit`` pulse, one given back per beat it removes
    (at random, ``p_stall``). Fails if a beat arrives with no room for it."""

    def __init__(self, dut, name, rng, p_stall, slots=8):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        self.credit, self.take = dut.credit, dut.take_credit
        self.rng, self.p_stall, self.slots = rng, p_stall, slots
        self.credit.value = 0

    async def receive(self, count):
        words, held, credits = [], [], self.slots
        while len(words) < count:
            self.credit.value = int(credits > 0)
            await ReadOnly()
            took = bool(self.take.value)
            assert not took or credits > 0, "the unit took a credit it did not have"
            credits -= took
            if self.valid.value:
                held.append(self.payload.value.to_unsigned())
                assert len(held) <= self.slots, "a beat arrived with no room for it"
            if held and self.rng.random() >= self.p_stall:
                words.append(held.pop(0))
                credits += 1
            await RisingEdge(self.clk)
        self.credit.value = 0
        return words
