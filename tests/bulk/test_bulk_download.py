"""Downloads: streamed to .part and renamed, resumed with Range or restarted, retried, line counts checked,
the access token only where it may go, files 0600 in 0700 folders."""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkfake import FakeBulk, FileSpec, ndjson, patients

from fhir_adapter.client.auth import BearerTokenAuth
from fhir_adapter.client.bulk import Manifest, ManifestFile
from fhir_adapter.client.bulk_download import Downloader, clear_own_files, count_lines, parse_origin
from fhir_adapter.client.http import FhirClient
from fhir_adapter.errors import ConfigError
from fhir_adapter.settings import BulkSettings

TOKEN = "s3cr3t-token"
WHEN = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture
def server() -> Iterator[FakeBulk]:
    with FakeBulk() as fake:
        yield fake


@pytest.fixture
def storage() -> Iterator[FakeBulk]:
    with FakeBulk() as fake:
        yield fake


def client_for(fake: FakeBulk) -> FhirClient:
    return FhirClient(fake.base, auth=BearerTokenAuth(TOKEN), max_retries=0)


def downloader(fake: FakeBulk, **settings: object) -> Downloader:
    settings.setdefault("poll_max_wait", 0.01)
    return Downloader(client_for(fake), BulkSettings(**settings), sleep=lambda s: None)  # type: ignore[arg-type]


def manifest(*files: ManifestFile, token: bool = True, **kinds: tuple[ManifestFile, ...]) -> Manifest:
    return Manifest(WHEN, "", token, output=files, **kinds)


BODY = ndjson(list(patients(50)))
BIG = ndjson(list(patients(6000)))  # ~200 KB: several download chunks


def test_files_are_streamed_to_disk_named_by_type_and_counted(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY)
    server.files["b"] = FileSpec(BODY[:100] + b"\n\n")  # blank lines are not resources
    m = manifest(
        ManifestFile("Patient", server.file_url("a"), 50),
        ManifestFile("Patient", server.file_url("b")),
    )

    result = downloader(server).download(m, tmp_path / "out")

    assert [f.path.name for f in result.files] == ["Patient.001.ndjson", "Patient.002.ndjson"]
    assert [f.lines for f in result.files] == [50, count_lines(result.files[1].path)]
    assert (tmp_path / "out" / "Patient.001.ndjson").read_bytes() == BODY
    assert not list((tmp_path / "out").glob("*.part"))
    assert all(s.headers.get("accept") == "application/fhir+ndjson" for s in server.requests_to("/files/"))


def test_downloaded_files_are_0600_in_a_0700_folder(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY)

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"))), tmp_path / "o"
    )

    assert stat.S_IMODE(result.files[0].path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o700


def test_a_broken_transfer_resumes_with_range_where_the_server_supports_it(
    server: FakeBulk, tmp_path: Path
) -> None:
    server.files["a"] = FileSpec(BIG, ranges=True, cut_after=[150_000])

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 6000)), tmp_path
    )

    assert result.files[0].path.read_bytes() == BIG
    ranges = [s.headers.get("range") for s in server.requests_to("/files/")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= 150_000


def test_a_broken_transfer_restarts_the_file_where_range_is_ignored(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BIG, ranges=False, cut_after=[150_000])

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 6000)), tmp_path
    )

    assert result.files[0].path.read_bytes() == BIG  # not the first part twice
    assert result.files[0].lines == 6000
    assert len(server.requests_to("/files/")) == 2


def test_throttled_and_unavailable_files_are_retried(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY, statuses=[429, 503])

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 50)), tmp_path
    )

    assert not result.failures and result.files[0].lines == 50
    assert len(server.requests_to("/files/")) == 3


def test_a_file_that_keeps_failing_is_a_failure_not_an_exception(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY, statuses=[503] * 10)
    server.files["b"] = FileSpec(BODY)
    m = manifest(
        ManifestFile("Patient", server.file_url("a")), ManifestFile("Observation", server.file_url("b"))
    )

    result = downloader(server, download_attempts=3).download(m, tmp_path)

    assert [f.type for f in result.files] == ["Observation"]
    assert result.failures[0].type == "Patient" and "3 attempt" in result.failures[0].reason


def test_a_gone_file_is_marked_gone(server: FakeBulk, tmp_path: Path) -> None:
    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("missing"))), tmp_path
    )

    assert result.failures[0].gone


def test_a_trickling_file_is_cut_off_and_resumed_not_waited_on(server: FakeBulk, tmp_path: Path) -> None:
    # 100 kB at once, then one byte every 0.2 s (the rest would take hours at that pace).
    server.files["a"] = FileSpec(BIG, ranges=True, trickle_after=[100_000])

    result = downloader(server, stall_seconds=0.5).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 6000)), tmp_path
    )

    assert not result.failures
    assert result.files[0].path.read_bytes() == BIG
    ranges = [s.headers.get("range") for s in server.requests_to("/files/")]
    # The second attempt resumed after the whole chunks the first one wrote.
    assert ranges == [None, "bytes=65536-"]


def test_a_file_that_trickles_on_every_attempt_fails_in_bounded_time(
    server: FakeBulk, tmp_path: Path
) -> None:
    server.files["a"] = FileSpec(BIG, ranges=True, trickle_after=[10, 10, 10])

    result = downloader(server, stall_seconds=0.3, download_attempts=3).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 6000)), tmp_path
    )

    (failure,) = result.failures
    assert "3 attempt" in failure.reason and "stalled" in failure.reason
    assert len(server.requests_to("/files/")) == 3


def test_credentials_in_a_netrc_file_never_go_with_a_file_download(
    server: FakeBulk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-a-file\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    server.files["a"] = FileSpec(BODY)

    downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a")), token=False), tmp_path
    )

    (seen,) = server.requests_to("/files/")
    assert seen.auth is None


def test_a_content_encoding_bomb_is_refused_not_written_out(server: FakeBulk, tmp_path: Path) -> None:
    line = b'{"resourceType":"Patient","id":"p"}\n'
    server.files["a"] = FileSpec(line * (20 * 1024 * 1024 // len(line)), gzip=True)  # 20 MB, ~50 kB sent

    result = downloader(server).download(manifest(ManifestFile("Patient", server.file_url("a"))), tmp_path)

    (failure,) = result.failures
    assert "decompresses to more than 200 times" in failure.reason
    assert not list(tmp_path.rglob("*.ndjson*"))  # neither the file nor its part is left


def test_a_line_count_short_of_the_manifest_is_fetched_again_then_reported(
    server: FakeBulk, tmp_path: Path
) -> None:
    server.files["a"] = FileSpec(BODY)

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 51)), tmp_path
    )

    assert len(server.requests_to("/files/")) == 2
    assert not result.failures  # not missing: what the server has, and read as such
    (kept,) = result.files
    assert kept.miscount == "50 line(s) downloaded, the manifest says 51"
    assert kept.path.exists() and kept.lines == 50


def test_a_complete_file_from_an_earlier_run_is_not_fetched_again(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY)
    m = manifest(ManifestFile("Patient", server.file_url("a"), 50))
    downloader(server).download(m, tmp_path)

    again = downloader(server).download(m, tmp_path)

    assert len(server.requests_to("/files/")) == 1
    assert again.files[0].resumed


def test_a_part_left_by_a_killed_run_is_continued(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY, ranges=True)
    (tmp_path / "Patient.001.ndjson.part").write_bytes(BODY[:300])

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 50)), tmp_path
    )

    assert result.files[0].path.read_bytes() == BODY
    assert server.requests_to("/files/")[0].headers["range"] == "bytes=300-"


def test_downloads_run_a_few_at_a_time_and_keep_manifest_order(server: FakeBulk, tmp_path: Path) -> None:
    for n in range(7):
        server.files[f"f{n}"] = FileSpec(ndjson(list(patients(n + 1, prefix=f"x{n}-"))))
    m = manifest(*(ManifestFile("Patient", server.file_url(f"f{n}"), n + 1) for n in range(7)))

    result = downloader(server, downloads=3).download(m, tmp_path)

    assert [f.lines for f in result.files] == [1, 2, 3, 4, 5, 6, 7]


# -- the access token --------------------------------------------------------------------------------


def test_the_token_goes_to_files_on_the_fhir_servers_origin(server: FakeBulk, tmp_path: Path) -> None:
    server.files["a"] = FileSpec(BODY)

    downloader(server).download(manifest(ManifestFile("Patient", server.file_url("a"))), tmp_path)

    assert server.requests_to("/files/")[0].auth == f"Bearer {TOKEN}"


def test_a_file_on_another_origin_is_not_requested_when_it_needs_the_token(
    server: FakeBulk, storage: FakeBulk, tmp_path: Path
) -> None:
    storage.files["a"] = FileSpec(BODY)

    result = downloader(server).download(manifest(ManifestFile("Patient", storage.file_url("a"))), tmp_path)

    assert storage.seen == []  # never sent: neither the token nor the request
    assert (
        "not requested" in result.failures[0].reason and "--bulk-storage-origin" in result.failures[0].reason
    )


def test_an_allowed_storage_origin_gets_the_token(
    server: FakeBulk, storage: FakeBulk, tmp_path: Path
) -> None:
    storage.files["a"] = FileSpec(BODY)

    result = downloader(server, storage_origins=(storage.origin,)).download(
        manifest(ManifestFile("Patient", storage.file_url("a"), 50)), tmp_path
    )

    assert not result.failures
    assert storage.seen[0].auth == f"Bearer {TOKEN}"


def test_without_requires_access_token_no_origin_gets_the_token(
    server: FakeBulk, storage: FakeBulk, tmp_path: Path
) -> None:
    server.files["a"] = FileSpec(BODY)
    storage.files["b"] = FileSpec(BODY)
    m = manifest(
        ManifestFile("Patient", server.file_url("a")),
        ManifestFile("Patient", storage.file_url("b")),
        token=False,
    )

    result = downloader(server).download(m, tmp_path)

    assert not result.failures
    assert server.requests_to("/files/")[0].auth is None and storage.seen[0].auth is None


def test_a_redirect_to_another_origin_is_followed_without_the_token(
    server: FakeBulk, storage: FakeBulk, tmp_path: Path
) -> None:
    storage.files["signed"] = FileSpec(BODY)
    server.files["a"] = FileSpec(b"", redirect_to=storage.file_url("signed"))

    result = downloader(server).download(
        manifest(ManifestFile("Patient", server.file_url("a"), 50)), tmp_path
    )

    assert not result.failures
    assert server.requests_to("/files/")[0].auth == f"Bearer {TOKEN}"
    assert storage.seen[0].auth is None


def test_a_redirect_to_an_allowed_storage_origin_keeps_the_token(
    server: FakeBulk, storage: FakeBulk, tmp_path: Path
) -> None:
    storage.files["signed"] = FileSpec(BODY)
    server.files["a"] = FileSpec(b"", redirect_to=storage.file_url("signed"))

    downloader(server, storage_origins=(storage.origin,)).download(
        manifest(ManifestFile("Patient", server.file_url("a"))), tmp_path
    )

    assert storage.seen[0].auth == f"Bearer {TOKEN}"


def test_plain_http_files_on_a_remote_host_are_refused(server: FakeBulk, tmp_path: Path) -> None:
    m = manifest(ManifestFile("Patient", "http://storage.example.org/files/a"), token=False)

    result = downloader(server).download(m, tmp_path)

    assert "plain http" in result.failures[0].reason


@pytest.mark.parametrize(
    "bad", ["storage.example.org", "https://s.example.org/path", "https://u:p@s.example.org", "ftp://x"]
)
def test_a_storage_origin_must_be_an_origin(bad: str) -> None:
    with pytest.raises(ConfigError, match="not an origin"):
        parse_origin(bad)


def test_parse_origin_defaults_the_port() -> None:
    assert parse_origin("https://s.example.org") == ("https", "s.example.org", 443)
    assert parse_origin("https://S.example.org:8443/") == ("https", "s.example.org", 8443)


# -- helpers ---------------------------------------------------------------------------------------


def test_count_lines_counts_non_blank_lines_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(b'{"a":1}\n\n  \n{"b":' + b"2" * 600_000 + b'}\n{"c":3}')

    assert count_lines(path) == 3


def test_clear_own_files_removes_only_what_the_downloader_names(tmp_path: Path) -> None:
    for name in ["Patient.001.ndjson", "Observation.012.ndjson.part", "notes.txt", "Patient.ndjson"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "error").mkdir()
    (tmp_path / "error" / "OperationOutcome.001.ndjson").write_text("x")

    assert clear_own_files(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Patient.ndjson", "error", "notes.txt"]
