"""Board driver: GEMMs on a nibble board, or on its simulation, over the UART host link
or the AXI ports.

One API, :class:`Device`, whose :meth:`~wire.host_driver.GemmDevice.gemm` takes golden
``QTensor`` operands and returns the same :class:`wire.gemm_protocol.GemmOutput` as
:func:`wire.gemm_protocol.expected`. The protocol logic (frames, retries, flow control)
is :class:`wire.host_driver.HostDriver`; this module adds the two links that carry its
frames (:mod:`wire.host_link`):

- :class:`SerialLink`, a real board through pyserial (``pip install nibble[serial]``);
- ``verif.sim_link.SimLink``, the Verilated ``host_bridge`` (UART included) driven by
  cocotb; the Device then runs in a ``cocotb.task.bridge`` thread.

:meth:`Device.axi` opens the third backend, the Verilated ``nibble_axi`` through its
AXI ports (``verif.axi_device.AxiDevice``: the same methods, no frames), also from a
``cocotb.task.bridge`` thread.
"""

from __future__ import annotations

from wire import host_link as P
from wire.host_driver import HostDriver

__all__ = ["Device", "SerialLink"]


class SerialLink:
    """A board on a serial port, through pyserial (imported only here).

    Parameters
    ----------
    port : str
        Serial device, e.g. ``/dev/ttyUSB1``.
    baud : int
        Line rate; must match the bitstream's.
    latency_s : float
        Extra time to allow for a reply: USB serial adapters hold received bytes up to
        their latency timer (FTDI: 16 ms by default).
    """

    def __init__(self, port: str, baud: int = P.DEFAULT_BAUD, *, latency_s: float = 0.05):
        try:
            import serial
        except ImportError:
            raise RuntimeError("the serial backend needs pyserial: "
                               "pip install nibble[serial]") from None
        self.baud, self.latency_s = baud, latency_s
        self.interbyte_timeout_s = P.interbyte_timeout(baud)
        self._port = serial.Serial(port, baud, timeout=0)
        self._port.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, n: int, timeout_s: float) -> bytes:
        self._port.timeout = timeout_s
        return self._port.read(n)

    def close(self) -> None:
        self._port.close()


class Device(HostDriver):
    """A nibble accelerator behind the host link (:class:`wire.host_driver.HostDriver`,
    whose parameters it takes), opened on a board or on its simulation."""

    @classmethod
    def serial(cls, port: str, *, baud: int = P.DEFAULT_BAUD, params=None, **kwargs) -> "Device":
        """A board on serial port ``port``."""
        return cls(SerialLink(port, baud), params, **kwargs)

    @classmethod
    def sim(cls, dut, *, params=None, **kwargs) -> "Device":
        """The Verilated ``host_bridge`` top ``dut``. Call from a ``cocotb.task.bridge``
        thread; it starts the clock, resets the design and attaches the line model."""
        from verif.sim_link import SimLink
        return cls(SimLink.open(dut), params, **kwargs)

    @staticmethod
    def axi(dut, *, params=None, **kwargs):
        """The Verilated ``nibble_axi`` top ``dut``, through its AXI4-Stream and AXI4-Lite
        ports: a ``verif.axi_device.AxiDevice``, which has this class's methods
        (``status``, ``reset``, ``write``, ``read``, ``gemm``, ``run``) without the UART
        frames. Call from a ``cocotb.task.bridge`` thread; it starts the clock and the
        bus models, resets the design and checks ID, VERSION and PARAMS."""
        from verif.axi_device import AxiDevice
        return AxiDevice.open(dut, params, **kwargs)
