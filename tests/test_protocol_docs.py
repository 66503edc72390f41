"""The refusal table of docs/protocol.md is the code's: the same error codes with the same close
codes as realtime.protocol.REFUSALS, and every refusal the stream's code makes is in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from realtime import protocol
from realtime.events import ERROR_CODES
from realtime.protocol import LIBRARY_REFUSALS, REFUSALS

ROOT = Path(__file__).resolve().parent.parent
#: Where protocol v1 refuses a stream (the telephony protocols have tables of their own).
STREAM_MODULES = ("protocol", "stream_endpoint", "connection", "pacing", "server")


def documented_refusals() -> dict[str, set[int]]:
    """error code -> close codes, from the table under "## Refusals" in docs/protocol.md."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("\n## Refusals\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0].split("|")[2:4] == [" `code` ", " close "] and set(rows[1]) <= set("|- "), rows[:2]
    table: dict[str, set[int]] = {}
    for row in rows[2:]:
        _, _what, code, close, _ = row.split("|")
        name = re.fullmatch(r" `([a-z_]+)` ", code)
        assert name, row
        closes = {int(c) for c in close.split("/")} if close.strip() != "-" else set()
        table.setdefault(name[1], set()).update(closes)
    return table


def test_the_documented_table_is_the_codes() -> None:
    documented = documented_refusals()
    in_code = {code: set(closes) for code, closes in REFUSALS.items()}
    assert documented.keys() - in_code.keys() == set(), "documented, not in realtime.protocol.REFUSALS"
    assert in_code.keys() - documented.keys() == set(), "in realtime.protocol.REFUSALS, not in docs/protocol.md"
    assert documented == in_code
    assert REFUSALS.keys() <= ERROR_CODES.keys()


def made_refusals() -> set[tuple[str, int]]:
    """(code, close) of every ``ProtocolError("code", CLOSE_..., ...)`` in the stream's modules."""
    made: set[tuple[str, int]] = set()
    for module in STREAM_MODULES:
        tree = ast.parse((ROOT / "realtime" / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ProtocolError":
                code, close = node.args[:2]
                if isinstance(code, ast.Subscript) and ast.unparse(code.value) == "LIBRARY_REFUSALS":
                    continue  # those are added below, from LIBRARY_REFUSALS itself
                assert isinstance(code, ast.Constant) and isinstance(close, ast.Name), ast.unparse(node)
                made.add((code.value, getattr(protocol, close.id)))
    return made | {(code, close) for close, code in LIBRARY_REFUSALS.items()}


def test_every_refusal_the_code_makes_is_in_the_table() -> None:
    made = made_refusals()
    for code, close in made:
        assert code in REFUSALS, code
        # A dropped connection gets no close frame: its close code only goes to the log line.
        assert close in REFUSALS[code] or not REFUSALS[code], (code, close)
    listed = {(code, close) for code, closes in REFUSALS.items() for close in closes}
    # empty_stream is an error event before a normal close, not a ProtocolError.
    assert listed - made == {("empty_stream", protocol.CLOSE_NORMAL)}
    assert {code for code, _ in made} == REFUSALS.keys() - {"empty_stream"}
