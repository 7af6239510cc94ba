"""Imported first by the batch's fork server (:data:`otreg.batch.forking.PRELOAD`), for its
one effect: the server ignores SIGTERM and SIGHUP.

Slurm's scancel and time limit send SIGTERM to every process of a job at once. A server
killed by it loses the exit statuses of its workers (multiprocessing relays them), and the
runner would report an interrupted case as a worker gone with exit code 255. The server still
ends with its runner (multiprocessing's forkserver exits when the runner's pipe closes), and
each worker takes the default handlers back as it starts (:func:`otreg.batch.forking._worker`).
"""

import signal

for _signal in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signal, signal.SIG_IGN)
