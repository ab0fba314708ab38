"""The AsyncAPI document of the public events: fresh, structurally valid AsyncAPI 3, true to schemas/."""

from __future__ import annotations

import inspect
import itertools
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from schemas import asyncapi, messages, subjects

ROOT = Path(__file__).resolve().parents[2]
PARAM = re.compile(r"\{([^{}]+)\}")
TOP_LEVEL = {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"}
COMPONENT_KINDS = {"schemas", "messages", "securitySchemes", "parameters", "channels", "operations"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(asyncapi.render())
    assert isinstance(loaded, dict)
    return loaded


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (``#/a/b``); fail the test if any step is missing."""
    assert ref.startswith("#/"), f"only local references are used, got {ref!r}"
    node: Any = doc
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# --- the checked-in copy --------------------------------------------------------------------
def test_checked_in_document_is_fresh() -> None:
    checked_in = asyncapi.PATH.read_text()
    assert checked_in == asyncapi.render(), (
        "schemas/asyncapi.yaml is stale: run `python -m schemas.asyncapi --write` and commit it"
    )


def test_command_prints_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "schemas.asyncapi"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out == asyncapi.render()
    target = tmp_path / "asyncapi.yaml"
    monkeypatch.setattr(asyncapi, "PATH", target)
    assert asyncapi.main(["--write"]) == 0
    assert target.read_text() == asyncapi.render()


def test_rendering_is_deterministic() -> None:
    assert asyncapi.render() == asyncapi.render()


# --- structurally valid AsyncAPI 3 ---------------------------------------------------------
def test_top_level(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc) <= TOP_LEVEL
    assert doc["info"]["title"] and re.fullmatch(r"\d+\.\d+\.\d+", doc["info"]["version"])
    assert doc["defaultContentType"] == "application/json"
    assert set(doc["components"]) <= COMPONENT_KINDS


def test_servers(doc: dict[str, Any]) -> None:
    assert doc["servers"]
    for name, server in doc["servers"].items():
        assert server["protocol"] == "nats", name
        assert "://" not in server["host"], f"{name}: AsyncAPI 3 host has no scheme"
        for variable in PARAM.findall(server["host"]):
            assert variable in server.get("variables", {}), f"{name}: variable {variable} undefined"
        for requirement in server.get("security", []):
            scheme = deref(doc, requirement)
            assert scheme["type"] in {
                "userPassword",
                "apiKey",
                "X509",
                "symmetricEncryption",
                "asymmetricEncryption",
                "httpApiKey",
                "http",
                "oauth2",
                "openIdConnect",
                "plain",
                "scramSha256",
                "scramSha512",
                "gssapi",
            }


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_channels_and_parameters(doc: dict[str, Any]) -> None:
    assert doc["channels"]
    for channel_id, channel in doc["channels"].items():
        address = channel["address"]
        declared = set(channel.get("parameters", {}))
        used = set(PARAM.findall(address))
        assert used == declared, f"{channel_id}: parameters {declared} but address {address} uses {used}"
        for name, ref_or_parameter in channel.get("parameters", {}).items():
            parameter = deref(doc, ref_or_parameter)
            assert set(parameter) <= {"enum", "default", "description", "examples", "location"}, name
            assert parameter["enum"], f"{channel_id}.{name}: a closed set of values"
        assert channel["messages"], channel_id
        for message in channel["messages"].values():
            assert "payload" in deref(doc, message)


def test_operations_reference_existing_channels_and_their_messages(doc: dict[str, Any]) -> None:
    assert doc["operations"]
    channel_ids = set(doc["channels"])
    covered = set()
    for op_id, op in doc["operations"].items():
        assert op["action"] == "receive", f"{op_id}: written from the consumer's viewpoint"
        ref = op["channel"]["$ref"]
        assert ref.startswith("#/channels/"), op_id
        channel_id = ref.removeprefix("#/channels/")
        assert channel_id in channel_ids, f"{op_id} references missing channel {channel_id}"
        covered.add(channel_id)
        for message_ref in op["messages"]:
            # AsyncAPI 3: an operation's messages are a subset of its channel's, referenced through it.
            assert message_ref["$ref"].startswith(f"{ref}/messages/"), f"{op_id}: {message_ref}"
            resolve(doc, message_ref["$ref"])
    assert covered == channel_ids, "every channel has an operation"


def test_every_message_payload_resolves_to_an_object_schema(doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        payload = deref(doc, message["payload"])
        assert payload["type"] == "object", name
        assert "type" in payload["required"], f"{name}: tagged by the `type` field"
        assert len(payload["properties"]["type"]["enum"]) == 1
        headers = deref(doc, message["headers"])
        assert headers["type"] == "object"
        for schema in itertools.chain([payload], payload["properties"].values()):
            for ref in refs(schema):
                resolve(doc, ref)


# --- true to schemas/ ---------------------------------------------------------------------
def public_structs() -> list[type[messages.Message]]:
    """Every message whose docstring says it is published on a public subject."""
    prefix = subjects.public_event("")
    return [
        obj
        for _, obj in inspect.getmembers(messages, inspect.isclass)
        if issubclass(obj, messages.Message) and obj is not messages.Message and prefix in (obj.__doc__ or "")
    ]


def test_every_public_message_is_documented(doc: dict[str, Any]) -> None:
    documented = set(doc["components"]["messages"])
    assert {m.__name__ for m in public_structs()} <= documented
    assert documented == {m.__name__ for m in asyncapi.PUBLIC_MESSAGES}


@pytest.mark.parametrize("struct", asyncapi.PUBLIC_MESSAGES, ids=lambda s: s.__name__)
def test_payload_schema_is_msgspecs_and_examples_decode(doc: dict[str, Any], struct: type[messages.Message]) -> None:
    message = doc["components"]["messages"][struct.__name__]
    payload = deref(doc, message["payload"])
    _, components = msgspec.json.schema_components([struct], ref_template=asyncapi.SCHEMA_REF)
    assert payload == components[struct.__name__]
    assert payload["properties"]["type"]["enum"] == [struct.__struct_config__.tag]
    assert message["name"] == struct.__struct_config__.tag
    assert message["examples"], "every message has an example"
    for example in message["examples"]:
        data = msgspec.json.encode(example["payload"])
        assert isinstance(messages.decode(data, struct), struct)


def expand(address: str, parameters: dict[str, Any]) -> set[str]:
    names = PARAM.findall(address)
    values = [parameters[n]["enum"] for n in names]
    return {address.format(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)}


def test_addresses_are_the_subjects_the_services_publish(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    cluster = expand(channels["clusterEvents"]["address"], channels["clusterEvents"]["parameters"])
    kinds = typing.get_args(typing.get_type_hints(messages.ClusterEvent)["kind"])
    assert cluster == {subjects.public_event(f"cluster.{k}") for k in kinds}

    phases = {p.lower() for p in typing.get_args(messages.Phase)} | {"deleted"}
    workloads = expand(channels["workloadPhases"]["address"], channels["workloadPhases"]["parameters"])
    assert set(asyncapi.WORKLOAD_PHASES) == phases, "documented phases follow the schemas"
    assert workloads == {
        subjects.public_event(f"{k}.{p}") for k in typing.get_args(messages.WorkloadKind) for p in phases
    }

    assert channels["commandFailures"]["address"] == subjects.public_event("command.failed")
    assert channels["projectMembers"]["address"] == subjects.MEMBERSHIP_CHANGED

    prefix = subjects.PUBLIC_EVENTS_ANY.removesuffix(">")
    for channel in channels.values():
        assert channel["address"].startswith(prefix), "public events live under tether.events.>"


def test_channel_messages_match_what_is_published(doc: dict[str, Any]) -> None:
    by_channel = {cid: set(c["messages"]) for cid, c in doc["channels"].items()}
    assert by_channel == {
        "clusterEvents": {"ClusterEvent"},
        "workloadPhases": {"WorkloadEvent"},
        "commandFailures": {"WorkloadEvent"},
        "projectMembers": {"MembershipChanged"},
        "messagesDropped": {"MessageDropped"},
    }
