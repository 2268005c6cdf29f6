"""A separate write target (issue 10, deliverable 5): read from one FHIR server, write the ResearchStudy,
ResearchSubjects, Provenance and Device to another.

Reference forms (absolute URL or business identifier), the search key built from them, a patient without
the identifier, the CLI's ``--write-*`` flags and ``[writeback]`` in site.toml, and that each server gets
its own credentials only.
"""

from __future__ import annotations

import json
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from faultserver import FaultServer
from fhirdata import baseline, for_patient
from responses import matchers

from fhir_adapter.check import run_check
from fhir_adapter.cli import build_parser, main, screen_settings
from fhir_adapter.client.auth import DEFAULT_SCOPE, READ_SCOPE
from fhir_adapter.client.factory import open_client
from fhir_adapter.client.http import FhirClient
from fhir_adapter.config.loader import load_mappings, load_trials
from fhir_adapter.config.types import Mappings
from fhir_adapter.errors import ConfigError, UsageError
from fhir_adapter.model import Resource
from fhir_adapter.screening import Screener
from fhir_adapter.settings import AuthSettings, ServerSettings, WriteTarget
from fhir_adapter.sync import run as sync_run
from fhir_adapter.sync.config import load_site_config
from fhir_adapter.writeback.references import (
    LOCAL,
    PatientNotReferable,
    Referencing,
    identifier_condition,
    referencing,
    subject_token,
)
from fhir_adapter.writeback.resources import (
    PROVENANCE_TAG_SYSTEM,
    SUBJECT_ID_SYSTEM,
    build_research_subject,
    content_of,
    stamped,
)
from fhir_adapter.writeback.subjects import Action, WriteBack

from .faultrun import AS_OF
from .test_writeback_unit import (
    DEVICE_REF,
    NOW,
    STUDY_REF,
    VERSIONS,
    body,
    on_server,
    provenance_of,
    result,
    searchset,
)

WRITE = "https://research.example.org/fhir"
EHR = "https://ehr.example.org/fhir/"
MRN = "http://hospital.example.org/mrn"
STUDY = "NCT05495321"
ABSOLUTE = Referencing(EHR)
BY_MRN = Referencing(EHR, "identifier", MRN)
Res = dict[str, Any]


def created(resource_type: str, rid: str, version: str = "1") -> dict[str, Any]:
    """A 201 from the write server, echoing what was sent as stored."""

    def reply(request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)
        location = f"{WRITE}/{resource_type}/{rid}/_history/{version}"
        return (
            201,
            {"ETag": f'W/"{version}"', "Location": location},
            json.dumps(on_server(sent, rid, version)),
        )

    return {"callback": reply}


def patient(*identifiers: Res) -> Res:
    return {"resourceType": "Patient", "id": "p1", "identifier": list(identifiers)}


def mrn(value: str, **extra: str) -> Res:
    return {"system": MRN, "value": value, **extra}


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(WRITE, sleep=lambda _: None, rng=random.Random(1))


def writeback(
    client: FhirClient, mappings: Mappings, refs: Referencing, *, dry_run: bool = False
) -> WriteBack:
    wb = WriteBack(
        client, mappings.trial, "2026.11.1+abc", "R4", dry_run=dry_run, clock=lambda: NOW, refs=refs
    )
    wb._study_ref = STUDY_REF
    wb._device_ref = DEVICE_REF
    return wb


def wanted(refs: Referencing, who: Res | None = None) -> Resource:
    link = refs.patient("Patient/p1", who)
    return build_research_subject(result(), STUDY, STUDY_REF, "R4", patient=link.reference, key=link.key)


def search(mocked: responses.RequestsMock, token: str, *resources: Res) -> None:
    mocked.get(
        f"{WRITE}/ResearchSubject",
        json=searchset(*resources),
        match=[matchers.query_param_matcher({"identifier": token, "_revinclude": "Provenance:target"})],
    )


ABSOLUTE_TOKEN = f"{SUBJECT_ID_SYSTEM}|{STUDY}:{EHR}Patient/p1"


# -- reference forms and keys -------------------------------------------------------------------------


def test_one_server_keeps_relative_references_and_the_identifier_it_always_had() -> None:
    link = LOCAL.patient("Patient/p1", None)
    assert (link.reference, link.key) == ({"reference": "Patient/p1"}, "p1")
    assert LOCAL.resource("Observation/o1/_history/5") == "Observation/o1/_history/5"
    subject = build_research_subject(result(), STUDY, STUDY_REF, "R4", patient=link.reference, key=link.key)
    assert subject == build_research_subject(result(), STUDY, STUDY_REF, "R4")  # unchanged on one server


def test_absolute_form_names_the_read_server_and_keys_the_subject_by_that_url() -> None:
    link = ABSOLUTE.patient("Patient/p1", None)
    assert link.reference == {"reference": "https://ehr.example.org/fhir/Patient/p1"}
    assert ABSOLUTE.resource("Observation/o1/_history/5") == f"{EHR}Observation/o1/_history/5"
    subject = wanted(ABSOLUTE)
    assert subject["individual"] == {"reference": f"{EHR}Patient/p1"}
    assert subject["identifier"] == [{"system": SUBJECT_ID_SYSTEM, "value": f"{STUDY}:{EHR}Patient/p1"}]


def test_identifier_form_refers_by_the_configured_system_and_keys_by_system_and_value() -> None:
    who = patient({"system": "urn:other", "value": "X9"}, mrn("M-1"))
    subject = wanted(BY_MRN, who)
    assert subject["individual"] == {"type": "Patient", "identifier": {"system": MRN, "value": "M-1"}}
    assert subject["identifier"][0]["value"] == f"{STUDY}:{MRN}|M-1"
    r5 = build_research_subject(
        result(), STUDY, STUDY_REF, "R5", **_link_kwargs(BY_MRN.patient("Patient/p1", who))
    )
    assert r5["subject"] == subject["individual"]


def _link_kwargs(link: Any) -> dict[str, Any]:
    return {"patient": link.reference, "key": link.key}


def test_an_old_identifier_of_the_system_is_not_used() -> None:
    who = patient(mrn("OLD-7", use="old"), mrn("M-2", use="usual"))
    assert BY_MRN.patient("Patient/p1", who).key == f"{MRN}|M-2"


@pytest.mark.parametrize(
    ("who", "why"),
    [
        (patient({"system": "urn:other", "value": "X9"}), "has no identifier with system"),
        (patient(mrn("OLD-7", use="old")), "has no identifier with system"),
        (patient(mrn("M-1"), mrn("M-2")), "has 2 different identifiers with system"),
        (None, "was not read"),
    ],
)
def test_a_patient_without_exactly_one_identifier_of_the_system_is_not_referable(
    who: Res | None, why: str
) -> None:
    with pytest.raises(PatientNotReferable) as excinfo:
        BY_MRN.patient("Patient/p1", who)
    message = str(excinfo.value)
    assert why in message and MRN in message and "Patient/p1" in message
    for value in ("X9", "OLD-7", "M-1", "M-2"):
        assert value not in message  # an MRN is patient data: never in a message


def test_search_token_escapes_and_the_if_none_exist_query_is_encoded() -> None:
    token = subject_token(SUBJECT_ID_SYSTEM, f"{STUDY}:{MRN}|A,1$2\\3")
    assert token == f"{SUBJECT_ID_SYSTEM}|{STUDY}:{MRN}\\|A\\,1\\$2\\\\3"
    assert (
        identifier_condition(f"{SUBJECT_ID_SYSTEM}|{STUDY}:p1")
        == f"identifier={SUBJECT_ID_SYSTEM}|{STUDY}:p1"
    )
    encoded = identifier_condition(subject_token(SUBJECT_ID_SYSTEM, f"{STUDY}:{MRN}|M 1&x+y%z#"))
    assert encoded.endswith("\\|M%201%26x%2By%25z%23")


def test_a_write_target_at_the_read_servers_base_is_one_server() -> None:
    target = WriteTarget(ServerSettings(EHR), "absolute")
    assert referencing(EHR, EHR, target) is LOCAL
    assert referencing(EHR, EHR, None) is LOCAL
    assert referencing(EHR, WRITE + "/", target) == ABSOLUTE


# -- write-back to a separate server ------------------------------------------------------------------


def test_separate_target_creates_by_the_absolute_key_and_cites_the_evidence_absolutely(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    search(mocked, ABSOLUTE_TOKEN)
    mocked.add_callback(
        responses.POST,
        f"{WRITE}/ResearchSubject",
        match=[matchers.header_matcher({"If-None-Exist": f"identifier={ABSOLUTE_TOKEN}"})],
        **created("ResearchSubject", "rs1"),
    )
    mocked.add_callback(responses.POST, f"{WRITE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings, ABSOLUTE).write(result(), VERSIONS)

    assert outcome.action is Action.CREATED
    assert content_of(body(mocked.calls[1])) == wanted(ABSOLUTE)
    provenance = body(mocked.calls[2])
    # The target, its tag and the agent live on the write server; the evidence on the read server.
    assert provenance["target"] == [{"reference": "ResearchSubject/rs1/_history/1"}]
    assert provenance["meta"]["tag"] == [
        {"system": PROVENANCE_TAG_SYSTEM, "code": "ResearchSubject/rs1/_history/1"}
    ]
    assert provenance["agent"][0]["who"] == {"reference": DEVICE_REF}
    assert sorted(e["what"]["reference"] for e in provenance["entity"]) == [
        f"{EHR}Condition/c1/_history/1",
        f"{EHR}Observation/o1/_history/5",
        f"{EHR}Observation/o2/_history/1",
        f"{EHR}Patient/p1/_history/2",
    ]


def test_separate_target_leaves_an_unchanged_subject_with_its_provenance_alone(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    current = on_server(stamped(wanted(ABSOLUTE)), version="3")
    search(mocked, ABSOLUTE_TOKEN, current, provenance_of(current))

    outcome = writeback(client, mappings, ABSOLUTE).write(result(), VERSIONS)

    assert outcome.action is Action.UNCHANGED and not outcome.provenance_repaired
    assert [c.request.method for c in mocked.calls] == ["GET"]


def test_separate_target_never_overwrites_a_status_a_coordinator_set(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    staff = on_server({**wanted(ABSOLUTE), "status": "on-study"}, version="4", keep_meta=False)
    search(mocked, ABSOLUTE_TOKEN, staff)

    outcome = writeback(client, mappings, ABSOLUTE).write(result(), VERSIONS)

    assert outcome.action is Action.STAFF and "on-study" in outcome.detail
    assert [c.request.method for c in mocked.calls] == ["GET"]


def test_separate_target_repairs_a_missing_provenance_under_the_versioned_tag(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    current = on_server(stamped(wanted(ABSOLUTE)), version="2")
    search(mocked, ABSOLUTE_TOKEN, current)
    tag = f"{PROVENANCE_TAG_SYSTEM}|ResearchSubject/rs1/_history/2"
    mocked.get(f"{WRITE}/Provenance", json=searchset(), match=[matchers.query_param_matcher({"_tag": tag})])
    mocked.add_callback(
        responses.POST,
        f"{WRITE}/Provenance",
        match=[matchers.header_matcher({"If-None-Exist": f"_tag={tag}"})],
        **created("Provenance", "pv2"),
    )

    outcome = writeback(client, mappings, ABSOLUTE).write(result(), VERSIONS)

    assert outcome.action is Action.UNCHANGED and outcome.provenance_repaired
    entities = {e["what"]["reference"] for e in body(mocked.calls[2])["entity"]}
    assert f"{EHR}Patient/p1/_history/2" in entities


def test_identifier_form_searches_and_creates_by_the_escaped_system_and_value(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    who = patient(mrn("A|1,2"))
    token = f"{SUBJECT_ID_SYSTEM}|{STUDY}:{MRN}\\|A\\|1\\,2"
    search(mocked, token)
    mocked.add_callback(
        responses.POST,
        f"{WRITE}/ResearchSubject",
        match=[matchers.header_matcher({"If-None-Exist": f"identifier={token}"})],
        **created("ResearchSubject", "rs1"),
    )
    mocked.add_callback(responses.POST, f"{WRITE}/Provenance", **created("Provenance", "pv1"))

    outcome = writeback(client, mappings, BY_MRN).write(result(), VERSIONS, who)

    assert outcome.action is Action.CREATED
    sent = body(mocked.calls[1])
    assert sent["individual"] == {"type": "Patient", "identifier": {"system": MRN, "value": "A|1,2"}}
    assert sent["identifier"][0]["value"] == f"{STUDY}:{MRN}|A|1,2"


def test_a_candidate_without_the_identifier_is_a_failed_write_and_nothing_is_sent(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    outcome = writeback(client, mappings, BY_MRN).write(
        result(), VERSIONS, patient({"system": "urn:x", "value": "Q"})
    )

    assert outcome.action is Action.FAILED
    assert f"has no identifier with system {MRN}" in outcome.detail
    assert len(mocked.calls) == 0  # never a guess: no search by another key, no write


def test_a_non_candidate_without_the_identifier_is_just_not_a_candidate(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    from dataclasses import replace

    outcome = writeback(client, mappings, BY_MRN).write(
        replace(result(), gate_met=False), VERSIONS, patient()
    )

    assert outcome.action is Action.NOT_CANDIDATE
    assert len(mocked.calls) == 0


def test_messages_about_an_identifier_keyed_subject_name_the_patient_not_the_mrn(
    mocked: responses.RequestsMock, client: FhirClient, mappings: Mappings
) -> None:
    who = patient(mrn("MRN-SECRET-77"))
    token = f"{SUBJECT_ID_SYSTEM}|{STUDY}:{MRN}\\|MRN-SECRET-77"
    twin = on_server(stamped(wanted(BY_MRN, who)))
    search(mocked, token, twin, {**twin, "id": "rs2"})

    outcome = writeback(client, mappings, BY_MRN).write(result(), VERSIONS, who)

    assert outcome.action is Action.FAILED
    assert "2 ResearchSubjects share identifier of Patient/p1" in outcome.detail
    assert "MRN-SECRET-77" not in outcome.describe()


# -- the command line ---------------------------------------------------------------------------------


def args(*argv: str) -> Any:
    return build_parser().parse_args(["screen", "--server", EHR, "--as-of", AS_OF, *argv])


def test_write_flags_are_the_read_flags_with_a_prefix() -> None:
    parser = build_parser()
    screen = next(a for a in parser._actions if a.dest == "command").choices["screen"]  # type: ignore[union-attr]
    groups = {g.title: g for g in screen._action_groups}
    read = next(g for t, g in groups.items() if t and t.startswith("FHIR server"))
    write = next(g for t, g in groups.items() if t and t.startswith("write target"))
    read_flags = {o for a in read._group_actions for o in a.option_strings}
    write_flags = {o for a in write._group_actions for o in a.option_strings}
    assert {"--server", "--auth", "--token", "--smart-key", "--ca-bundle", "--allow-plain-http"} <= read_flags
    # --concurrency is the read side's alone: write-back goes one patient at a time.
    assert write_flags == {f"--write-{f[2:]}" for f in read_flags - {"--concurrency"}} | {
        "--write-patient-ref",
        "--write-patient-identifier-system",
    }


def test_write_server_options_build_a_write_target_with_its_own_settings(tmp_path: Path) -> None:
    bundle = tmp_path / "research-ca.pem"
    bundle.write_text("x", encoding="utf-8")
    settings = screen_settings(
        args(
            "--auth", "bearer", "--write-back",
            "--write-server", WRITE, "--write-auth", "basic", "--write-basic-user", "prescreen",
            "--write-ca-bundle", str(bundle), "--write-max-pages", "7",
            "--write-patient-ref", "identifier", "--write-patient-identifier-system", MRN,
        )
    )  # fmt: skip
    target = settings.write_target
    assert target is not None
    assert (target.server.url, target.patient_reference, target.identifier_system) == (
        WRITE,
        "identifier",
        MRN,
    )
    auth = target.server.auth
    assert (auth.method, auth.basic_user, auth.basic_password) == (
        "basic",
        "prescreen",
        "env:FHIR_WRITE_PASSWORD",
    )
    assert auth.token == "env:FHIR_WRITE_TOKEN"  # never the read server's variable by default
    assert (target.server.ca_bundle, target.server.max_pages) == (bundle, 7)
    assert target.server.name("token") == "--write-token" and target.server.writes
    assert settings.server is not None
    assert settings.server.auth.method == "bearer" and settings.server.ca_bundle is None
    assert not settings.server.writes  # the read server is asked for read scopes only


def test_a_system_alone_chooses_the_identifier_form() -> None:
    target = screen_settings(
        args("--write-server", WRITE, "--write-patient-identifier-system", MRN)
    ).write_target
    assert target is not None and target.patient_reference == "identifier"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--write-server", WRITE, "--write-patient-ref", "identifier"), "needs --write-patient-identifier-system"),
        (("--write-server", WRITE, "--write-patient-ref", "absolute", "--write-patient-identifier-system", MRN), "goes with"),
        (("--write-server", WRITE, "--write-patient-identifier-system", "mrn"), "not an absolute URI"),
        (("--write-patient-ref", "identifier"), "need --write-server"),
        (("--write-server", WRITE, "--write-max-pages", "0"), "--write-max-pages must be at least 1"),
    ],
)  # fmt: skip
def test_bad_write_options_are_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        screen_settings(args(*argv))
    assert message in str(excinfo.value)


def test_write_server_needs_a_server_to_read_from(tmp_path: Path) -> None:
    parsed = build_parser().parse_args(["screen", str(tmp_path), "--write-server", WRITE])
    with pytest.raises(UsageError, match="--write-server needs --server"):
        screen_settings(parsed)


def test_a_literal_secret_on_the_write_flags_is_refused_and_never_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FaultServer() as ehr:
        code = main(
            [
                "screen", "--server", ehr.base, "--as-of", AS_OF, "--out", str(tmp_path / "r.json"),
                "--write-server", WRITE, "--write-auth", "bearer", "--write-token", "s3cr3t-literal-token",
            ]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "--write-token: must be a secret reference" in err
    assert "s3cr3t" not in err


def _smart(tmp_path: Path, writes: bool) -> ServerSettings:
    key = tmp_path / "key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    auth = AuthSettings(
        method="smart",
        smart_client_id="c",
        smart_key=f"file:{key}",
        smart_alg="ES384",
        smart_token_url="https://auth.example.org/token",
    )
    return ServerSettings(EHR, auth=auth, writes=writes)


def test_a_read_server_with_a_separate_write_target_is_asked_for_read_scopes_only(tmp_path: Path) -> None:
    with (
        open_client(_smart(tmp_path, writes=False)) as read,
        open_client(_smart(tmp_path, writes=True)) as write,
    ):
        assert read.auth.scope == READ_SCOPE  # type: ignore[union-attr]
        assert write.auth.scope == DEFAULT_SCOPE  # type: ignore[union-attr]
        assert read.auth is not write.auth


# -- site.toml [writeback] ----------------------------------------------------------------------------

SITE = """\
[server]
url = "https://ehr.example.org/fhir"

[state]
path = "state/state.sqlite"
"""


def site(tmp_path: Path, writeback: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE + "\n[writeback]\n" + textwrap.dedent(writeback), encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_site_config(path)
    return str(excinfo.value)


def test_the_writeback_table_builds_a_write_target(tmp_path: Path) -> None:
    path = site(
        tmp_path,
        f"""\
        url = "{WRITE}"
        ca_bundle = "research-ca.pem"
        timeout_seconds = 20
        max_pages = 9
        patient_reference = "identifier"
        patient_identifier_system = "{MRN}"

        [writeback.auth]
        type = "bearer"
        token = "file:/run/secrets/research-token"
        """,
    )
    config = load_site_config(path)
    target = config.write_target
    assert target is not None
    assert (target.server.url, target.patient_reference, target.identifier_system) == (
        WRITE,
        "identifier",
        MRN,
    )
    assert (target.server.auth.method, target.server.auth.token) == (
        "bearer",
        "file:/run/secrets/research-token",
    )
    assert target.server.ca_bundle == tmp_path / "research-ca.pem"  # relative to site.toml
    assert (target.server.timeout, target.server.max_pages) == (20.0, 9)
    assert target.server.name("token") == "writeback.auth.token"
    assert not config.server.writes and config.server.auth.method == "none"


def test_the_writeback_table_defaults_to_absolute_references_and_its_own_secret_variables(
    tmp_path: Path,
) -> None:
    path = site(tmp_path, f'url = "{WRITE}"\n[writeback.auth]\ntype = "bearer"\n')
    target = load_site_config(path).write_target
    assert target is not None and target.patient_reference == "absolute"
    assert target.server.auth.token == "env:FHIR_WRITE_TOKEN"
    assert load_site_config(site(tmp_path, f'url = "{WRITE}"\n')).write_target is not None


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (f'url = "{WRITE}"\ntimeout_second = 5\n', "writeback", "'timeout_second' was unexpected"),
        (f'url = "{WRITE}"\ngroup = "g1"\n', "writeback", "'group' was unexpected"),
        (f'url = "{WRITE}"\n[writeback.auth]\ntype = "bearer"\ntoken = "abc123"\n', "writeback.auth.token", "env:VARIABLE or file:/path"),
        (f'url = "{WRITE}"\n[writeback.auth]\ntype = "bearer"\ntokn = "env:X"\n', "writeback.auth", "'tokn' was unexpected"),
        (f'url = "{WRITE}"\npatient_reference = "mrn"\n', "writeback.patient_reference", "is not one of"),
        (f'url = "{WRITE}"\npatient_identifier_system = "mrn"\n', "writeback.patient_identifier_system", "does not match"),
        (f'url = "{WRITE}"\npatient_reference = "identifier"\n', "writeback.patient_identifier_system", "needed with"),
        ('timeout_seconds = 5\n', "writeback", "'url' is a required property"),
        ('url = "research.example.org"\n', "writeback.url", "does not match"),
    ],
)  # fmt: skip
def test_a_bad_writeback_table_names_the_file_and_the_key(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    path = site(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert says in message
    assert "abc123" not in message


def test_an_unknown_server_key_still_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE.replace("[server]\n", "[server]\ntimout_seconds = 3\n"), encoding="utf-8")
    message = config_error(path)
    assert message.startswith(f"{path}: server: ") and "'timout_seconds' was unexpected" in message
    assert "not allowed" in message


def test_an_unset_write_token_names_the_file_and_the_writeback_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FHIR_WRITE_TOKEN", raising=False)
    config = load_site_config(site(tmp_path, f'url = "{WRITE}"\n[writeback.auth]\ntype = "bearer"\n'))
    with pytest.raises(ConfigError) as excinfo:
        sync_run.client_for(config, "writeback")
    assert str(excinfo.value).startswith(f"{config.path}: writeback.auth.token: ")


# -- two servers, two sets of credentials -------------------------------------------------------------

READ_TOKEN = "read-tok-4471"
WRITE_TOKEN = "write-tok-9902"


def load(server: FaultServer, *pids: str) -> None:
    """Candidates, each with an MRN ``M-<id>``."""
    for pid in pids:
        resources = for_patient(baseline(), pid)
        for r in resources:
            if r["resourceType"] == "Patient":
                r["identifier"] = [mrn(f"M-{pid}")]
        server.store.put(*resources)


def bearer(request: Any) -> str | None:
    return {k.lower(): v for k, v in request.headers.items()}.get("authorization")


def test_each_server_gets_its_own_token_and_only_the_write_server_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READ_TOK", READ_TOKEN)
    monkeypatch.setenv("WRITE_TOK", WRITE_TOKEN)
    with FaultServer() as ehr, FaultServer() as research:
        load(ehr, "p1", "p2")
        argv = [
            "screen", "--server", ehr.base, "--as-of", AS_OF, "--out", str(tmp_path / "r.json"), "--write-back",
            "--auth", "bearer", "--token", "env:READ_TOK",
            "--write-server", research.base, "--write-auth", "bearer", "--write-token", "env:WRITE_TOK",
        ]  # fmt: skip
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, err[-2000:]
        assert ehr.requests and research.requests
        assert {bearer(r) for r in ehr.requests} == {f"Bearer {READ_TOKEN}"}
        assert {bearer(r) for r in research.requests} == {f"Bearer {WRITE_TOKEN}"}
        assert {r.method for r in ehr.requests} == {"GET"}  # nothing is written to the read server
        subjects = research.store.all("ResearchSubject")
        assert sorted(s["individual"]["reference"] for s in subjects) == [
            f"{ehr.base}/Patient/p1",
            f"{ehr.base}/Patient/p2",
        ]
        assert research.store.all("ResearchStudy") and research.store.all("Device")
        assert len(research.store.all("Provenance")) == 2
        assert "Write target: FHIR R4 server" in err and "created 2" in err
        # "in all" is both servers' requests: the write target's are part of the run's cost
        assert f"Requests sent: {len(ehr.requests) + len(research.requests)} in all" in err

        # The second run finds what the first wrote, by the same keys: nothing changes.
        versions = sorted((s["id"], s["meta"]["versionId"]) for s in research.store.all("ResearchSubject"))
        assert main(argv) == 0
        assert "created 0, updated 0, unchanged 2" in capsys.readouterr().err
        assert (
            sorted((s["id"], s["meta"]["versionId"]) for s in research.store.all("ResearchSubject"))
            == versions
        )
        assert len(research.store.all("Provenance")) == 2


def test_no_read_credentials_reach_a_write_server_configured_without_auth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READ_TOK", READ_TOKEN)
    with FaultServer() as ehr, FaultServer() as research:
        load(ehr, "p1")
        code = main(
            [
                "screen", "--server", ehr.base, "--as-of", AS_OF, "--out", str(tmp_path / "r.json"),
                "--auth", "bearer", "--token", "env:READ_TOK", "--write-back", "--write-server", research.base,
                "--write-patient-identifier-system", MRN,
            ]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err[-2000:]
        assert research.requests and {bearer(r) for r in research.requests} == {None}
        (subject,) = research.store.all("ResearchSubject")
        assert subject["individual"] == {"type": "Patient", "identifier": mrn("M-p1")}


def test_a_candidate_without_the_identifier_is_that_patients_error_and_the_others_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer() as ehr, FaultServer() as research:
        load(ehr, "p1")
        ehr.store.put(*for_patient(baseline(), "p2"))  # no MRN
        out = tmp_path / "r.json"
        code = main(
            [
                "screen", "--server", ehr.base, "--as-of", AS_OF, "--out", str(out), "--write-back",
                "--write-server", research.base, "--write-patient-identifier-system", MRN,
            ]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 3, err[-2000:]
        assert len(research.store.all("ResearchSubject")) == 1
        errors = json.loads(out.read_text())["errors"]
        assert [e["resource"] for e in errors] == ["Patient/p2"]
        assert f"has no identifier with system {MRN}" in errors[0]["reason"]


def test_sync_with_a_writeback_table_writes_to_that_server_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer() as ehr, FaultServer() as research:
        load(ehr, "p1", "p2")
        config = tmp_path / "site.toml"
        config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                url = "{ehr.base}"
                [writeback]
                url = "{research.base}"
                [study]
                as_of = "{AS_OF}"
                [state]
                path = "state/state.sqlite"
                """
            ),
            encoding="utf-8",
        )
        assert main(["sync", "--config", str(config)]) == 0, capsys.readouterr().err[-2000:]
        assert {r.method for r in ehr.requests} == {"GET"}
        assert len(research.store.all("ResearchSubject")) == 2
        manifest = json.loads(next((tmp_path / "state" / "runs").glob("run-*.json")).read_text())
        assert manifest["writeServer"] == research.base
        assert main(["sync", "--config", str(config), "--full"]) == 0
        out = capsys.readouterr().out
        assert "written 0, unchanged 2" in out


def test_check_reports_the_write_target_in_its_own_section() -> None:
    with FaultServer() as ehr, FaultServer() as research:
        screener = Screener(load_trials([]), NOW.date())
        report = run_check(
            ServerSettings(ehr.base, writes=False),
            screener,
            10,
            write_target=WriteTarget(ServerSettings(research.base)),
        )
        areas = {f.area for f in report.findings}
        assert "write target" in areas and "write" not in areas  # the read server is not written
        target = {f.what: f.status for f in report.findings if f.area == "write target"}
        assert target["reach the write server"] == "ok"
        assert target["ResearchSubject?identifier="] == "supported"
        assert target["Provenance?_tag="] == "supported"
        assert report.to_json()["writeServer"] == research.base
        assert not [r for r in research.requests if r.method != "GET"]  # check never writes
