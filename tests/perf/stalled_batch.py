"""One request stalled among quick ones: how much ctcli reads behind it, its memory, re-sends.

    .venv/bin/python tests/perf/stalled_batch.py [EVENTS]     # default 300,000

Starts a loopback sandbox that holds the 3rd request, runs `ctcli upload --state` until nothing
more is accepted, reads the peak RSS of the ctcli processes, SIGKILLs ctcli, then runs it again
and counts the records sent again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctcli.sandbox.server import Sandbox

CTCLI = str(Path(sys.executable).with_name("ctcli"))


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    work = Path(tempfile.mkdtemp(prefix="ctcli-stall-"))
    data, state = work / "events.ndjson", work / "events.state"
    with data.open("w") as out:
        for n in range(count):
            traits = {"name": f"U {n}", "email": f"u{n}@example.com", "plan": "pro", "n": n}
            event = {"type": "identify", "userId": f"user-{n}", "traits": traits,
                     "timestamp": "2024-03-01T10:00:00Z"}  # fmt: skip
            out.write(json.dumps(event) + "\n")
    with Sandbox(project_id="A", passcode="B") as sandbox:
        env = dict(os.environ, CLEVERTAP_ENDPOINT=sandbox.url, CLEVERTAP_PROJECT_ID="A",
                   CLEVERTAP_PASSCODE="B", CTCLI_CONFIG=str(work / "none.toml"))  # fmt: skip
        args = [CTCLI, "upload", "-o", "ndjson", "--state", str(state), str(data)]
        sandbox.set_faults(stall_request=3)
        first = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        sandbox.wait_held(1, timeout=60)
        last, since = -1, time.monotonic()
        while time.monotonic() - since < 2:  # until nothing more is accepted for 2 s
            now = sandbox.stats()["records_processed"]
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.1)
        children = subprocess.run(
            ["pgrep", "-P", str(first.pid)], capture_output=True, text=True
        ).stdout.split()
        main_kib = peak_kib(first.pid)
        worker_kib = [peak_kib(int(child)) for child in children]
        first.kill()
        first.wait()
        accepted = sandbox.stats()["records_processed"]
        sandbox.clear_faults()
        second = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sent = sandbox.stats()["records_processed"] - accepted
    print(
        f"{count:,} events: {accepted:,} accepted behind the stalled request; peak RSS "
        f"{main_kib / 1024:.1f} MB (main), {[round(k / 1024, 1) for k in worker_kib]} MB "
        f"(worker); the next run sent {sent:,}, of which {sent - (count - accepted):,} again "
        f"(exit {second.returncode})"
    )


if __name__ == "__main__":
    main()
