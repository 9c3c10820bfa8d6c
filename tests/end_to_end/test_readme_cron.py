"""The README's cron recipe, followed literally on a fresh directory tree: the first night
sends everything, the second resumes where the first stopped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ctcli.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RUN_TIMEOUT = 120  # a guard against a hang, never a timing assertion


def recipe() -> tuple[str, str]:
    """(the set-up command, the crontab line) as the README gives them."""
    section = README.split("## Nightly sync from cron", 1)[1]
    setup = re.search(r"```sh\n(mkdir [^\n]*)\n```", section)
    line = re.search(r"```cron\n([^\n]*)\n```", section)
    assert setup and line, "the cron section lost its set-up or its crontab line"
    return setup.group(1), line.group(1).split(None, 5)[5]  # the command, without its schedule


def in_tree(command: str, root: Path) -> str:
    """The command with its absolute paths moved under `root` and ctcli this checkout's."""
    ctcli = str(Path(sys.executable).parent / "ctcli")
    command = command.replace("/srv/sync/.venv/bin/ctcli", ctcli)
    for top in ("/var/lib/", "/var/log/", "/data/"):
        command = command.replace(top, f"{root}{top}")
    return command


def night(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    # As cron runs it: an almost empty environment, no terminal, stdin from /dev/null.
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "sync"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def events(first: int, last: int) -> str:
    lines = []
    for n in range(first, last + 1):
        traits = {"plan": "pro"} if n % 10 else {"phone": "555"}  # every tenth is invalid
        lines.append(json.dumps({"type": "identify", "userId": f"u{n}", "traits": traits}))
    return "".join(line + "\n" for line in lines)


def test_the_cron_recipe_works_on_the_first_night_and_resumes_on_the_second(tmp_path):
    setup, line = recipe()
    home = tmp_path / "home"
    (home / ".config" / "ctcli").mkdir(parents=True)
    export = tmp_path / "data" / "export" / "events.ndjson"
    export.parent.mkdir(parents=True)
    export.write_text(events(1, 100))
    with Sandbox(project_id="PROD", passcode="prod-passcode") as sandbox:
        config = home / ".config" / "ctcli" / "config.toml"
        config.write_text(
            f'[profiles.prod]\nproject_id = "PROD"\npasscode = "prod-passcode"\n'
            f'endpoint = "{sandbox.url}"\n'
        )
        config.chmod(0o600)
        assert night(in_tree(setup, tmp_path), home).returncode == 0

        first = night(in_tree(line, tmp_path), home)
        assert first.returncode == 1  # the invalid phones, kept in the failed file
        assert sandbox.profile_count() == 90
        export.write_text(events(1, 150))  # the export grew during the day
        second = night(in_tree(line, tmp_path), home)
        assert second.returncode == 1
        assert sandbox.profile_count() == 135

    log = (tmp_path / "var" / "log" / "ctcli" / "ctcli.log").read_text().splitlines()
    summaries = [json.loads(text)["summary"] for text in log if text.startswith('{"summary"')]
    assert [s["events"] for s in summaries] == [100, 50]  # the second night only the new lines
    assert "resuming after line 100" in "\n".join(log)
    results = (tmp_path / "var" / "log" / "ctcli" / "results.ndjson").read_text().splitlines()
    assert len(results) == 15 and all('"status":"invalid"' in row for row in results)
    failed = (tmp_path / "var" / "lib" / "ctcli" / "failed.ndjson").read_text().splitlines()
    assert len(failed) == 15
    assert summaries[0]["run_id"] != summaries[1]["run_id"]
