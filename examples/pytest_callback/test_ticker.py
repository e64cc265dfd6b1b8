# SPDX-License-Identifier: MIT
"""ticker's own suite: run it as it is (`pytest`), in a sub-interpreter
(`pytest --gilshim-subinterpreter`), and with gilshim
(`pytest --gilshim-subinterpreter --gilshim=diagnose|route`)."""
import ticker


def test_interp_id():
    assert ticker.interp_id() >= 0


def test_callback_runs_in_callers_interpreter():
    seen = []
    ticker.run(lambda: seen.append(ticker.interp_id()), 3)
    assert seen == [ticker.interp_id()] * 3


def test_no_callback():
    ticker.run(lambda: None, 0)
