"""``check`` names what the runs will really do: a site's overlays, its ``[strategies]`` and ``screen
--records`` change what screen and sync choose and cost, so the preflight reads them too (``--mappings``,
``--records``, ``--config site.toml``), against the loopback FHIR server."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer, Reply, outcome

from fhir_adapter.cli import main

from .faultrun import AS_OF, load_patients

# A site's own words for the diagnosis: one more `code:text` candidate search.
OVERLAY = """\
[concepts.dermatomyositis]
text = ["dermatomyositis sine myositis"]
"""


def check_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--json", "--no-write-back", *args])
    return code, json.loads(capsys.readouterr().out)


def site(tmp_path: Path, base: str, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            url = "{base}"
            [study]
            as_of = "{AS_OF}"
            [state]
            path = "state/state.sqlite"
            """
        )
        + textwrap.dedent(extra),
        encoding="utf-8",
    )
    return path


def test_check_reads_records_by_everything_where_offered(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer() as server:
        _, report = check_json(capsys, "--server", server.base)
    assert report["strategies"]["screen"]["records"] == "everything"
    assert report["requestEstimate"]["perPatient"] == 1
    assert report["forcedStrategies"] == {}


def test_check_records_typed_names_and_costs_the_typed_searches_screen_would_send(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer() as server:
        _, report = check_json(capsys, "--server", server.base, "--records", "typed")
    assert report["strategies"]["screen"]["records"] == "typed"
    assert report["forcedStrategies"] == {"screen": ["records"]}
    assert report["requestEstimate"]["perPatient"] > 1  # one search per type the criteria read


def test_check_mappings_counts_the_overlays_candidate_searches(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay.toml"
    overlay.write_text(OVERLAY, encoding="utf-8")
    with FaultServer() as server:
        _, plain = check_json(capsys, "--server", server.base)
        _, extended = check_json(capsys, "--server", server.base, "--mappings", str(overlay))
    assert extended["requestEstimate"]["candidates"] == plain["requestEstimate"]["candidates"] + 1


def test_check_config_names_the_strategies_the_sites_sync_is_forced_to(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "overlay.toml").write_text(OVERLAY, encoding="utf-8")
    extra = """\
        [mappings]
        overlays = ["overlay.toml"]
        [strategies]
        records = "typed"
        """
    with FaultServer() as server:
        config = site(tmp_path, server.base, extra)
        code, report = check_json(capsys, "--config", str(config))
        _, plain = check_json(capsys, "--server", server.base)
        assert not [r for r in server.requests if r.method != "GET"]  # a preflight never writes
    assert code == 0, report["findings"]
    assert report["server"] == server.base
    assert report["strategies"]["sync"]["records"] == "typed"  # $everything offered, the site says typed
    assert plain["strategies"]["sync"]["records"] == "everything"
    assert report["forcedStrategies"] == {"sync": ["records"]}
    assert report["requestEstimate"]["sync"]["perChangedPatient"] > 1
    # The site's overlay is read relative to site.toml: its text is one more candidate search.
    assert report["requestEstimate"]["candidates"] == plain["requestEstimate"]["candidates"] + 1


def test_check_config_reports_a_strategy_the_server_cannot_serve(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer() as server:
        config = site(tmp_path, server.base, '[strategies]\nchanges = "bulk"\n')
        code, report = check_json(capsys, "--config", str(config))
    assert code == 4
    failed = [f for f in report["findings"] if f["status"] == "failed"]
    assert [f["what"] for f in failed] == ["sync strategies"]
    assert "Bulk Data export" in failed[0]["detail"]


def test_check_config_refuses_a_server_given_beside_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = site(tmp_path, "https://ehr.example.org/fhir")
    code = main(["check", "--config", str(config), "--server", "https://other.example.org/fhir"])
    assert code == 2
    assert "drop --server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--token", "env:OTHER_TOKEN"], "--token"),
        (["--timeout", "5"], "--timeout"),
        (["--write-auth", "bearer"], "--write-auth"),
        (["--trial", "NCT02728752"], "--trial"),
    ],
)
def test_check_config_refuses_an_option_it_would_otherwise_ignore(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str], named: str
) -> None:
    config = site(tmp_path, "https://ehr.example.org/fhir")
    assert main(["check", "--config", str(config), *option]) == 2
    assert f"drop {named}" in capsys.readouterr().err


def test_check_config_with_a_bad_site_file_names_the_file_and_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = site(tmp_path, "https://ehr.example.org/fhir", '[strategies]\nrecords = "fast"\n')
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "strategies.records" in err
    assert "Traceback" not in err


def test_check_of_a_sync_without_change_feed_says_every_run_is_a_full_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer() as server:
        config = site(tmp_path, server.base, '[strategies]\nchanges = "full-only"\n')
        _, report = check_json(capsys, "--config", str(config))
        assert main(["check", "--config", str(config), "--no-write-back"]) == 3  # degraded: no feed
        text = capsys.readouterr().out
    sync = report["requestEstimate"]["sync"]
    assert sync["everyRunFull"] is True
    assert "every run is a full run (no change feed)" in text
    assert "incremental run" not in text


def test_check_refuses_a_negative_number_of_patients(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--server", "https://ehr.example.org/fhir", "--patients", "-1"]) == 2
    assert "--patients must be >= 0" in capsys.readouterr().err


def test_a_fhir_version_that_is_not_a_version_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    forged = "4.0.1)\noutcome: ready (exit 0) Zhang Weiling"
    with FaultServer(fhir_version=forged) as server:
        code = main(["check", "--server", server.base, "--no-write-back"])
    out = capsys.readouterr().out
    assert "Zhang" not in out and "outcome: ready (exit 0) Zhang" not in out
    assert f"Preflight of {server.base} (FHIR ?)" in out
    assert code == 4  # no FHIR version the adapter can work with


def test_check_tries_everything_and_names_typed_searches_when_the_server_refuses_what_it_lists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FaultServer() as server:
        load_patients(server, "p1")
        server.on("GET", r"Patient/p1/\$everything", Reply(405, json=outcome("not-supported")), repeat=True)
        code, report = check_json(capsys, "--server", server.base)
    (row,) = [r for r in report["findings"] if r["what"] == "Patient/ID/$everything"]
    assert row["status"] == "degraded" and "stated, but probe refused: HTTP 405" in row["detail"]
    assert report["strategies"]["screen"]["records"] == "typed"
    assert code == 3


def test_check_says_everything_works_when_the_probe_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer() as server:
        load_patients(server, "p1")
        _, report = check_json(capsys, "--server", server.base)
    (row,) = [r for r in report["findings"] if r["what"] == "Patient/ID/$everything"]
    assert (row["status"], row["detail"]) == ("supported", "one request per patient (probed)")
    assert report["strategies"]["screen"]["records"] == "everything"
