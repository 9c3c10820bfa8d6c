"""Profile tables (CSV, TSV, Parquet): what each row sends, over real sockets to the sandbox,
and the results and one-line errors of rows and files that are not right."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import ctcli
from ctcli.api import FrontEnd
from ctcli.errors import InputError, UsageError
from ctcli.events.tables import PARQUET_NEEDS_PYARROW, read_table, table_kind
from ctcli.sandbox import Sandbox
from tests.conftest import SANDBOX_PASSCODE, SANDBOX_PROJECT_ID
from tests.helpers import invoke, one_error_line, rows_of

SIGNUP = 1704412800  # 2024-01-05T00:00:00Z


@pytest.fixture
def recording(env, monkeypatch) -> Iterator[Sandbox]:
    """A sandbox that keeps every record it accepts, with CLEVERTAP_* pointing the CLI at it."""
    with Sandbox(
        project_id=SANDBOX_PROJECT_ID, passcode=SANDBOX_PASSCODE, keep_records=True
    ) as running:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", running.url)
        monkeypatch.setenv("CLEVERTAP_PROJECT_ID", SANDBOX_PROJECT_ID)
        monkeypatch.setenv("CLEVERTAP_PASSCODE", SANDBOX_PASSCODE)
        yield running


def write(path: Path, text: str, *, compress: bool = False, encoding: str = "utf-8") -> str:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def upload(path: str, **options: Any) -> list[ctcli.Result]:
    results: list[ctcli.Result] = []
    ctcli.upload(path, on_result=results.append, **options)
    return results


def profiles(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """identity -> profileData of every record the sandbox accepted, in order."""
    return {record["identity"]: record["profileData"] for record in sandbox.records()}


def lines(results: list[ctcli.Result]) -> list[tuple[int, str, str | None]]:
    return [(result.line, str(result.status), result.error) for result in results]


# --- what a row sends -------------------------------------------------------------------------


def test_typed_headers_give_numbers_booleans_and_dates(recording, tmp_path):
    source = write(
        tmp_path / "users.csv",
        "user_id,Plan,Plan Code:str,Logins:int,Score:float,Active:bool,Signup:date,Seen\n"
        "u1,pro,007,42,4.5,yes,2024-01-05,2024-01-05T00:00:00Z\n"
        "u2,free,1,-3,1e3,FALSE,1704412800,\n"
        "u3,,, +7 ,.5,0,5 Jan 2024,\n",
    )
    results = upload(source)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert profiles(recording) == {
        "u1": {
            "Plan": "pro",
            "Plan Code": "007",
            "Logins": 42,
            "Score": 4.5,
            "Active": True,
            "Signup": f"$D_{SIGNUP}",
            "Seen": SIGNUP,  # untyped ISO-8601 text: converted as in JSON traits
        },
        "u2": {
            "Plan": "free",
            "Plan Code": "1",
            "Logins": -3,
            "Score": 1000.0,
            "Active": False,
            "Signup": f"$D_{SIGNUP}",
        },
        "u3": {"Logins": 7, "Score": 0.5, "Active": False, "Signup": f"$D_{SIGNUP}"},
    }


def test_untyped_cells_stay_text(recording, tmp_path):
    source = write(tmp_path / "users.csv", "identity,Logins,Zip,Flag\nu1,42,02134,true\n")
    upload(source)
    assert profiles(recording) == {"u1": {"Logins": "42", "Zip": "02134", "Flag": "true"}}


def test_a_name_with_a_colon_keeps_it_with_str(recording, tmp_path):
    source = write(tmp_path / "users.csv", "userId,utm:source:str,Time: start\nu1,ads,9am\n")
    upload(source)
    assert profiles(recording) == {"u1": {"utm:source": "ads", "Time: start": "9am"}}


def test_standard_keys_by_header_name(recording, tmp_path):
    source = write(
        tmp_path / "users.csv",
        "userId,email,phone,first_name,last_name,gender,birthday,customerType,employed,MSG-email\n"
        "u1,a@example.com,+14155550123,Ada,Lovelace,female,1990-05-01,Premium,yes,false\n",
    )
    upload(source)
    assert profiles(recording) == {
        "u1": {
            "Email": "a@example.com",
            "Phone": "+14155550123",
            "Name": "Ada Lovelace",
            "Gender": "F",
            "DOB": "$D_641520000",
            "Customer Type": "Premium",
            "Employed": "Y",
            "MSG-email": False,  # CleverTap's boolean keys need no :bool
        }
    }


def test_keys_already_in_clevertap_spelling_are_kept(recording, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Email,Name,Customer Type\nu1,a@b.co,Ada,Gold\n")
    upload(source)
    assert profiles(recording) == {
        "u1": {"Email": "a@b.co", "Name": "Ada", "Customer Type": "Gold"}
    }


def test_empty_cells_and_cells_of_spaces_are_skipped(recording, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Plan,Logins:int,Note\nu1,,,  \nu2,pro\n")
    results = upload(source)
    assert [r.status for r in results] == ["ok", "ok"]
    assert profiles(recording) == {"u1": {}, "u2": {"Plan": "pro"}}


# --- the identity column ----------------------------------------------------------------------


@pytest.mark.parametrize("header", ["identity", "userId", "user_id", "UserID", " Identity "])
def test_default_identity_columns(recording, tmp_path, header):
    source = write(tmp_path / "users.csv", f"Plan,{header}\npro, u1 \n")
    upload(source)
    assert profiles(recording) == {"u1": {"Plan": "pro"}}  # stripped, and not an attribute


def test_identity_column_by_name(recording, tmp_path):
    source = write(tmp_path / "users.csv", "email,customer_no,userId\na@b.co,C-1,x\n")
    upload(source, identity_column="customer_no")
    assert profiles(recording) == {"C-1": {"Email": "a@b.co", "userId": "x"}}


def test_identity_column_option_on_the_command_line(recording, tmp_path):
    source = write(tmp_path / "users.csv", "Email,uid:str\na@b.co,7\n")
    result = invoke("upload", "-o", "ndjson", "--identity-column", "uid", source)
    assert result.exit_code == 0, result.stderr
    assert profiles(recording) == {"7": {"Email": "a@b.co"}}


def test_unknown_identity_column_is_one_line_exit_2_before_anything_is_sent(recording, tmp_path):
    first = write(tmp_path / "first.csv", "userId,Plan\nu1,pro\n")
    second = write(tmp_path / "second.csv", "email,Plan\na@b.co,pro\n")
    result = invoke("upload", "-o", "ndjson", "--identity-column", "uid", first)
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        f"ctcli: error: {first!r} has no column 'uid' (--identity-column); "
        "its columns: userId, Plan"
    )
    result = invoke("upload", "-o", "ndjson", first, second)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert repr(second) in line and "no identity column" in line and "email, Plan" in line
    assert recording.records() == []  # found up front: the first file was not sent either


def test_two_default_identity_columns_must_be_chosen_between(env, tmp_path):
    source = write(tmp_path / "users.csv", "identity,userId\na,b\n")
    result = invoke("upload", "--dry-run", source)
    assert result.exit_code == 2
    assert "'identity' and 'userId': choose the identity with --identity-column" in (
        one_error_line(result.stderr)
    )


def test_identity_column_without_a_table_is_refused(env, events):
    result = invoke("upload", "--dry-run", "--identity-column", "uid", str(events))
    assert result.exit_code == 2
    assert "--identity-column is for CSV, TSV and Parquet" in one_error_line(result.stderr)


def test_unknown_header_type_is_one_line_exit_2(env, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Logins:integer\nu1,3\n")
    result = invoke("upload", "--dry-run", source)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "column 2 'Logins:integer': unknown type 'integer'" in line
    assert "types: str, int, float, bool, date" in line


def test_a_column_named_twice_is_refused(env, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Logins,Logins:int\nu1,3,4\n")
    result = invoke("upload", "--dry-run", source)
    assert result.exit_code == 2
    assert "column 'Logins' appears twice (columns 2 and 3)" in one_error_line(result.stderr)


# --- encodings, line ends, quoting, compression -----------------------------------------------


def test_bom_crlf_and_quoted_multi_line_cells_with_their_line_numbers(recording, tmp_path):
    text = (
        "\ufeffuserId,Note,Plan\r\n"
        'u1,"two\r\nlines",pro\r\n'
        "\r\n"
        'u2,"a ""quoted"" word",free\r\n'
        'u3,"three\nmore\nlines",team\r\n'
        "u4,,gold\r\n"
    )
    results = upload(write(tmp_path / "users.csv", text))
    assert lines(results) == [(2, "ok", None), (5, "ok", None), (6, "ok", None), (9, "ok", None)]
    assert profiles(recording) == {
        "u1": {"Note": "two\r\nlines", "Plan": "pro"},
        "u2": {"Note": 'a "quoted" word', "Plan": "free"},
        "u3": {"Note": "three\nmore\nlines", "Plan": "team"},
        "u4": {"Plan": "gold"},
    }


@pytest.mark.parametrize("name", ["users.csv.gz", "users.csv"])
def test_gzip_is_read_by_its_magic_bytes(recording, tmp_path, name):
    source = write(tmp_path / name, "\ufeffuserId,Plan\nu1,pro\n", compress=True)
    assert [r.status for r in upload(source)] == ["ok"]
    assert profiles(recording) == {"u1": {"Plan": "pro"}}


@pytest.mark.parametrize(
    ("name", "options"), [("u.tsv", {}), ("u.tab.gz", {}), ("u.txt", {"format": "tsv"})]
)
def test_tsv_by_extension_or_format(recording, tmp_path, name, options):
    source = write(
        tmp_path / name, "userId\tNote\tLogins:int\nu1\ta, b\t3\n", compress=".gz" in name
    )
    assert [r.status for r in upload(source, **options)] == ["ok"]
    assert profiles(recording) == {"u1": {"Note": "a, b", "Logins": 3}}


def test_format_csv_reads_stdin_and_any_name(recording, tmp_path):
    result = invoke("upload", "-o", "ndjson", "--format", "csv", "-", input="userId,Plan\nu1,pro\n")
    assert result.exit_code == 0, result.stderr
    source = write(tmp_path / "users.txt", "userId,Plan\nu2,free\n")
    result = invoke("upload", "-o", "ndjson", "--format", "CSV", source)
    assert result.exit_code == 0, result.stderr
    assert profiles(recording) == {"u1": {"Plan": "pro"}, "u2": {"Plan": "free"}}


def test_stdin_table_without_its_identity_column_is_an_error(env):
    result = invoke("upload", "--dry-run", "--format", "csv", "-", input="email\na@b.co\n")
    assert result.exit_code == 2
    assert "stdin has no identity column" in one_error_line(result.stderr.splitlines()[-1])


def test_format_ndjson_reads_a_csv_name_as_events(env, tmp_path):
    source = write(tmp_path / "events.csv", '{"type": "identify", "userId": "u1", "traits": {}}\n')
    result = invoke("upload", "--dry-run", "-o", "ndjson", "--format", "ndjson", source)
    assert result.exit_code == 0, result.stderr
    assert [row["status"] for row in rows_of(result)] == ["dry-run"]


# --- bad rows ---------------------------------------------------------------------------------


def test_bad_rows_are_invalid_with_their_line_and_the_rest_goes_on(recording, tmp_path):
    text = (
        "userId,Logins:int,Active:bool,Signup:date,Plan\n"
        "u1,1,yes,2024-01-05,pro\n"
        "u2,one,yes,,pro\n"
        "u3,1,maybe,,pro\n"
        "u4,1,no,someday,pro\n"
        ",1,no,,pro\n"
        "u6,1,no,,pro,extra\n"
        'u7,1"x,no,,pro\n'  # a quote inside a cell is only text
        'u8,"1"x,no,,pro\n'  # a quoted cell must end where its cell does
        "u9,2,no,,pro\n"
    )
    results = upload(write(tmp_path / "users.csv", text))
    assert lines(results) == [
        (2, "ok", None),
        (3, "invalid", "column 'Logins:int': 'one' is not a whole number"),
        (4, "invalid", "column 'Active:bool': 'maybe' is not true or false (yes/no, 1/0)"),
        (5, "invalid", "column 'Signup:date': 'someday' is not a date"),
        (6, "invalid", "empty identity: column 'userId' has no value"),
        (7, "invalid", "6 cells, but the header has 5 columns"),
        (8, "invalid", "column 'Logins:int': '1\"x' is not a whole number"),
        (9, "invalid", "bad CSV: ',' expected after '\"'"),
        (10, "ok", None),
    ]
    assert list(profiles(recording)) == ["u1", "u9"]


def test_a_quote_left_open_is_one_bad_row_at_its_line(env, tmp_path):
    source = write(tmp_path / "users.csv", 'userId,Plan\nu1,pro\nu2,"free\nu3,team\n')
    results = upload(source, dry_run=True)
    assert lines(results) == [
        (2, "dry-run", None),
        (3, "invalid", "bad CSV: the file ends inside a quoted cell (a quote left open?)"),
    ]


def test_a_row_that_is_not_utf8_is_invalid_and_the_rest_goes_on(env, tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(b"userId,Name\nu1,Zo\xc3\xab\nu2,Zo\xeb\nu3,Zoe\n")  # u2: Latin-1
    results = upload(str(path), dry_run=True)
    assert lines(results) == [
        (2, "dry-run", None),
        (3, "invalid", "not UTF-8: the row holds bytes that are not text"),
        (4, "dry-run", None),
    ]


def test_a_value_under_no_header_is_invalid(env, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Plan,\nu1,pro,\nu2,free,oops\n")
    results = upload(source, dry_run=True)
    assert lines(results) == [
        (2, "dry-run", None),
        (3, "invalid", "a value in column 3, which has no header"),
    ]


def test_a_csv_with_a_bad_row_an_unknown_identity_column_and_a_bom_on_the_command_line(
    recording, tmp_path
):
    source = write(tmp_path / "users.csv", "\ufeffuserId,Logins:int\nu1,1\nu2,x\nu3,3\n")
    result = invoke("upload", "-o", "ndjson", source)
    assert result.exit_code == 1
    rows = rows_of(result)
    assert [(row["line"], row["status"]) for row in rows] == [(2, "ok"), (3, "invalid"), (4, "ok")]
    assert rows[1]["error"] == "column 'Logins:int': 'x' is not a whole number"
    result = invoke("upload", "-o", "ndjson", "--identity-column", "user_id", source)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).endswith("its columns: userId, Logins:int")


# --- replay, delete -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["replay"], ["delete", "--yes", "--file"]])
def test_replay_and_delete_refuse_a_table(env, tmp_path, command):
    source = write(tmp_path / "users.csv", "userId,Plan\nu1,pro\n")
    result = invoke(*command, source, "--dry-run")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"{source!r} is a CSV table: {command[0]} reads event streams" in line
    assert "use upload for profile tables" in line


def test_replay_from_the_library_refuses_a_table(env, tmp_path):
    source = write(tmp_path / "users.csv", "userId,Plan\nu1,pro\n")
    with pytest.raises(UsageError, match="use upload"):
        ctcli.replay(source, dry_run=True)
    with pytest.raises(UsageError, match="replay reads event streams"):
        ctcli.replay(source, dry_run=True, format="csv")


def test_an_unknown_format_is_refused(env, events):
    with pytest.raises(UsageError, match="format 'xlsx': expected one of auto, ndjson"):
        ctcli.upload(str(events), dry_run=True, format="xlsx")


# --- checkpoints and re-drive -----------------------------------------------------------------


def test_state_resumes_a_csv_after_its_settled_rows(recording, tmp_path):
    path = tmp_path / "users.csv"
    state = str(tmp_path / "state.json")
    path.write_text('userId,Note\nu1,"a\nb"\nu2,x\n')
    first = upload(str(path), state=state)
    assert lines(first) == [(2, "ok", None), (4, "ok", None)]
    with path.open("a") as more:
        more.write('u3,"c\nd"\nu4,y\n')
    notes: list[str] = []
    front = FrontEnd(note=notes.append)
    second = upload(str(path), state=state, front_end=front)
    assert lines(second) == [(5, "ok", None), (7, "ok", None)]
    assert any("resuming after line 4" in note for note in notes), notes
    assert [record["identity"] for record in recording.records()] == ["u1", "u2", "u3", "u4"]


def test_failed_rows_re_drive_from_the_failed_file(recording, tmp_path):
    source = write(
        tmp_path / "users.csv",
        "userId,Logins:int,Signup:date,Plan\nu1,1,2024-01-05,pro\nBAD-2,2,2024-01-05,free\nu3,x,,\n",
    )
    failed = tmp_path / "failed.ndjson"
    recording.set_faults(bad_batch_marker="BAD")
    first = upload(source, failed=str(failed), max_retries=0)
    assert [(r.line, str(r.status)) for r in first] == [(2, "ok"), (3, "failed"), (4, "invalid")]
    written = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [(row["source"], row["line"], row["status"]) for row in written] == [
        (source, 3, "failed"),
        (source, 4, "invalid"),
    ]
    assert written[1]["event"] == "u3,x,,"  # the row as text: a bad row stays bad
    recording.clear_faults()
    recording.reset()
    result = invoke(
        "upload", "-o", "ndjson", str(failed), "--failed", str(tmp_path / "again.ndjson")
    )
    assert result.exit_code == 1  # the invalid row is invalid again
    assert [row["status"] for row in rows_of(result)] == ["ok", "invalid"]
    assert profiles(recording) == {"BAD-2": {"Logins": 2, "Signup": f"$D_{SIGNUP}", "Plan": "free"}}


# --- which files are tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format", "kind"),
    [
        ("a.csv", "auto", "csv"),
        ("A.CSV.GZ", "auto", "csv"),
        ("a.tsv", "auto", "tsv"),
        ("a.tab", "auto", "tsv"),
        ("a.parquet", "auto", "parquet"),
        ("a.pq", "auto", "parquet"),
        ("a.parquet.gz", "auto", None),
        ("a.ndjson", "auto", None),
        ("a.json.gz", "auto", None),
        ("-", "auto", None),
        ("-", "csv", "csv"),
        ("a.csv", "ndjson", None),
        ("a.ndjson", "tsv", "tsv"),
    ],
)
def test_table_kind(name, format, kind):
    assert table_kind(name, format) == kind


def test_a_parquet_file_is_told_by_its_magic_whatever_its_name(tmp_path):
    path = tmp_path / "export.bin"
    path.write_bytes(b"PAR1\x00\x00")
    assert table_kind(str(path)) == "parquet"


def test_reading_a_missing_table_raises_at_once(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_table(str(tmp_path / "gone.csv"), "csv")


def test_read_table_from_a_stream():
    items = list(read_table("-", "csv", stdin=io.BytesIO(b"userId,Plan\nu1,pro\n")))
    assert [(item.line, item.event) for item in items] == [
        (2, {"type": "identify", "userId": "u1", "traits": {"Plan": "pro"}})
    ]


# --- Parquet ----------------------------------------------------------------------------------


@pytest.fixture
def pyarrow():
    return pytest.importorskip("pyarrow")


def write_parquet(path: Path, columns: dict[str, Any], **options: Any) -> str:
    import pyarrow.parquet as pq

    pq.write_table(pyarrow_table(columns), str(path), **options)
    return str(path)


def pyarrow_table(columns: dict[str, Any]) -> Any:
    import pyarrow as pa

    return pa.table(columns)


def test_parquet_columns_keep_the_files_types(recording, tmp_path, pyarrow):
    pa = pyarrow
    source = write_parquet(
        tmp_path / "users.parquet",
        {
            "user_id": pa.array([1001, 1002], pa.int64()),
            "email": pa.array(["a@example.com", None]),
            "Logins": pa.array([42, None], pa.int32()),
            "Score": pa.array([4.5, float("nan")]),
            "Active": pa.array([True, False]),
            "Balance": pa.array([Decimal("12.50"), Decimal("3")], pa.decimal128(10, 2)),
            "Signup": pa.array([dt.date(2024, 1, 5), None], pa.date32()),
            "Seen": pa.array(
                [dt.datetime(2024, 1, 5, 1, 0, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")
            ),
            "Local": pa.array([dt.datetime(2024, 1, 5), None], pa.timestamp("ms")),
            "Tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
            "Plan": pa.array(["pro", ""]).dictionary_encode(),
            "Prefs": pa.array([{"dark": True}, None], pa.struct([("dark", pa.bool_())])),
        },
    )
    results = upload(source)
    assert lines(results) == [(1, "ok", None), (2, "ok", None)]
    assert profiles(recording) == {
        "1001": {
            "Email": "a@example.com",
            "Logins": 42,
            "Score": 4.5,
            "Active": True,
            "Balance": 12.5,
            "Signup": SIGNUP,
            "Seen": SIGNUP + 3600,
            "Local": SIGNUP,
            "Tags": ["a", "b"],
            "Plan": "pro",
            "Prefs": '{"dark":true}',
        },
        # nulls, NaN and empty text are empty cells
        "1002": {"Active": False, "Balance": 3, "Tags": []},
    }


def test_parquet_dates_are_iso_text_without_conversion(env, tmp_path, pyarrow):
    pa = pyarrow
    source = write_parquet(
        tmp_path / "users.parquet",
        {
            "userId": ["u1"],
            "Signup": pa.array([dt.date(2024, 1, 5)], pa.date32()),
            "Seen": pa.array(
                [dt.datetime(2024, 1, 5, 5, tzinfo=dt.UTC)],
                pa.timestamp("s", tz="America/New_York"),
            ),
        },
    )
    items = list(read_table(source, "parquet"))
    assert items[0].event == {
        "type": "identify",
        "userId": "u1",
        # Parquet keeps seconds as milliseconds: the fraction is the file's.
        "traits": {"Signup": "2024-01-05", "Seen": "2024-01-05T05:00:00.000Z"},
    }


def test_parquet_rows_are_numbered_across_row_groups_and_resume(recording, tmp_path, pyarrow):
    source = write_parquet(
        tmp_path / "users.parquet",
        {"userId": [f"u{n}" for n in range(1, 8)], "n": list(range(1, 8))},
        row_group_size=3,
    )
    state = str(tmp_path / "state.json")
    items = list(read_table(source, "parquet", after_line=4))
    assert [(item.line, item.event["userId"]) for item in items] == [
        (5, "u5"),
        (6, "u6"),
        (7, "u7"),
    ]
    assert [r.line for r in upload(source, state=state)] == [1, 2, 3, 4, 5, 6, 7]
    assert upload(source, state=state) == []
    assert len(recording.records()) == 7


def test_parquet_bad_rows(env, tmp_path, pyarrow):
    pa = pyarrow
    source = write_parquet(
        tmp_path / "users.parquet",
        {
            "identity": pa.array(["u1", None, " ", "u4"]),
            "Blob": pa.array([b"ok", b"", None, b"\xff"], pa.binary()),
        },
    )
    assert lines(upload(source, dry_run=True)) == [
        (1, "dry-run", None),
        (2, "invalid", "empty identity: column 'identity' has no value"),
        (3, "invalid", "empty identity: column 'identity' has no value"),
        (4, "invalid", "column 'Blob': binary value that is not UTF-8 text"),
    ]


def test_parquet_unknown_identity_column_is_one_line_exit_2(env, tmp_path, pyarrow):
    source = write_parquet(tmp_path / "users.parquet", {"email": ["a@b.co"], "Plan": ["pro"]})
    result = invoke("upload", "--dry-run", source)
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        f"ctcli: error: {source!r} has no identity column: name one identity, userId or"
        " user_id, or give --identity-column (its columns: email, Plan)"
    )
    result = invoke("upload", "--dry-run", "-o", "ndjson", "--identity-column", "email", source)
    assert result.exit_code == 0, result.stderr


def test_not_a_parquet_file_is_one_line_exit_2(env, tmp_path, pyarrow):
    source = write(tmp_path / "users.parquet", "userId,Plan\n")
    result = invoke("upload", "--dry-run", source)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith(
        f"ctcli: error: cannot read {source!r}: not a Parquet file"
    )


def test_replay_refuses_parquet(env, tmp_path, pyarrow):
    source = write_parquet(tmp_path / "users.parquet", {"userId": ["u1"]})
    result = invoke("replay", "--dry-run", source)
    assert result.exit_code == 2
    assert f"{source!r} is a Parquet table: replay reads event streams" in (
        one_error_line(result.stderr)
    )


def test_parquet_without_pyarrow_says_what_to_install(env, tmp_path, monkeypatch):
    path = tmp_path / "users.parquet"
    path.write_bytes(b"PAR1 not really PAR1")
    for module in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, module, None)  # `import pyarrow` now fails
    result = invoke("upload", "--dry-run", str(path))
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == f"ctcli: error: {PARQUET_NEEDS_PYARROW}"
    assert PARQUET_NEEDS_PYARROW == "reading Parquet needs pyarrow: pip install 'ctcli[parquet]'"
