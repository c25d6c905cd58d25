"""Imported by the forkserver that starts the worker processes, and nowhere else (see
:func:`cumel._bulk.workers._mp_context`): it preloads the package, and makes the forkserver
ignore SIGTERM as multiprocessing makes it ignore SIGINT.

A SIGTERM sent to the whole process group (systemd stopping a unit, a shell killing a job)
would otherwise kill the forkserver, and the pool would read that as the death of every worker
(a worker's exit is reported through the forkserver): the results of the files in hand would be
lost while their outputs were being written. The run decides what stops; the forkserver exits
by itself once the run and its workers are gone.
"""
import signal

from . import workers  # noqa: F401 - what the workers run, imported once before they fork

signal.signal(signal.SIGTERM, signal.SIG_IGN)
