"""The provider as Airflow sees it: entry point, provider info, connection hook, import cost."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys

import pytest
from airflow.sdk import Connection

from airflow_plugin.get_provider_info import get_provider_info
from airflow_plugin.hooks.storage import K2eStorageHook, options_from_connection
from tests.airflow.conftest import airflow


def test_airflow_lists_the_provider():
    proc = airflow("providers", "list", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout[proc.stdout.index('[{"') :])
    (k2e,) = [p for p in listed if p["package_name"] == "k2e"]
    assert k2e["version"] == importlib.metadata.version("k2e")


def test_provider_info_names_modules_that_hold_the_operators_and_hook():
    info = get_provider_info()
    (operators,) = info["operators"]
    module = importlib.import_module(operators["python-modules"][0])
    for name in (
        "K2eConvertOperator",
        "K2eTrainOperator",
        "K2eEvaluateOperator",
        "K2eExportOperator",
        "K2eJobOperator",
    ):
        assert getattr(module, name).step
    (connection,) = info["connection-types"]
    module_name, _, class_name = connection["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module_name), class_name)
    assert hook is K2eStorageHook and hook.conn_type == connection["connection-type"]


def test_operators_import_without_tensorflow_or_the_core_job():
    code = (
        "import sys, airflow.sdk, airflow_plugin.operators.k2e, airflow_plugin.hooks.storage; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'k2e_core.steps.job') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "conn, expected",
    [
        (
            Connection(
                conn_id="a",
                conn_type="aws",
                login="AKIAEXAMPLEKEY",
                password="aws-secret-value",
                extra=json.dumps(
                    {
                        "endpoint_url": "http://127.0.0.1:9000",
                        "region_name": "eu-west-1",
                        "aws_session_token": "session-token-value",
                    }
                ),
            ),
            {
                "s3": {
                    "key": "AKIAEXAMPLEKEY",
                    "secret": "aws-secret-value",
                    "token": "session-token-value",
                    "client_kwargs": {
                        "endpoint_url": "http://127.0.0.1:9000",
                        "region_name": "eu-west-1",
                    },
                }
            },
        ),
        (
            Connection(
                conn_id="g",
                conn_type="google_cloud_platform",
                extra=json.dumps(
                    {"keyfile_dict": json.dumps({"type": "service_account"}), "project": "ml-prod"}
                ),
            ),
            {"gcs": {"token": {"type": "service_account"}, "project": "ml-prod"}},
        ),
        (
            Connection(
                conn_id="f",
                conn_type="k2e_storage",
                extra=json.dumps({"s3": {"anon": True}, "gcs": {"project": "p"}}),
            ),
            {"s3": {"anon": True}, "gcs": {"project": "p"}},
        ),
    ],
    ids=["aws", "gcp", "k2e_storage"],
)
def test_connections_become_fsspec_options(conn, expected):
    assert options_from_connection(conn) == expected


def test_a_k2e_storage_connection_whose_extra_is_not_per_protocol_is_refused():
    conn = Connection(conn_id="f", conn_type="k2e_storage", extra=json.dumps({"anon": True}))
    with pytest.raises(ValueError, match="extra must map a protocol to its fsspec options"):
        options_from_connection(conn)


def test_the_extra_links_and_the_k2e_config_section_are_registered():
    """Airflow validates provider info against its schema, lists the links, and knows the
    `[k2e]` options (and their defaults) that the links' templates come from."""
    import os

    import jsonschema

    schema_path = os.path.join(
        os.path.dirname(importlib.import_module("airflow").__file__), "provider_info.schema.json"
    )
    with open(schema_path) as f:
        jsonschema.validate(get_provider_info(), json.load(f))
    proc = airflow("providers", "links", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    links = {
        entry["extra_link_class_name"]
        for entry in json.loads(proc.stdout[proc.stdout.index('[{"') :])
    }
    assert {
        "airflow_plugin.links.k2e.K2eTensorBoardLink",
        "airflow_plugin.links.k2e.K2eModelLink",
        "airflow_plugin.links.k2e.K2eReportLink",
    } <= links
    proc = airflow("config", "list", "--section", "k2e", "--include-descriptions")
    assert proc.returncode == 0, proc.stderr
    assert "tensorboard_url" in proc.stdout and "{model_dir}" in proc.stdout


def test_the_storage_connection_form_asks_for_what_the_hook_reads():
    """The connection form (Admin > Connections) shows the k2e_storage fields, hides the
    generic ones the hook ignores, and the secret is a password field."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    fields = {
        name.removeprefix("extra__k2e_storage__"): widget.field
        for name, widget in manager.connection_form_widgets.items()
        if name.startswith("extra__k2e_storage__")
    }
    assert list(fields) == ["protocol", "endpoint_url", "region_name", "options"]
    assert fields["protocol"]["value"] == "s3"
    assert all(f["description"] and f["schema"]["title"] for f in fields.values())
    behaviour = manager.field_behaviours["k2e_storage"]
    assert set(behaviour["hidden_fields"]) == {"host", "schema", "port"}
    assert behaviour["relabeling"]["password"] == "Secret"


@pytest.mark.parametrize("prefix", ["", "extra__k2e_storage__"], ids=["fields", "prefixed"])
def test_a_connection_filled_in_with_the_form_becomes_fsspec_options(prefix):
    extra = {"protocol": "s3", "endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}
    extra["options"] = '{"config_kwargs": {"retries": {"max_attempts": 1}}}'
    conn = Connection(
        conn_id="form",
        conn_type="k2e_storage",
        login="AKIAFORMKEY",
        password="form-secret",
        extra=json.dumps({prefix + k: v for k, v in extra.items()}),
    )
    assert options_from_connection(conn) == {
        "s3": {
            "key": "AKIAFORMKEY",
            "secret": "form-secret",
            "endpoint_url": "http://127.0.0.1:9000",
            "client_kwargs": {"region_name": "eu-west-1"},
            "config_kwargs": {"retries": {"max_attempts": 1}},
        }
    }
    bad = Connection(
        conn_id="form",
        conn_type="k2e_storage",
        extra=json.dumps({"protocol": "s3", "options": "{"}),
    )
    with pytest.raises(ValueError, match="field 'options' is not JSON"):
        options_from_connection(bad)


def test_the_connection_test_button_reaches_the_store_or_says_why_not(s3, s3_server, monkeypatch):
    def hook(endpoint):
        extra = {
            "protocol": "s3",
            "endpoint_url": endpoint,
            "options": json.dumps({"config_kwargs": {"retries": {"max_attempts": 1}}}),
        }
        conn = {"conn_type": "k2e_storage", "login": "k", "password": "s", "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_K2E_FORM_TEST", json.dumps(conn))
        return K2eStorageHook("k2e_form_test")

    ok, message = hook(s3_server.endpoint).test_connection()
    assert (ok, message) == (True, "s3: 1 bucket(s) listed")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    ok, message = hook(closed).test_connection()
    assert not ok and "\n" not in message and "127.0.0.1" in message, message
