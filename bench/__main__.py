"""``python -m bench``: see :func:`bench.cli.main`. Sub-commands: ``python -m bench gpu`` (every
GPU number in one call, :mod:`bench.gpu`), ``python -m bench kernels`` (ptxas and occupancy of
every kernel, no GPU needed, :mod:`bench.kernels`), ``python -m bench audio ...`` (the
mel-to-audio table, :mod:`bench.audio`), ``python -m bench frontends ...`` (the front-end table,
:mod:`bench.frontends`), ``python -m bench info ...`` (the memory and time of
``return_info=True`` on a large batch, :mod:`bench.info`), ``python -m bench torch ...``
(forward + backward of ``cumel.torch.InverseMelScale`` against lstsq + relu in torch,
:mod:`bench.torch_grad`), ``python -m bench stream ...`` (cumel.MelStream: quality against
look-ahead, real-time factor against streams, :mod:`bench.stream`)."""
import importlib
import sys

COMMANDS = {"audio": "bench.audio", "frontends": "bench.frontends", "gpu": "bench.gpu",
            "info": "bench.info",
            "kernels": "bench.kernels", "stream": "bench.stream", "torch": "bench.torch_grad"}

if sys.argv[1:2] and sys.argv[1] in COMMANDS:
    module = importlib.import_module(COMMANDS[sys.argv[1]])
    if sys.argv[1] == "gpu":             # the command line: a watchdog ends a hung run
        raise SystemExit(module.main(sys.argv[2:], hard_exit=True))
    raise SystemExit(module.main(sys.argv[2:]))

raise SystemExit(importlib.import_module("bench.cli").main())
