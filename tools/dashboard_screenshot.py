"""Save a screenshot of the dashboard after an offline run over files (for the README).

    python tools/dashboard_screenshot.py --input demo --model specrnet --out docs/dashboard.png

Runs the same session the CLI opens with ``--dashboard`` (headless: Qt's offscreen platform),
waits until the final state is drawn, grabs the window and closes it. The test
``tests/test_dashboard.py::test_window_shows_the_emitted_events`` does the same with
RTD_SCREENSHOT_DIR set.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=["demo"], help="files, or 'demo' (default)")
    ap.add_argument("--model", default="specrnet", help="shipped model name or checkpoint folder")
    ap.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the run")
    args = ap.parse_args()

    from realtime.dashboard import DashboardOptions, check_available

    check_available()
    from PySide6 import QtWidgets

    from realtime.dashboard.app import DashboardSession
    from realtime.inputs import open_files
    from realtime.options import (
        DetectorOptions,
        EngineOptions,
        InputOptions,
        OutputOptions,
    )
    from realtime.output import Output
    from realtime.run import run_inputs

    options = DetectorOptions(engine=EngineOptions(args.model), input=InputOptions(offline=True),
                              output=OutputOptions(quiet=True))
    inputs = open_files(args.input, options)
    output = Output(options.output, sys.stdout, sys.stderr, show_stream=False)  # quiet: errors only, on stderr
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    session = DashboardSession(lambda bridge: run_inputs(inputs, options, output, [bridge]),
                               DashboardOptions(title="realtime-detect"))
    session.start()
    deadline = time.monotonic() + args.timeout
    while not session.window.settled() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    ok = session.window.settled()
    if ok:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        ok = session.window.grab().save(str(args.out))
    session.window.close()
    if session.thread.error is not None:
        print(f"dashboard_screenshot: {session.thread.error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}" if ok else "dashboard_screenshot: the run did not finish in time", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
