"""lifeline.held defers a stop handler to the end of the block, also with other threads running
(the mask is per thread: another thread takes the signal, the handler runs in the main one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, threading, time
    from hearth.node import lifeline

    seen = []

    def on_stop(signum, frame):
        seen.append(signum)
        if not lifeline.defer_if_held(signum):
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_stop)
    idle = threading.Event()
    threading.Thread(target=idle.wait, daemon=True).start()  # its mask lets SIGINT in
    steps = []
    try:
        with lifeline.held():
            with lifeline.held():
                pass  # a nested block's end does not end the hold
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while len(seen) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            steps.append("block ran to its end")
        steps.append("not interrupted")
    except KeyboardInterrupt:
        steps.append("interrupted")
    print(" / ".join(steps), len(seen))
    """
)


def test_a_stop_taken_by_another_thread_waits_for_the_held_block_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "block ran to its end / interrupted 2", done.stderr


BACKGROUND = textwrap.dedent(
    """
    import os, signal, time
    from hearth.node import lifeline

    lifeline.sigterm_like_ctrl_c()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        print("ran on")
    except KeyboardInterrupt:
        print("stopped")
    """
)


def test_sigterm_stops_a_process_started_with_sigint_ignored() -> None:
    """A shell starts background commands with SIGINT ignored; SIGTERM must stop them anyway."""
    done = subprocess.run(
        [sys.executable, "-c", BACKGROUND],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.stdout.strip() == "stopped", done.stderr
