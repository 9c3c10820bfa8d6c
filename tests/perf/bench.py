"""Benchmark ctcli against independent programs doing the same work.

Run with the project's virtualenv (pytest ignores this directory):

    .venv/bin/python tests/perf/bench.py [--events N] [--runs K] [--json]
        [--rss-events N] [--far-events N] [--skip-rss] [--skip-far] [--skip-node]

Every figure is the wall time (and, where stated, the peak RSS from wait4()) of a separate
process whose stdout goes to /dev/null; timed figures are medians over --runs.

Data: a generated NDJSON file of --events (default 200,000) Segment events: identify events
whose trait sets differ (standard traits randomly left out, 0-4 custom keys out of 30 with
string, int, float, bool and ISO-8601 date values), about 5% of them re-identifying an earlier
user, about 1% with an invalid phone ("555-0100"), and about 2% Delete User track events.
`ctcli upload` sends every event through User Upload, so the Delete User events (no traits, no
properties) and the bad phones are `invalid` there, and every baseline skips them as well.

- upload: `ctcli upload FILE -o ndjson --concurrency 4` against a `ctcli sandbox` process,
  versus (a) BASELINE below, a Python program that imports nothing from ctcli: it reads the file
  line by line, parses with orjson, maps each event as User Upload does (identity, ts, Segment
  traits to CleverTap keys, ISO-8601 strings to epoch seconds, objects to JSON text, lists to
  strings, bad phones skipped) and POSTs 1000-record batches from 4 threads over one keep-alive
  httpx.Client, at most 8 batches in flight, checking every answer (and, as ctcli does, never
  two requests in flight for one identity, one record per identity per request); and (b) when
  node and npm are on PATH, CleverTap's official Node library (npm clevertap 1.3.0, installed
  into the temp dir) driven by tests/perf/node_baseline.js: the same mapping, then the
  library's `upload(records, {batchSize: 100})`, which sends 100 records per request, one at a
  time (its hard-coded endpoint is pointed at the sandbox through `clevertap.api.apiEndpoint`).
  All three leave the same profiles in the sandbox. Missing node or npm, or a failed npm
  install, skips (b) with a note.
  The sandbox is reset before every upload and checked after it: it must hold exactly the
  distinct valid users, from at least that many and at most the valid events' records.
  ctcli's own summary (stderr) must count the expected invalid events and no failed ones.
- dry-run: `ctcli upload --dry-run -o ndjson FILE` versus BASELINE's dry run (the same
  parse, map and validate, one orjson result line per event on stdout, nothing sent).
- peak RSS: of that dry run at --events and at --rss-events (default 1,000,000), and of
  `ctcli upload` at --events (the timed runs) and at --rss-events (the sandbox reset before).
- far region: a second sandbox started with `--latency 0.2` and a file of --far-events
  (default 100,000) distinct valid users; `ctcli upload --concurrency 4` and `15`, with BASELINE
  alongside for context. Reported: events/s, its share of the ideal `concurrency x 1000 / 0.2`
  events/s, and the sandbox's batch sizes (all must be full but the last).
- start-up: `ctcli --version` and `ctcli --help` versus `python -c "import typer"`, median of 10.
- --changes: a snapshot of --changes-rows (default 1,000,000) distinct users; a first night
  `ctcli upload --changes DB` sends everything to a sandbox; then the second night over the
  same snapshot (every row unchanged: it must send nothing) versus `upload --dry-run` of it,
  ABBA; and the DB's size per identity.

Sides alternate in ABBA order (ctcli, Python, Node, then Node, Python, ctcli, ...) so that they
share the machine's noise fairly. LIMITS are the goals; a run that misses one prints FAIL, and
the exit code is 0 all the same: this is a report, not a gate.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_SCRIPT = HERE / "node_baseline.js"
NODE_PACKAGE = "clevertap@1.3.0"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CTCLI = str(VENV_BIN / "ctcli") if (VENV_BIN / "ctcli").exists() else shutil.which("ctcli")
CONCURRENCY = 4
FAR_LATENCY = 0.2
FAR_CONCURRENCIES = (4, 15)
BATCH = 1000
STARTUP_REPEATS = 10
SEED = 20240611

LIMITS = {
    "upload": 1.0,  # ctcli / Python baseline
    "upload_node": 0.75,  # ctcli / CleverTap's Node library
    "dry_run": 1.1,
    "rss_growth": 1.2,
    "rss_1m_mb": 100.0,
    "version": 1.5,
    "help": 1.5,
    "far_share_15": 0.8,  # at least this share of concurrency x 1000 / latency events/s
    "changes_vs_dry": 1.5,  # --changes over an unchanged snapshot vs a dry run of it
}

# The Python baseline, written next to the data and run with the venv's python. It must not
# lean on the program it is measured against: see check_baseline_source().
BASELINE = '''\
"""Baseline: a Segment-to-CleverTap User Upload in the fewest honest lines."""
import datetime
import math
import os
import re
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

ISO = re.compile(
    r"\\d{4}-\\d{2}-\\d{2}(?:T\\d{2}:\\d{2}(?::\\d{2}(?:\\.\\d{1,9})?)?(?:Z|[+-]\\d{2}:?\\d{2})?)?",
    re.ASCII,
)
PHONE = re.compile(r"\\+[1-9]\\d{6,14}", re.ASCII)
KEYS = {"name": "Name", "email": "Email", "phone": "Phone", "gender": "Gender",
        "birthday": "DOB", "avatar": "Photo"}
GENDERS = {"male": "M", "female": "F", "other": "O", "m": "M", "f": "F", "o": "O"}
UTC = datetime.timezone.utc


class Invalid(ValueError):
    pass


def epoch(text):
    """Epoch seconds of an ISO-8601 string, None when it is not one."""
    if not ISO.fullmatch(text):
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:  # not a real date or time
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def value(v):
    if isinstance(v, str):
        seconds = epoch(v)
        return v if seconds is None else seconds
    if isinstance(v, dict):
        return orjson.dumps(v).decode()
    if isinstance(v, list):
        return [x if isinstance(x, str) else orjson.dumps(x).decode() for x in v]
    return v


def record(event, now):
    identity = event.get("userId")
    if identity is None:
        raise Invalid("missing identity")
    attributes = event.get("traits") or event.get("properties")
    if attributes is None:
        raise Invalid("no person attributes")
    data = {}
    for key, v in attributes.items():
        if v is None:
            continue
        key = KEYS.get(key, key)
        if key == "Gender":
            v = GENDERS.get(v.lower(), v) if isinstance(v, str) else v
        elif key == "DOB":
            seconds = epoch(v) if isinstance(v, str) else None
            if seconds is None:
                raise Invalid(f"DOB {v!r} is not a date")
            v = f"$D_{seconds}"
        else:
            v = value(v)
        data[key] = v
    phone = data.get("Phone")
    if phone is not None and not (isinstance(phone, str) and PHONE.fullmatch(phone)):
        raise Invalid(f"Phone {phone!r} is not +[country code][number]")
    ts = event.get("timestamp")
    ts = epoch(ts) if isinstance(ts, str) else None
    return {"type": "profile", "identity": str(identity),
            "ts": now if ts is None else ts, "profileData": data}


def batches(path):
    """1000-record batches and their identities, one record per identity in each."""
    now = int(time.time())
    batch, names = [], set()
    with open(path, "rb") as lines:
        for line in lines:
            try:
                profile = record(orjson.loads(line), now)
            except Invalid:
                continue
            if profile["identity"] in names:  # the later update goes in a later request
                yield batch, names
                batch, names = [], set()
            batch.append(profile)
            names.add(profile["identity"])
            if len(batch) == 1000:
                yield batch, names
                batch, names = [], set()
    if batch:
        yield batch, names


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
            in_flight = deque()  # (future, identities): bounded, so memory stays flat
            for batch, names in batches(path):
                # Never two requests in flight for one identity: the older one ends first.
                while in_flight and (
                    len(in_flight) >= 2 * concurrency
                    or any(not names.isdisjoint(busy) for _, busy in in_flight)
                ):
                    in_flight.popleft()[0].result()
                in_flight.append((pool.submit(send, batch), names))
            for future, _ in in_flight:
                future.result()


def dry_run(path):
    now = int(time.time())
    out = sys.stdout.buffer
    chunk = []
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            event = orjson.loads(line)
            try:
                identity = record(event, now)["identity"]
                status, error = "dry-run", None
            except Invalid as exc:
                raw = event.get("userId")
                identity = None if raw is None else str(raw)
                status, error = "invalid", str(exc)
            chunk.append(orjson.dumps({
                "source": path, "line": number, "type": event.get("type"),
                "event": event.get("event"), "action": "upload", "identity": identity,
                "status": status, "code": None, "error": error,
            }))
            if len(chunk) == 1000:
                chunk.append(b"")
                out.write(b"\\n".join(chunk))
                chunk = []
    if chunk:
        chunk.append(b"")
        out.write(b"\\n".join(chunk))
    out.flush()


if __name__ == "__main__":
    if sys.argv[2] == "dry-run":
        dry_run(sys.argv[1])
    else:
        upload(sys.argv[1], int(sys.argv[3]))
'''


def check_baseline_source(source: str) -> None:
    """Fail loudly when the baseline would measure ctcli against itself."""
    if "ctcli" in source.lower():
        raise AssertionError("the Python baseline must not mention or import ctcli")


# --- data ------------------------------------------------------------------------------------

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
_WORDS = ["alpha", "blue", "north", "delta", "orbit", "maple", "quartz", "river", "ember", "nova"]
_EPOCH_2022 = 1_640_995_200
# Custom traits: 30 names, each always of one type, as real tracking plans have them.
_CUSTOM: list[tuple[str, str]] = [
    ("plan_tier", "str"),
    ("referrer", "str"),
    ("locale", "str"),
    ("utm_source", "str"),
    ("utm_campaign", "str"),
    ("company", "str"),
    ("role", "str"),
    ("favorite_color", "str"),
    ("device", "str"),
    ("timezone", "str"),
    ("orders", "int"),
    ("sessions", "int"),
    ("age", "int"),
    ("credits", "int"),
    ("seats", "int"),
    ("streak_days", "int"),
    ("score", "float"),
    ("balance", "float"),
    ("avg_order_value", "float"),
    ("nps", "float"),
    ("discount", "float"),
    ("opted_in", "bool"),
    ("is_admin", "bool"),
    ("has_app", "bool"),
    ("trial_used", "bool"),
    ("beta_tester", "bool"),
    ("last_order_at", "date"),
    ("trial_ends", "date"),
    ("first_purchase", "date"),
    ("renewal_date", "date"),
]
BAD_PHONE = "555-0100"


@dataclass
class Counts:
    """What a correct upload of a generated file delivers."""

    events: int
    valid: int  # events User Upload accepts: records a client may send (before merging)
    users: int  # distinct identities among them: the profiles the sandbox must end up with

    @property
    def invalid(self) -> int:
        return self.events - self.valid


def _iso(seconds: int, millis: int | None = None, offset: str = "Z") -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if millis is not None:
        text += f".{millis:03d}"
    return text + offset


def _custom_value(rng: random.Random, kind: str) -> object:
    if kind == "str":
        return f"{rng.choice(_WORDS)}-{rng.randrange(1000)}"
    if kind == "int":
        return rng.randrange(10_000)
    if kind == "float":
        return round(rng.random() * 500, 2)
    if kind == "bool":
        return rng.random() < 0.5
    seconds = _EPOCH_2022 + rng.randrange(3 * 365 * 86400)
    if rng.random() < 0.3:
        return time.strftime("%Y-%m-%d", time.gmtime(seconds))
    return _iso(seconds, rng.randrange(1000) if rng.random() < 0.5 else None)


def _traits(rng: random.Random, user: int, sent: int) -> dict[str, object]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, zip_prefix = rng.choice(_CITIES)
    signup = _EPOCH_2022 + rng.randrange(700 * 86400)
    birthday = _EPOCH_2022 - (18 * 365 + rng.randrange(50 * 365)) * 86400
    every: dict[str, tuple[float, Callable[[], object]]] = {
        "email": (0.9, lambda: f"{first.lower()}.{last.lower()}{user}@example.com"),
        "phone": (0.8, lambda: f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}"),
        "name": (0.85, lambda: f"{first} {last}"),
        "gender": (0.6, lambda: rng.choice(_GENDERS)),
        "birthday": (0.4, lambda: time.strftime("%Y-%m-%d", time.gmtime(birthday))),
        "avatar": (0.3, lambda: f"https://img.example.com/{user}.png"),
        "signup": (0.7, lambda: _iso(signup, rng.randrange(1000))),
        "lastSeen": (0.7, lambda: _iso(sent - rng.randrange(86400), None, "+02:00")),
        "plan": (0.7, lambda: rng.choice(_PLANS)),
        "logins": (0.7, lambda: rng.randrange(500)),
        "ltv": (0.6, lambda: round(rng.random() * 1000, 2)),
        "verified": (0.6, lambda: rng.random() < 0.7),
        "address": (
            0.5,
            lambda: {
                "street": f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)}",
                "city": city,
                "postalCode": f"{zip_prefix}{rng.randrange(100):02d}",
            },
        ),
        "tags": (0.5, lambda: rng.sample(_TAGS, rng.randrange(1, 3))),
    }
    traits = {key: make() for key, (keep, make) in every.items() if rng.random() < keep}
    for key, kind in rng.sample(_CUSTOM, rng.randrange(5)):
        traits[key] = _custom_value(rng, kind)
    if not traits:  # an empty trait set is an edge case of its own, not the common case
        traits["name"] = f"{first} {last}"
    return traits


def generate(path: Path, count: int, seed: int = SEED, *, distinct: bool = False) -> Counts:
    """Write `count` NDJSON events; return what a correct upload of them delivers.

    `distinct`: every event is a valid identify of a new user (the far-region file), so that
    every batch but the last is full.
    """
    rng = random.Random(seed)
    users = 0  # users numbered so far: u0000000 .. u{users - 1}
    delivered = bytearray()  # delivered[n]: user n has at least one valid event
    valid = 0
    with open(path, "wb", buffering=1 << 20) as out:
        for index in range(count):
            sent = _EPOCH_2022 + 2 * 365 * 86400 + rng.randrange(90 * 86400)
            roll = rng.random()
            if not distinct and users and roll < 0.02:
                event: dict[str, object] = {
                    "type": "track",
                    "event": "Delete User",
                    "userId": f"u{rng.randrange(users):07d}",
                    "timestamp": _iso(sent, rng.randrange(1000)),
                    "messageId": f"m{index}",
                }
            else:
                if not distinct and users and roll < 0.02 + 0.05:
                    user = rng.randrange(users)  # re-identify an earlier user
                else:
                    user = users
                    users += 1
                    delivered.append(0)
                traits = _traits(rng, user, sent)
                if not distinct and rng.random() < 0.01:
                    traits["phone"] = BAD_PHONE
                else:
                    valid += 1
                    delivered[user] = 1
                event = {
                    "type": "identify",
                    "userId": f"u{user:07d}",
                    "timestamp": _iso(sent, rng.randrange(1000)),
                    "messageId": f"m{index}",
                    "traits": traits,
                }
            out.write(orjson.dumps(event))
            out.write(b"\n")
    return Counts(events=count, valid=valid, users=sum(delivered))


# --- processes -------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    max_rss_kb: int


def run_process(
    argv: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    ok_codes: Sequence[int] = (0,),
    cwd: Path | None = None,
) -> Run:
    """Run argv with stdout to /dev/null; wall time and peak RSS (wait4) of that process."""
    with open(log, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=cwd,
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in ok_codes:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{tail}")
    return Run(seconds, usage.ru_maxrss)


def ctcli_summary(log: Path) -> dict:
    """The summary line ctcli writes on stderr with -o ndjson."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    raise RuntimeError(f"no summary line in ctcli's stderr:\n{log.read_text()[-2000:]}")


def run_ctcli(
    argv: Sequence[str], env: dict[str, str], log: Path, counts: Counts, settled: str
) -> Run:
    """A ctcli upload (exit 1 when some events are invalid) whose summary must add up."""
    run = run_process(argv, env, log, ok_codes=(0, 1) if counts.invalid else (0,))
    summary = ctcli_summary(log)
    done = summary.get(settled, 0) + (summary.get("superseded", 0) if settled == "ok" else 0)
    if (
        summary.get("events") != counts.events
        or summary.get("invalid") != counts.invalid
        or summary.get("failed")
        or done != counts.valid
    ):
        raise RuntimeError(f"{' '.join(argv)}: summary {summary}, expected {counts}")
    return run


class SandboxProcess:
    """`python -m ctcli sandbox --port 0` in its own process, with its admin endpoints."""

    def __init__(self, workdir: Path, env: dict[str, str], latency: float = 0.0) -> None:
        log = workdir / f"sandbox-{latency:g}.log"
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        argv = [PYTHON, "-m", "ctcli", "sandbox", "--port", "0"]
        if latency:
            argv += ["--latency", f"{latency:g}"]
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.url = self._wait_for_url(log)

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
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def state(self) -> dict:
        return self._call("GET", "/_sandbox/state?profiles=0")

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return dict(
            base,
            CLEVERTAP_ENDPOINT=self.url,
            CLEVERTAP_PROJECT_ID="sandbox",
            CLEVERTAP_PASSCODE="sandbox",
        )

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def check_delivery(sandbox: SandboxProcess, who: str, counts: Counts) -> dict:
    """The sandbox's stats after one upload; RuntimeError unless it delivered everything."""
    state = sandbox.state()
    stats = state.get("stats", {})
    processed = stats.get("records_processed")
    profiles = state.get("profile_count")
    unprocessed = stats.get("records_unprocessed")
    # ctcli merges consecutive plain updates of one identity into one record, so it may send
    # fewer records than there are valid events, but never fewer than there are users.
    if (
        not isinstance(processed, int)
        or not counts.users <= processed <= counts.valid
        or profiles != counts.users
        or unprocessed
    ):
        raise RuntimeError(
            f"{who}: sandbox processed {processed} records ({unprocessed} refused) into"
            f" {profiles} profiles; expected {counts.users}..{counts.valid} into {counts.users}"
        )
    return stats


def base_env(workdir: Path) -> dict[str, str]:
    # The caller's credentials and profiles stay out: each command gets exactly what it needs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    env["CTCLI_CONFIG"] = str(workdir / "no-such-config.toml")  # the user's profiles stay out
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def setup_node(workdir: Path) -> tuple[Path | None, str]:
    """A directory with clevertap@1.3.0 installed, or None and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "skipped: node or npm is not on PATH"
    if not NODE_SCRIPT.exists():
        return None, f"skipped: {NODE_SCRIPT} is missing"
    home = workdir / "node"
    home.mkdir()
    # Its own package.json, so npm installs here and not into some project above /tmp.
    (home / "package.json").write_text('{"private": true}\n')
    argv = [npm, "install", "--silent", "--no-audit", "--no-fund", NODE_PACKAGE]
    try:
        done = subprocess.run(
            argv, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"skipped: npm install {NODE_PACKAGE} failed: {exc}"
    if done.returncode != 0 or not (home / "node_modules" / "clevertap").is_dir():
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        reason = why[-1] if why else f"exit status {done.returncode}"
        return None, f"skipped: npm install {NODE_PACKAGE} failed: {reason}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return home, f"node {version}, {NODE_PACKAGE}"


# --- measurements ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def abba(index: int, steps: Sequence[Callable[[], None]]) -> None:
    """Run steps in order on even runs, reversed on odd ones: each gets early and late slots."""
    for step in steps if index % 2 == 0 else list(reversed(steps)):
        step()


def measure_pipeline(
    args: argparse.Namespace,
    workdir: Path,
    data: Path,
    counts: Counts,
    env: dict[str, str],
    node_home: Path | None,
) -> dict:
    check_baseline_source(BASELINE)
    baseline = workdir / "baseline.py"
    baseline.write_text(BASELINE)
    check_baseline_source(baseline.read_text())
    log = workdir / "stderr.log"
    names = ("ctcli_upload", "base_upload", "node_upload", "ctcli_dry", "base_dry")
    times: dict[str, list[float]] = {k: [] for k in names}
    rss: dict[str, list[int]] = {"ctcli_dry": [], "ctcli_upload": []}

    sandbox = SandboxProcess(workdir, env)
    try:
        net_env = sandbox.env(env)

        def ctcli_upload() -> None:
            sandbox.reset()
            argv = [CTCLI, "upload", str(data), "-o", "ndjson", "--concurrency", str(CONCURRENCY)]
            run = run_ctcli(argv, net_env, log, counts, "ok")
            check_delivery(sandbox, "ctcli upload", counts)
            times["ctcli_upload"].append(run.seconds)
            rss["ctcli_upload"].append(run.max_rss_kb)
            progress(f"  ctcli upload     {run.seconds:7.2f} s  {run.max_rss_kb / 1024:6.1f} MB")

        def base_upload() -> None:
            sandbox.reset()
            argv = [PYTHON, str(baseline), str(data), "upload", str(CONCURRENCY)]
            times["base_upload"].append(run_process(argv, net_env, log).seconds)
            check_delivery(sandbox, "Python baseline upload", counts)
            progress(f"  Python upload    {times['base_upload'][-1]:7.2f} s")

        def node_upload() -> None:
            sandbox.reset()
            argv = [shutil.which("node") or "node", str(NODE_SCRIPT), str(data)]
            times["node_upload"].append(run_process(argv, net_env, log, cwd=node_home).seconds)
            check_delivery(sandbox, "Node library upload", counts)
            progress(f"  Node upload      {times['node_upload'][-1]:7.2f} s")

        def ctcli_dry() -> None:
            argv = [CTCLI, "upload", "--dry-run", "-o", "ndjson", str(data)]
            run = run_ctcli(argv, env, log, counts, "dry-run")
            times["ctcli_dry"].append(run.seconds)
            rss["ctcli_dry"].append(run.max_rss_kb)
            progress(f"  ctcli dry-run    {run.seconds:7.2f} s  {run.max_rss_kb / 1024:6.1f} MB")

        def base_dry() -> None:
            argv = [PYTHON, str(baseline), str(data), "dry-run"]
            times["base_dry"].append(run_process(argv, env, log).seconds)
            progress(f"  Python dry-run   {times['base_dry'][-1]:7.2f} s")

        uploads = [ctcli_upload, base_upload] + ([node_upload] if node_home else [])
        for index in range(args.runs):
            progress(f"run {index + 1}/{args.runs}")
            abba(index, uploads)
            abba(index, [ctcli_dry, base_dry])
        sandbox.reset()
    finally:
        sandbox.stop()
    return {"times": times, "rss_kb": rss}


def describe_batches(sizes: Sequence[int]) -> str:
    """`99 x 1000 + 1 x 373`: the batch sizes a sandbox saw, in runs of equal sizes."""
    parts: list[str] = []
    for size in sizes:
        if parts and parts[-1].endswith(f" x {size}"):
            count = int(parts[-1].split(" x ")[0]) + 1
            parts[-1] = f"{count} x {size}"
        else:
            parts.append(f"1 x {size}")
    return " + ".join(parts) if len(parts) <= 4 else " + ".join(parts[:3]) + " + ..."


def full_but_last(sizes: Sequence[int], total: int) -> bool:
    return bool(sizes) and sum(sizes) == total and all(size == BATCH for size in sizes[:-1])


def measure_far(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    data = workdir / f"far-{args.far_events}.ndjson"
    progress(f"far region: generating {args.far_events:,} distinct users ...")
    counts = generate(data, args.far_events, SEED + 1, distinct=True)
    baseline = workdir / "baseline.py"
    log = workdir / "stderr.log"
    result: dict = {"events": args.far_events, "latency": FAR_LATENCY, "rows": []}
    sandbox = SandboxProcess(workdir, env, latency=FAR_LATENCY)
    try:
        net_env = sandbox.env(env)
        for concurrency in FAR_CONCURRENCIES:
            ideal = concurrency * BATCH / FAR_LATENCY
            row: dict = {"concurrency": concurrency, "ideal_eps": ideal, "ctcli": [], "base": []}
            batches: dict[str, list[int]] = {}

            def ctcli_far(
                concurrency: int = concurrency, row: dict = row, batches: dict = batches
            ) -> None:
                sandbox.reset()
                argv = [CTCLI, "upload", str(data), "-o", "ndjson"]
                argv += ["--concurrency", str(concurrency)]
                run = run_ctcli(argv, net_env, log, counts, "ok")
                stats = check_delivery(sandbox, f"ctcli far upload c={concurrency}", counts)
                batches["ctcli"] = stats.get("batch_sizes", [])
                row["ctcli"].append(run.seconds)
                progress(f"  ctcli  c={concurrency:<3} {run.seconds:7.2f} s")

            def base_far(
                concurrency: int = concurrency, row: dict = row, batches: dict = batches
            ) -> None:
                sandbox.reset()
                argv = [PYTHON, str(baseline), str(data), "upload", str(concurrency)]
                run = run_process(argv, net_env, log)
                stats = check_delivery(sandbox, f"Python far upload c={concurrency}", counts)
                batches["base"] = stats.get("batch_sizes", [])
                row["base"].append(run.seconds)
                progress(f"  Python c={concurrency:<3} {run.seconds:7.2f} s")

            for index in range(args.runs):
                abba(index, [ctcli_far, base_far])
            for side in ("ctcli", "base"):
                eps = counts.events / median(row[side])
                row[f"{side}_eps"] = eps
                row[f"{side}_share"] = eps / ideal
                row[f"{side}_batches"] = describe_batches(batches[side])
                row[f"{side}_full"] = full_but_last(batches[side], counts.events)
            result["rows"].append(row)
        sandbox.reset()
    finally:
        sandbox.stop()
        data.unlink()
    return result


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


def measure_changes(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    """--changes: a second night over an unchanged snapshot, against a dry run of it."""
    data = workdir / f"snapshot-{args.changes_rows}.ndjson"
    progress(f"--changes: generating a snapshot of {args.changes_rows:,} distinct users ...")
    counts = generate(data, args.changes_rows, SEED + 2, distinct=True)
    db = workdir / "changes.db"
    log = workdir / "stderr.log"
    result: dict = {"rows": args.changes_rows, "second": [], "dry": []}
    sandbox = SandboxProcess(workdir, env)
    try:
        net_env = sandbox.env(env)
        sandbox.reset()
        first = run_ctcli(
            [CTCLI, "upload", str(data), "-o", "ndjson", "--changes", str(db)],
            net_env, log, counts, "ok",
        )  # fmt: skip
        check_delivery(sandbox, "ctcli --changes first night", counts)
        result["first"] = first.seconds
        progress(f"  first night (everything sent) {first.seconds:7.2f} s")

        def second_night() -> None:
            argv = [CTCLI, "upload", str(data), "-o", "ndjson", "--changes", str(db)]
            run = run_process(argv, net_env, log)
            summary = ctcli_summary(log)
            if summary.get("unchanged") != counts.events or summary.get("requests") != 0:
                raise RuntimeError(f"--changes second night sent something: {summary}")
            result["second"].append(run.seconds)
            progress(f"  second night (all unchanged) {run.seconds:7.2f} s")

        def dry_run() -> None:
            argv = [CTCLI, "upload", "--dry-run", "-o", "ndjson", str(data)]
            run = run_ctcli(argv, env, log, counts, "dry-run")
            result["dry"].append(run.seconds)
            progress(f"  dry run                      {run.seconds:7.2f} s")

        for index in range(args.runs):
            abba(index, [second_night, dry_run])
    finally:
        sandbox.stop()
    size = sum(
        path.stat().st_size for path in workdir.iterdir() if path.name.startswith("changes.db")
    )
    result["db_bytes_per_identity"] = size / counts.events
    result["ratio"] = median(result["second"]) / median(result["dry"])
    result["limit"] = LIMITS["changes_vs_dry"]
    result["pass"] = result["ratio"] <= LIMITS["changes_vs_dry"]
    data.unlink()
    return result


def measure_rss(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    big = workdir / f"events-{args.rss_events}.ndjson"
    log = workdir / "stderr.log"
    progress(f"generating {args.rss_events:,} events for the RSS runs ...")
    counts = generate(big, args.rss_events)
    progress(f"  {big.stat().st_size / 1e6:.0f} MB; ctcli dry-run ...")
    argv = [CTCLI, "upload", "--dry-run", "-o", "ndjson", str(big)]
    dry = run_ctcli(argv, env, log, counts, "dry-run")
    progress(f"  ctcli dry-run    {dry.seconds:7.2f} s  {dry.max_rss_kb / 1024:6.1f} MB")
    sandbox = SandboxProcess(workdir, env)
    try:
        sandbox.reset()
        argv = [CTCLI, "upload", str(big), "-o", "ndjson", "--concurrency", str(CONCURRENCY)]
        upload = run_ctcli(argv, sandbox.env(env), log, counts, "ok")
        check_delivery(sandbox, "ctcli upload (RSS run)", counts)
        sandbox.reset()
    finally:
        sandbox.stop()
        big.unlink()
    progress(f"  ctcli upload     {upload.seconds:7.2f} s  {upload.max_rss_kb / 1024:6.1f} MB")
    return {"dry_kb": dry.max_rss_kb, "upload_kb": upload.max_rss_kb, "counts": asdict(counts)}


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(
    args: argparse.Namespace,
    data_bytes: int,
    counts: Counts,
    pipeline: dict,
    startup: dict[str, list[float]],
    rss_big: dict | None,
    far: dict | None,
    node_note: str,
) -> dict:
    t = pipeline["times"]
    rows = []

    def row(name: str, ctcli: float, base: float, limit: float, against: str) -> None:
        ratio = ctcli / base
        rows.append(
            {
                "name": name,
                "ctcli": ctcli,
                "baseline": base,
                "against": against,
                "unit": "s",
                "ratio": ratio,
                "limit": limit,
                "pass": ratio <= limit,
            }
        )

    upload_name = f"upload (sandbox, --concurrency {CONCURRENCY})"
    row(upload_name, median(t["ctcli_upload"]), median(t["base_upload"]), LIMITS["upload"], "py")
    if t["node_upload"]:
        row(
            "upload vs CleverTap's Node library",
            median(t["ctcli_upload"]),
            median(t["node_upload"]),
            LIMITS["upload_node"],
            "node",
        )
    dry_name = "dry-run (parse + map + results)"
    row(dry_name, median(t["ctcli_dry"]), median(t["base_dry"]), LIMITS["dry_run"], "py")
    typer_s = median(startup["import_typer"])
    row(
        "ctcli --version vs import typer",
        median(startup["version"]),
        typer_s,
        LIMITS["version"],
        "py",
    )
    row("ctcli --help vs import typer", median(startup["help"]), typer_s, LIMITS["help"], "py")

    small_dry_mb = median(pipeline["rss_kb"]["ctcli_dry"]) / 1024
    small_upload_mb = median(pipeline["rss_kb"]["ctcli_upload"]) / 1024
    rss_report: dict = {
        "small_events": args.events,
        "small_mb": small_dry_mb,
        "small_samples_kb": pipeline["rss_kb"]["ctcli_dry"],
        "upload_small_mb": small_upload_mb,
        "upload_small_samples_kb": pipeline["rss_kb"]["ctcli_upload"],
    }
    if rss_big is not None:
        big_mb = rss_big["dry_kb"] / 1024
        upload_big_mb = rss_big["upload_kb"] / 1024
        rss_report.update(
            {
                "big_events": args.rss_events,
                "big_mb": big_mb,
                "growth": big_mb / small_dry_mb,
                "growth_limit": LIMITS["rss_growth"],
                "growth_pass": big_mb / small_dry_mb <= LIMITS["rss_growth"],
                "big_limit_mb": LIMITS["rss_1m_mb"],
                "big_pass": big_mb < LIMITS["rss_1m_mb"],
                "upload_big_mb": upload_big_mb,
                "upload_growth": upload_big_mb / small_upload_mb,
            }
        )
    failures = [r["name"] for r in rows if not r["pass"]]
    if rss_big is not None:
        if not rss_report["growth_pass"]:
            failures.append("RSS growth")
        if not rss_report["big_pass"]:
            failures.append("RSS at big size")
    if far is not None:
        for far_row in far["rows"]:
            if far_row["concurrency"] == 15:
                far_row["limit"] = LIMITS["far_share_15"]
                far_row["pass"] = far_row["ctcli_share"] >= LIMITS["far_share_15"]
                if not far_row["pass"]:
                    failures.append("far region share at --concurrency 15")
            if not far_row["ctcli_full"]:
                failures.append(f"far region batches at --concurrency {far_row['concurrency']}")
    samples = {**t, **startup}
    if far is not None:
        for far_row in far["rows"]:
            samples[f"far_ctcli_c{far_row['concurrency']}"] = far_row["ctcli"]
            samples[f"far_base_c{far_row['concurrency']}"] = far_row["base"]
    return {
        "events": args.events,
        "file_mb": data_bytes / 1e6,
        "counts": asdict(counts),
        "runs": args.runs,
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "node": node_note,
        "samples": {
            name: [round(v, 4) for v in values] for name, values in samples.items() if values
        },
        "ratios": rows,
        "rss": rss_report,
        "rss_skipped": rss_big is None,
        "far": far,
        "failures": failures,
        "all_pass": not failures,
    }


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def print_table(report: dict) -> None:
    sys.stderr.flush()
    out = sys.stdout
    c = report["counts"]
    out.write(
        f"\nctcli benchmark: {report['events']:,} events ({report['file_mb']:.1f} MB;"
        f" {c['valid']:,} valid, {c['users']:,} users, {c['events'] - c['valid']:,} invalid),"
        f" medians of {report['runs']} runs (start-up: {STARTUP_REPEATS}),"
        f" {report['cpus']} CPUs, Python {report['python']}\n"
        f"baselines: py = independent Python program; node = {report['node']}\n\n"
    )
    width = 38
    header = (
        f"{'measurement':<{width}} {'ctcli':>10} {'baseline':>10} {'ratio':>7} {'limit':>7}  result"
    )
    out.write(header + "\n" + "-" * len(header) + "\n")
    for r in report["ratios"]:
        out.write(
            f"{r['name']:<{width}} {seconds(r['ctcli']):>10} {seconds(r['baseline']):>10}"
            f" {r['ratio']:>7.2f} {'<= ' + format(r['limit'], 'g'):>7}  {verdict(r['pass'])}"
            f"{'' if r['against'] == 'py' else '  (vs node)'}\n"
        )
    rss = report["rss"]
    upload_small = f"peak RSS upload {rss['small_events']:,}"
    out.write(f"{upload_small:<{width}} {rss['upload_small_mb']:>7.1f} MB {'':>10} {'':>7}  info\n")
    if report["rss_skipped"]:
        out.write(f"{'peak RSS at --rss-events':<{width}} skipped (--skip-rss)\n")
    else:
        growth = f"peak RSS dry-run {rss['big_events']:,} / {rss['small_events']:,}"
        big = f"peak RSS dry-run {rss['big_events']:,}"
        limit = f"< {rss['big_limit_mb']:g}MB"
        upload_growth = f"peak RSS upload {rss['big_events']:,} / {rss['small_events']:,}"
        out.write(
            f"{growth:<{width}} {rss['big_mb']:>7.1f} MB {rss['small_mb']:>7.1f} MB"
            f" {rss['growth']:>7.2f} {'<= ' + format(rss['growth_limit'], 'g'):>7}"
            f"  {verdict(rss['growth_pass'])}\n"
            f"{big:<{width}} {rss['big_mb']:>7.1f} MB {'':>10} {'':>7} {limit:>7}"
            f"  {verdict(rss['big_pass'])}\n"
            f"{upload_growth:<{width}} {rss['upload_big_mb']:>7.1f} MB"
            f" {rss['upload_small_mb']:>7.1f} MB {rss['upload_growth']:>7.2f} {'':>7}  info\n"
        )
    far = report["far"]
    if far is None:
        out.write("\nfar region: skipped (--skip-far)\n")
    else:
        out.write(
            f"\nfar region: sandbox --latency {far['latency']:g}, {far['events']:,} distinct"
            f" users; ideal = concurrency x {BATCH} / {far['latency']:g} events/s\n"
        )
        header = (
            f"{'concurrency':>11} {'ideal/s':>8} {'ctcli/s':>8} {'share':>6} {'py/s':>8}"
            f" {'share':>6} {'limit':>7}  {'result':<6}  ctcli batch sizes"
        )
        out.write(header + "\n" + "-" * (len(header) + 12) + "\n")
        for r in far["rows"]:
            limit = f">= {r['limit']:g}" if "limit" in r else ""
            result = verdict(r["pass"]) if "pass" in r else "info"
            batches = r["ctcli_batches"] + ("" if r["ctcli_full"] else "  (NOT full but last)")
            out.write(
                f"{r['concurrency']:>11} {r['ideal_eps']:>8,.0f} {r['ctcli_eps']:>8,.0f}"
                f" {r['ctcli_share']:>6.2f} {r['base_eps']:>8,.0f} {r['base_share']:>6.2f}"
                f" {limit:>7}  {result:<6}  {batches}\n"
            )
    changes = report.get("changes")
    if changes is None:
        out.write("\n--changes: skipped (--skip-changes)\n")
    else:
        out.write(
            f"\n--changes, {changes['rows']:,}-row snapshot: second night (all unchanged)"
            f" {median(changes['second']):.2f} s vs dry run {median(changes['dry']):.2f} s ="
            f" {changes['ratio']:.2f} (<= {changes['limit']:g}: {verdict(changes['pass'])});"
            f" first night {changes['first']:.2f} s;"
            f" DB {changes['db_bytes_per_identity']:.0f} bytes per identity\n"
        )
    out.write("\nsamples (s):\n")
    for name, values in report["samples"].items():
        out.write(f"  {name:<15} " + " ".join(f"{v:.3f}" for v in values) + "\n")
    if report["failures"]:
        out.write("\nFAILED: " + "; ".join(report["failures"]) + "\n")
    else:
        out.write("\nall ratios within their limits\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the timed file")
    parser.add_argument("--runs", type=int, default=3, help="runs of each timed pair")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-rss", action="store_true", help="skip the big-file RSS runs")
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="events of the RSS runs")
    parser.add_argument(
        "--far-events", type=int, default=100_000, help="events of the far-region runs"
    )
    parser.add_argument("--skip-far", action="store_true", help="skip the far-region runs")
    parser.add_argument(
        "--changes-rows", type=int, default=1_000_000, help="rows of the --changes snapshot"
    )
    parser.add_argument("--skip-changes", action="store_true", help="skip the --changes runs")
    parser.add_argument(
        "--skip-node", action="store_true", help="skip CleverTap's Node library baseline"
    )
    args = parser.parse_args(argv)
    if min(args.events, args.runs, args.rss_events, args.far_events) < 1:
        parser.error("--events, --runs, --rss-events and --far-events must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if CTCLI is None:
        progress("bench: no ctcli entry point next to the venv's python")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ctcli-bench-"))
    try:
        env = base_env(workdir)
        if args.skip_node:
            node_home, node_note = None, "skipped (--skip-node)"
        else:
            progress(f"installing {NODE_PACKAGE} ...")
            node_home, node_note = setup_node(workdir)
            progress(f"  {node_note}")
        data = workdir / "events.ndjson"
        progress(f"generating {args.events:,} events ...")
        counts = generate(data, args.events)
        progress(f"  {counts}")
        pipeline = measure_pipeline(args, workdir, data, counts, env, node_home)
        far = None if args.skip_far else measure_far(args, workdir, env)
        progress("start-up ...")
        startup = measure_startup(env, workdir)
        rss_big = None if args.skip_rss else measure_rss(args, workdir, env)
        changes = None if args.skip_changes else measure_changes(args, workdir, env)
        report = build_report(
            args, data.stat().st_size, counts, pipeline, startup, rss_big, far, node_note
        )
        report["changes"] = changes
        if changes is not None:
            report["samples"]["changes_second"] = changes["second"]
            report["samples"]["changes_dry"] = changes["dry"]
            if not changes["pass"]:
                report["failures"].append("--changes second night vs dry run")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
