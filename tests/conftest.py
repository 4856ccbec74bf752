"""What every test session needs, whatever started it.

Ctrl-C: several tests interrupt an `sfa` subprocess the way a terminal does, and a
child inherits an ignored SIGINT across exec. A shell script that starts the suite as a
background job without job control (`bash .ci/run &` in a CI wrapper, `nohup ... &`)
runs it with SIGINT ignored, as POSIX says it must; `sfa generate` then never sees the
test's SIGINT and exits 0 after generating the whole market (found in a fresh-clone
CI run started that way). The session puts Python's own handler back, so the children
start with the default, as they would under a terminal.
"""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
