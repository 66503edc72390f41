"""``realtime-detect``: the command line (its parser and help: :mod:`realtime.cli_args`).

Exit status: 0 all inputs scored, 1 some inputs failed (each named on stderr), 2 usage error.
"""
from __future__ import annotations

import os

# Before numpy loads: its OpenBLAS would fan the per-hop front end's small filterbank product out over
# every core, with threads that spin between calls (3x the front end's CPU on the 2-core VM). Our own
# workers decide parallelism, as for ONNX Runtime's intra-op threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from realtime.cli_args import as_flags, build_parser, options_from_args
from realtime.console import printable
from realtime.inputs import Inputs, Listener, named_inputs, resolve
from realtime.options import DetectorOptions
from realtime.output import Output, plot_observers, silence
from realtime.run import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    run_inputs,
    run_listener,
)


def _open_records(options: DetectorOptions) -> list:
    """The sinks that record every run's events: the event log (--events), the webhook."""
    records: list = []
    if options.events is not None:
        from realtime.eventlog import open_event_log

        records.append(open_event_log(options.events, options.event_log))
    if options.webhook is not None:
        from realtime.webhook import WebhookSink

        records.append(WebhookSink(options.webhook))
    return records


def list_engines(stdout: TextIO, stderr: TextIO, model: str) -> int:
    from engines import CheckpointError, EngineError, available_engines

    try:
        statuses = available_engines(model)
    except (EngineError, CheckpointError) as e:  # --model names no checkpoint
        print(f"realtime-detect: {printable(str(e))}", file=stderr)
        return EXIT_FAILED
    try:
        for s in statuses:
            print(f"{'yes' if s.available else 'no ':3s}  {s.name:9s} {s.reason}", file=stdout)
    except BrokenPipeError:  # `| head` has what it wanted
        silence(stdout)
    return EXIT_OK


def list_devices(stdout: TextIO, stderr: TextIO) -> int:
    from realtime.errors import RealtimeError
    from realtime.sources.mic import list_devices

    try:
        print(list_devices(), file=stdout)
    except RealtimeError as e:
        print(f"realtime-detect: {printable(str(e))}", file=stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check_extras(options: DetectorOptions) -> None:
    """Missing extras are reported before any audio is touched."""
    if options.output.dashboard:
        from realtime.dashboard import check_available

        check_available()
    if options.output.plot is not None:
        from realtime.plot import require_matplotlib

        require_matplotlib()


def _run(run: Inputs | Listener, options: DetectorOptions, stdout: TextIO, stderr: TextIO, records: list) -> int:
    """The input through the pipeline, in a dashboard window when asked for (detection then runs
    in a worker thread, the window on this one: see realtime.dashboard)."""
    if isinstance(run, Listener):
        def detect(observers: list) -> Coroutine[Any, Any, int]:
            return run_listener(run, options, stdout, stderr, records, observers)
    else:
        output = Output(options.output, stdout, stderr, show_stream=len(run.streams) > 1, records=records)
        plots = plot_observers([Path(p) for p, _ in run.streams], options.output, stderr) if run.files else []

        def detect(observers: list) -> Coroutine[Any, Any, int]:
            return run_inputs(run, options, output, [*plots, *observers])
    if not options.output.dashboard:
        return asyncio.run(detect([]))
    from realtime.dashboard import DashboardOptions, run_dashboard

    return run_dashboard(lambda bridge: detect([bridge]), DashboardOptions(
        title=f"realtime-detect: {run.title}", exit_when_done=options.output.dashboard_exit))


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.list_engines:
        return list_engines(stdout, stderr, args.model)
    if args.list_devices:
        return list_devices(stdout, stderr)
    if not args.input:
        ap.error("--input is required (try --input demo)")
    from engines import CheckpointError, EngineError, MissingExtraError
    from realtime.errors import RealtimeError

    records: list = []
    try:
        try:
            options = options_from_args(args)
            if options.output.plot is not None and named_inputs(args.input):
                # Before the input is opened: a microphone or a port is not touched for a usage error.
                ap.error(f"--plot: only for files, not --input {args.input[0]}")
            run = resolve(args.input, options)
        except ValueError as e:
            ap.error(as_flags(ap, str(e)))
        records = _open_records(options)
        _check_extras(options)
        return _run(run, options, stdout, stderr, records)
    except (EngineError, CheckpointError, MissingExtraError, RealtimeError, ValueError) as e:
        print(f"realtime-detect: {printable(str(e))}", file=stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout's reader left while something other than an event was written
        silence(stdout)
        return EXIT_OK
    finally:
        for record in records:
            record.close()  # the loop is gone: write (or POST) what is queued, sync, close


if __name__ == "__main__":
    raise SystemExit(main())
