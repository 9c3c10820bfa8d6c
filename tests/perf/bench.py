"""Benchmark ctcli against the shortest honest Python program doing the same work.

Run with the project's virtualenv (pytest ignores this directory):

    .venv/bin/python tests/perf/bench.py [--events N] [--runs K] [--json] [--skip-rss]

What it measures, all as wall time of separate processes, medians over --runs:

- upload: `ctcli upload FILE -o ndjson --concurrency 4 > /dev/null` against a `ctcli sandbox`
  process, versus a baseline that reads the file line by line, parses with orjson, maps with
  `ctcli.actions.map_upload(event, FieldMapping())` and posts 1000-record batches with one
  keep-alive httpx.Client from 4 worker threads, checking every answer. ctcli sends every event
  (Delete User track events too) through User Upload, and so does the baseline.
- dry-run: `ctcli upload --dry-run -o ndjson FILE > /dev/null` versus the baseline without the
  network (parse, map, gather 1000-record batches, send and write nothing).
- peak RSS of that dry run at --events and at --rss-events (default 1,000,000), from wait4().
- start-up: `ctcli --version` and `ctcli --help` versus `python -c "import typer"`, median of 10.

ctcli and baseline runs alternate (ABBA order) so that they share the machine's noise fairly,
and the sandbox is reset before every upload so its memory stays flat. After each upload the
sandbox's counters are checked, so a fast run that did not deliver everything cannot pass.
The exit code is 0 even when a ratio fails: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CTCLI = str(VENV_BIN / "ctcli") if (VENV_BIN / "ctcli").exists() else shutil.which("ctcli")
CONCURRENCY = 4
STARTUP_REPEATS = 10
SEED = 20240611

LIMITS = {
    "upload": 1.25,
    "dry_run": 1.5,
    "rss_growth": 1.2,
    "rss_1m_mb": 100.0,
    "version": 1.5,
    "help": 2.5,
}

# The baseline, written next to the data and run with the venv's python.
BASELINE = '''\
"""Baseline: ctcli upload's work in the fewest honest lines."""
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from ctcli.actions import InvalidEvent, map_upload
from ctcli.models import FieldMapping


def batches(path):
    mapping = FieldMapping()
    batch = []
    with open(path, "rb") as lines:
        for line in lines:
            try:
                batch.append(map_upload(orjson.loads(line), mapping, now=int(time.time())))
            except InvalidEvent:
                continue
            if len(batch) == 1000:
                yield batch
                batch = []
    if batch:
        yield batch


def upload(path, concurrency):
    headers = {
        "X-CleverTap-Account-Id": os.environ["CLEVERTAP_PROJECT_ID"],
        "X-CleverTap-Passcode": os.environ["CLEVERTAP_PASSCODE"],
        "Content-Type": "application/json",
    }
    url = os.environ["CLEVERTAP_ENDPOINT"].rstrip("/") + "/1/upload"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(headers=headers, timeout=10.0, limits=limits) as client:

        def send(batch):
            answer = client.post(url, content=orjson.dumps({"d": batch}))
            if answer.status_code != 200 or answer.json().get("status") != "success":
                raise SystemExit(f"upload answered {answer.status_code}: {answer.text[:200]}")

        with ThreadPoolExecutor(concurrency) as pool:
            in_flight = deque()  # bounded, so memory does not grow with the file
            for batch in batches(path):
                if len(in_flight) >= 2 * concurrency:
                    in_flight.popleft().result()
                in_flight.append(pool.submit(send, batch))
            for future in in_flight:
                future.result()


if __name__ == "__main__":
    if sys.argv[2] == "dry-run":
        for _batch in batches(sys.argv[1]):
            pass
    else:
        upload(sys.argv[1], int(sys.argv[3]))
'''

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Lin"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
_CITIES = [
    ("San Francisco", "941"),
    ("Austin", "787"),
    ("Seattle", "981"),
    ("Boston", "021"),
    ("Denver", "802"),
]
_STREETS = ["Main St", "Market St", "Oak Ave", "Pine St", "2nd Ave", "Elm Rd"]
_PLANS = ["free", "starter", "pro", "enterprise"]
_GENDERS = ["female", "male", "other", "F", "M"]
_TAGS = ["beta", "vip", "newsletter", "mobile", "churn-risk", "referral", "trial"]
_EPOCH_2022 = 1_640_995_200


def _iso(seconds: int, millis: int | None = None, offset: str = "Z") -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if millis is not None:
        text += f".{millis:03d}"
    return text + offset


def generate(path: Path, count: int, seed: int = SEED) -> int:
    """Write `count` NDJSON events (2% Delete User track events); return the distinct users."""
    rng = random.Random(seed)
    users = 0
    with open(path, "wb", buffering=1 << 20) as out:
        for index in range(count):
            sent = _EPOCH_2022 + 2 * 365 * 86400 + rng.randrange(90 * 86400)
            if users and rng.random() < 0.02:
                event = {
                    "type": "track",
                    "event": "Delete User",
                    "userId": f"u{rng.randrange(users):07d}",
                    "timestamp": _iso(sent, rng.randrange(1000)),
                    "properties": {},
                    "messageId": f"m{index}",
                }
            else:
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                city, zip_prefix = rng.choice(_CITIES)
                signup = _EPOCH_2022 + rng.randrange(700 * 86400)
                event = {
                    "type": "identify",
                    "userId": f"u{users:07d}",
                    "timestamp": _iso(sent, rng.randrange(1000)),
                    "messageId": f"m{index}",
                    "traits": {
                        "email": f"{first.lower()}.{last.lower()}{users}@example.com",
                        "phone": f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}",
                        "name": f"{first} {last}",
                        "gender": rng.choice(_GENDERS),
                        "signup": _iso(signup, rng.randrange(1000)),
                        "lastSeen": _iso(sent - rng.randrange(86400), None, "+02:00"),
                        "plan": rng.choice(_PLANS),
                        "logins": rng.randrange(500),
                        "ltv": round(rng.random() * 1000, 2),
                        "verified": rng.random() < 0.7,
                        "address": {
                            "street": f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)}",
                            "city": city,
                            "postalCode": f"{zip_prefix}{rng.randrange(100):02d}",
                        },
                        "tags": rng.sample(_TAGS, rng.randrange(1, 3)),
                    },
                }
                users += 1
            out.write(orjson.dumps(event))
            out.write(b"\n")
    return users


@dataclass
class Run:
    seconds: float
    max_rss_kb: int


def run_process(argv: Sequence[str], env: dict[str, str], log: Path) -> Run:
    """Run argv with stdout to /dev/null; wall time and peak RSS (wait4) of that process."""
    with open(log, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{tail}")
    return Run(seconds, usage.ru_maxrss)


class SandboxProcess:
    """`python -m ctcli sandbox --port 0` in its own process, with its admin endpoints."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self._log = open(workdir / "sandbox.log", "wb")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            [PYTHON, "-m", "ctcli", "sandbox", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.url = self._wait_for_url(workdir / "sandbox.log")

    def _wait_for_url(self, log: Path) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
            if found:
                return found.group(1).rstrip("/")
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the sandbox did not start:\n{log.read_text(errors='replace')}")

    def _call(self, method: str, path: str) -> dict:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def state(self) -> dict:
        return self._call("GET", "/_sandbox/state?profiles=0")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(pairs: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """first, second, second, first, ...: each side gets as many early and late slots."""
    for index in range(pairs):
        order = (first, second) if index % 2 == 0 else (second, first)
        for step in order:
            step()


def check_delivery(sandbox: SandboxProcess, who: str, events: int, users: int) -> None:
    state = sandbox.state()
    stats = state.get("stats", {})
    processed = stats.get("records_processed")
    count = state.get("profile_count")
    # ctcli merges consecutive plain updates of one identity into one record, so it may send
    # fewer records than there are events, but never fewer than there are users.
    if not isinstance(processed, int) or not users <= processed <= events or count != users:
        raise RuntimeError(
            f"{who}: sandbox processed {processed} records into {count} profiles;"
            f" expected {users}..{events} into {users}"
        )


def measure_pipeline(args: argparse.Namespace, workdir: Path, data: Path, users: int) -> dict:
    # The caller's credentials and profiles stay out: each command gets exactly what it needs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    env["CTCLI_CONFIG"] = str(workdir / "no-such-config.toml")  # the user's profiles stay out
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    baseline = workdir / "baseline.py"
    baseline.write_text(BASELINE)
    log = workdir / "stderr.log"
    times: dict[str, list[float]] = {
        k: [] for k in ("ctcli_upload", "base_upload", "ctcli_dry", "base_dry")
    }
    rss: list[int] = []

    sandbox = SandboxProcess(workdir, env)
    try:
        net_env = dict(
            env,
            CLEVERTAP_ENDPOINT=sandbox.url,
            CLEVERTAP_PROJECT_ID="sandbox",
            CLEVERTAP_PASSCODE="sandbox",
        )

        def ctcli_upload() -> None:
            sandbox.reset()
            argv = [CTCLI, "upload", str(data), "-o", "ndjson", "--concurrency", str(CONCURRENCY)]
            times["ctcli_upload"].append(run_process(argv, net_env, log).seconds)
            check_delivery(sandbox, "ctcli upload", args.events, users)
            progress(f"  ctcli upload     {times['ctcli_upload'][-1]:7.2f} s")

        def base_upload() -> None:
            sandbox.reset()
            argv = [PYTHON, str(baseline), str(data), "upload", str(CONCURRENCY)]
            times["base_upload"].append(run_process(argv, net_env, log).seconds)
            check_delivery(sandbox, "baseline upload", args.events, users)
            progress(f"  baseline upload  {times['base_upload'][-1]:7.2f} s")

        def ctcli_dry() -> None:
            argv = [CTCLI, "upload", "--dry-run", "-o", "ndjson", str(data)]
            run = run_process(argv, env, log)
            times["ctcli_dry"].append(run.seconds)
            rss.append(run.max_rss_kb)
            progress(f"  ctcli dry-run    {run.seconds:7.2f} s  {run.max_rss_kb / 1024:6.1f} MB")

        def base_dry() -> None:
            argv = [PYTHON, str(baseline), str(data), "dry-run"]
            times["base_dry"].append(run_process(argv, env, log).seconds)
            progress(f"  baseline dry-run {times['base_dry'][-1]:7.2f} s")

        for index in range(args.runs):
            progress(f"run {index + 1}/{args.runs}")
            if index % 2 == 0:
                alternate(1, ctcli_upload, base_upload)
                alternate(1, ctcli_dry, base_dry)
            else:
                alternate(1, base_upload, ctcli_upload)
                alternate(1, base_dry, ctcli_dry)
        sandbox.reset()
    finally:
        sandbox.stop()
    return {"times": times, "rss_kb": rss, "env": env}


def measure_startup(env: dict[str, str], workdir: Path) -> dict[str, list[float]]:
    log = workdir / "stderr.log"
    times: dict[str, list[float]] = {"version": [], "help": [], "import_typer": []}
    commands = {
        "version": [CTCLI, "--version"],
        "help": [CTCLI, "--help"],
        "import_typer": [PYTHON, "-c", "import typer"],
    }
    run_process(commands["import_typer"], env, log)  # warm the page cache once
    names = list(commands)
    for index in range(STARTUP_REPEATS):
        for name in names if index % 2 == 0 else reversed(names):
            times[name].append(run_process(commands[name], env, log).seconds)
    return times


def measure_rss(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> list[int]:
    big = workdir / f"events-{args.rss_events}.ndjson"
    progress(f"generating {args.rss_events:,} events for the RSS run ...")
    generate(big, args.rss_events)
    progress(f"  {big.stat().st_size / 1e6:.0f} MB; ctcli dry-run ...")
    argv = [CTCLI, "upload", "--dry-run", "-o", "ndjson", str(big)]
    run = run_process(argv, env, workdir / "stderr.log")
    progress(f"  ctcli dry-run    {run.seconds:7.2f} s  {run.max_rss_kb / 1024:6.1f} MB")
    big.unlink()
    return [run.max_rss_kb]


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(
    args: argparse.Namespace,
    data_bytes: int,
    pipeline: dict,
    startup: dict[str, list[float]],
    rss_big_kb: list[int] | None,
) -> dict:
    t = pipeline["times"]
    rows = []

    def row(name: str, ctcli: float, base: float, limit: float) -> None:
        ratio = ctcli / base
        rows.append(
            {
                "name": name,
                "ctcli": ctcli,
                "baseline": base,
                "unit": "s",
                "ratio": ratio,
                "limit": limit,
                "pass": ratio <= limit,
            }
        )

    row(
        "upload (sandbox, --concurrency 4)",
        median(t["ctcli_upload"]),
        median(t["base_upload"]),
        LIMITS["upload"],
    )
    row("dry-run (parse + map)", median(t["ctcli_dry"]), median(t["base_dry"]), LIMITS["dry_run"])
    typer_s = median(startup["import_typer"])
    row("ctcli --version vs import typer", median(startup["version"]), typer_s, LIMITS["version"])
    row("ctcli --help vs import typer", median(startup["help"]), typer_s, LIMITS["help"])

    rss_report: dict | None = None
    if rss_big_kb is not None:
        small_mb = median(pipeline["rss_kb"]) / 1024
        big_mb = max(rss_big_kb) / 1024
        growth = big_mb / small_mb
        rss_report = {
            "small_events": args.events,
            "big_events": args.rss_events,
            "small_mb": small_mb,
            "small_samples_kb": pipeline["rss_kb"],
            "big_samples_kb": rss_big_kb,
            "big_mb": big_mb,
            "growth": growth,
            "growth_limit": LIMITS["rss_growth"],
            "growth_pass": growth <= LIMITS["rss_growth"],
            "big_limit_mb": LIMITS["rss_1m_mb"],
            "big_pass": big_mb < LIMITS["rss_1m_mb"],
        }
    failures = [r["name"] for r in rows if not r["pass"]]
    if rss_report is not None:
        if not rss_report["growth_pass"]:
            failures.append("RSS growth")
        if not rss_report["big_pass"]:
            failures.append("RSS at big size")
    return {
        "events": args.events,
        "file_mb": data_bytes / 1e6,
        "runs": args.runs,
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "samples": {
            name: [round(v, 4) for v in values] for name, values in {**t, **startup}.items()
        },
        "ratios": rows,
        "rss": rss_report,
        "failures": failures,
        "all_pass": not failures,
    }


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def print_table(report: dict) -> None:
    sys.stderr.flush()
    out = sys.stdout
    out.write(
        f"\nctcli benchmark: {report['events']:,} events ({report['file_mb']:.1f} MB),"
        f" medians of {report['runs']} runs (start-up: {STARTUP_REPEATS}),"
        f" {report['cpus']} CPUs, Python {report['python']}\n\n"
    )
    header = f"{'measurement':<36} {'ctcli':>10} {'baseline':>10} {'ratio':>7} {'limit':>7}  result"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for r in report["ratios"]:
        out.write(
            f"{r['name']:<36} {seconds(r['ctcli']):>10} {seconds(r['baseline']):>10}"
            f" {r['ratio']:>7.2f} {'<= ' + format(r['limit'], 'g'):>7}  {verdict(r['pass'])}\n"
        )
    rss = report["rss"]
    if rss is None:
        out.write("peak RSS                              skipped (--skip-rss)\n")
    else:
        growth = f"peak RSS dry-run {rss['big_events']:,} / {rss['small_events']:,}"
        big = f"peak RSS dry-run {rss['big_events']:,}"
        limit = f"< {rss['big_limit_mb']:g}MB"
        out.write(
            f"{growth:<36} {rss['big_mb']:>7.1f} MB {rss['small_mb']:>7.1f} MB"
            f" {rss['growth']:>7.2f} {'<= ' + format(rss['growth_limit'], 'g'):>7}"
            f"  {verdict(rss['growth_pass'])}\n"
            f"{big:<36} {rss['big_mb']:>7.1f} MB {'':>10} {'':>7} {limit:>7}"
            f"  {verdict(rss['big_pass'])}\n"
        )
    out.write("\nsamples (s):\n")
    for name, values in report["samples"].items():
        out.write(f"  {name:<13} " + " ".join(f"{v:.3f}" for v in values) + "\n")
    if report["failures"]:
        out.write("\nFAILED: " + "; ".join(report["failures"]) + "\n")
    else:
        out.write("\nall ratios within their limits\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the timed file")
    parser.add_argument("--runs", type=int, default=3, help="runs of each timed pair")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-rss", action="store_true", help="skip the big-file RSS run")
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="events of the RSS run")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1 or args.rss_events < 1:
        parser.error("--events, --runs and --rss-events must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if CTCLI is None:
        progress("bench: no ctcli entry point next to the venv's python")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ctcli-bench-"))
    try:
        data = workdir / "events.ndjson"
        progress(f"generating {args.events:,} events ...")
        users = generate(data, args.events)
        pipeline = measure_pipeline(args, workdir, data, users)
        progress("start-up ...")
        startup = measure_startup(pipeline["env"], workdir)
        rss_big = None if args.skip_rss else measure_rss(args, workdir, pipeline["env"])
        report = build_report(args, data.stat().st_size, pipeline, startup, rss_big)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
