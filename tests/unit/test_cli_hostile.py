"""Every sub-command, given hostile files and arguments, ends with a short message, never a traceback.

Hypothesis draws a sub-command, one of its file arguments and the bytes of
that file (garbage, UTF-16, Latin-1, deep nesting, an alias bomb, NaN, a
plan.json that is a list, STAC ``assets`` as a string, duplicate keys...),
or one of its numeric/text options and a bad value (``nan``, ``inf``,
``-1``, ``1e400``, text). The command runs in-process (click's runner) and
must exit 1 or 2 with a message of at most :data:`MAX_OUTPUT_CHARS`, no
``Traceback`` and no exception escaping. Commands that would start Ray or
reach a server fail on validation first: the run campaigns here have no
image uris and addresses are refused or malformed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.cli.main import COMMANDS, INTERNAL_EXIT, classify, cli

pytestmark = pytest.mark.unit

MAX_OUTPUT_CHARS = 2500

CAMPAIGN = ("name: t\ninputs:\n  scenes:\n    - {id: a, footprint: [5.0, 44.0, 5.25, 44.18], "
            "rows: 4000, cols: 4000}\nproducts:\n  ortho: {gsd_m: 0.5}\n")
ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    + ["name: *a8"]) + "\n"

#: Named hostile documents (bytes), each once a source of a traceback.
HOSTILE: dict[str, bytes] = {
    "latin-1": CAMPAIGN.replace("name: t", "name: caf\u00e9").encode("latin-1"),
    "utf-16": CAMPAIGN.encode("utf-16"),
    "binary": bytes(range(256)),
    "deep-yaml": ("name: " + "[" * 3000 + "]" * 3000 + "\n").encode(),
    "deep-json": ("[" * 100_000 + "]" * 100_000).encode(),
    "alias-bomb": ALIAS_BOMB.encode(),
    "nan": (CAMPAIGN + "deadline_h: .nan\nbudget_usd: .inf\n").encode(),
    "json-nan": b'{"format": "eochain-plan/1", "fleet": [], "total_cost_usd": NaN}',
    "list": b"[1, 2, 3]",
    "plan-fleet-string": json.dumps({"format": "eochain-plan/1", "fleet": "m7g"}).encode(),
    "stac-assets-string": (CAMPAIGN.replace("  scenes:\n    - {id: a, footprint: [5.0, 44.0, "
                                            "5.25, 44.18], rows: 4000, cols: 4000}\n",
                                            "  stac: items.json\n")).encode(),
    "duplicate-keys": (CAMPAIGN + "deadline_h: 24\ndeadline_h: 1\n").encode(),
    "empty": b"",
    "scalar": b"42\n",
    "calibration-garbage": json.dumps({"operations": "fast", "families": [1, 2]}).encode(),
    "huge-gsd": CAMPAIGN.replace("gsd_m: 0.5", "gsd_m: 0.000001").encode(),
}

FILES = st.one_of(
    st.sampled_from(sorted(HOSTILE)).map(HOSTILE.__getitem__),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(min_size=1, max_size=100).map(lambda t: t.encode("utf-16")),
)

BAD_NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "abc", "", "0x1f",
                               "-0", "1e-300", "99999999999999999999", "\u00e9"])
BAD_TEXT = st.one_of(st.sampled_from(["", "-", "--", "../..", "\x01", "http://", "x" * 5000]),
                     st.text(max_size=50).filter(lambda t: "\x00" not in t))


def _prepare(d: Path) -> dict[str, Path]:
    """The good files the commands need beside the hostile one."""
    (d / "campaign.yaml").write_text(CAMPAIGN)
    (d / "items.json").write_text(json.dumps({"features": [
        {"id": "s0", "bbox": [5, 44, 5.2, 44.2], "properties": {}, "assets": "s3://b/x.tif"}]}))
    # a campaign naming the hostile file as its image, by path only
    (d / "by-path.yaml").write_text("name: p\ninputs:\n  scenes: [{uri: bad.yaml}]\n"
                                    "products: {ortho: {gsd_m: 0.5}}\n")
    return {"good": d / "campaign.yaml", "by_path": d / "by-path.yaml",
            "missing": d / "missing" / "deeper"}


#: name -> argv, given the hostile file and the folder of good files.
FILE_CASES: dict[str, Callable[[Path, dict[str, Path]], list[str]]] = {
    "plan": lambda f, g: ["plan", str(f), "--out", str(f.parent / "o"), "--runs", "0"],
    "plan --calibration": lambda f, g: ["plan", str(g["good"]), "--calibration", str(f),
                                        "--out", str(f.parent / "o"), "--runs", "0"],
    "plan --catalog": lambda f, g: ["plan", str(g["good"]), "--catalog", str(f),
                                    "--out", str(f.parent / "o"), "--runs", "0"],
    "plan (image by path)": lambda f, g: ["plan", str(g["by_path"]), "--out",
                                          str(f.parent / "o"), "--runs", "0"],
    "plan --dem": lambda f, g: ["plan", str(g["by_path"]), "--dem", str(f), "--out",
                                str(f.parent / "o"), "--runs", "0"],
    "run (image by path)": lambda f, g: ["run", str(g["by_path"]), "--dem", str(f), "--out",
                                         str(f.parent / "r"), "-q"],
    "run": lambda f, g: ["run", str(f), "--dem", str(g["missing"]), "--out",
                         str(f.parent / "r"), "-q"],
    "run --plan": lambda f, g: ["run", str(g["good"]), "--plan", str(f), "--dem",
                                str(g["missing"]), "--out", str(f.parent / "r"), "-q"],
    "submit": lambda f, g: ["submit", str(f), "--address", "http://127.0.0.1:1"],
    "submit --plan": lambda f, g: ["submit", str(g["good"]), "--plan", str(f), "--address",
                                   "not-an-address"],
    "cluster-config": lambda f, g: ["cluster-config", str(f), "--terraform-outputs", str(f),
                                    "-o", str(g["missing"] / "cluster.yaml")],
    "ortho": lambda f, g: ["ortho", str(f), "--dem", str(f), "-o", str(f.parent / "o.tif"),
                           "-q"],
    "ortho --dem": lambda f, g: ["ortho", str(f), "--dem", str(g["missing"]), "-o",
                                 str(f.parent / "o.tif"), "-q"],
    "dsm": lambda f, g: ["dsm", str(f), str(f), "--dem", str(f), "-o", str(f.parent / "d.tif"),
                         "-q"],
}

#: name -> argv, given a bad value and the folder of good files.
ARG_CASES: dict[str, Callable[[str, dict[str, Path]], list[str]]] = {
    # --out under a file: a value that passes stops there, before any planning
    "plan --deadline": lambda v, g: ["plan", str(g["good"]), "--deadline", v, "--runs", "0",
                                     "--out", str(g["good"] / "o")],
    "plan --budget": lambda v, g: ["plan", str(g["good"]), "--budget", v, "--runs", "0",
                                   "--out", str(g["good"] / "o")],
    "plan --runs": lambda v, g: ["plan", str(g["good"]), "--runs", v, "--out",
                                 str(g["good"] / "o")],
    "plan --seed": lambda v, g: ["plan", str(g["good"]), "--seed", v, "--out",
                                 str(g["good"] / "o")],
    "run --tile-size": lambda v, g: ["run", str(g["good"]), "--dem", "x", "--tile-size", v],
    "run --workers": lambda v, g: ["run", str(g["good"]), "--dem", "x", "--workers", v],
    "run --metrics-port": lambda v, g: ["run", str(g["good"]), "--dem", "x", "--metrics-port",
                                        v],
    "ortho --gsd": lambda v, g: ["ortho", str(g["good"]), "--dem", "x", "--gsd", v, "-o",
                                 str(g["good"].parent / "o.tif")],
    "dsm --max-days-apart": lambda v, g: ["dsm", str(g["good"]), str(g["good"]), "--dem", "x",
                                          "--max-days-apart", v, "-o",
                                          str(g["good"].parent / "d.tif")],
    "demo --size": lambda v, g: ["demo", "--size", v, "--out", str(g["good"].parent / "demo")],
    "cluster-config --idle": lambda v, g: ["cluster-config", str(g["good"]),
                                           "--idle-timeout-minutes", v],
    "status": lambda v, g: ["status", v, "--address", "not-an-address"],
    "stop": lambda v, g: ["stop", v, "--address", "ftp://x"],
    "logs": lambda v, g: ["logs", v, "--address", ""],
    "jobs list": lambda v, g: ["jobs", "list", "--address", v or "x"],
    "jobs": lambda v, g: ["jobs", v or "x"],
    "unknown option": lambda v, g: ["plan", str(g["good"]), f"--{v or 'x'}"],
}


@pytest.fixture(autouse=True, scope="module")
def _log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Internal-error logs (there should be none) go to a temporary folder."""
    previous = os.environ.get("EOCHAIN_LOG_DIR")
    os.environ["EOCHAIN_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))
    yield
    if previous is None:
        del os.environ["EOCHAIN_LOG_DIR"]
    else:
        os.environ["EOCHAIN_LOG_DIR"] = previous


def _check(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    output = result.output
    assert isinstance(result.exception, SystemExit), (argv, result.exception, output)
    assert result.exit_code in (1, 2), (argv, result.exit_code, output)
    assert "Traceback" not in output, (argv, output)
    assert len(output) <= MAX_OUTPUT_CHARS, (argv, len(output), output[:500])
    assert output.strip(), argv


def test_every_sub_command_has_a_case() -> None:
    covered = {name.split()[0] for name in (*FILE_CASES, *ARG_CASES)}
    assert set(COMMANDS) <= covered


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(FILE_CASES)), content=FILES)
def test_hostile_files_get_a_message(tmp_path_factory: pytest.TempPathFactory, case: str,
                                     content: bytes) -> None:
    d = tmp_path_factory.mktemp("hostile")
    good = _prepare(d)
    bad = d / "bad.yaml"
    bad.write_bytes(content)
    _check(FILE_CASES[case](bad, good))


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(ARG_CASES)), value=st.one_of(BAD_NUMBERS, BAD_TEXT))
def test_hostile_arguments_get_a_message(tmp_path_factory: pytest.TempPathFactory, case: str,
                                         value: str) -> None:
    d = tmp_path_factory.mktemp("args")
    _check(ARG_CASES[case](value, _prepare(d)))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_named_hostile_file_everywhere(tmp_path: Path, name: str) -> None:
    good = _prepare(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(HOSTILE[name])
    for case in sorted(FILE_CASES):
        _check(FILE_CASES[case](bad, good))


def test_an_internal_error_points_to_its_log(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOCHAIN_LOG_DIR", str(tmp_path / "logs"))
    try:
        {}["missing"]
    except KeyError as exc:
        err = classify(exc, ["plan", "c.yaml"])
    assert err.exit_code == INTERNAL_EXIT
    message = err.format_message()
    assert "this is a bug in eochain" in message and "report it" in message
    logs = list((tmp_path / "logs").glob("eochain-*.log"))
    assert len(logs) == 1 and str(logs[0]) in message
    text = logs[0].read_text()
    assert "Traceback" in text and "KeyError: 'missing'" in text and "plan c.yaml" in text
    assert os.path.getsize(logs[0]) > 0


def test_a_user_error_keeps_its_message(tmp_path: Path) -> None:
    err = classify(FileNotFoundError(2, "No such file or directory", str(tmp_path / "x")), [])
    assert err.exit_code == 1 and str(tmp_path / "x") in err.format_message()
