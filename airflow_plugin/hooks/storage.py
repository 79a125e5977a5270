"""Storage credentials from an Airflow connection, as the k2e core's fsspec options.

    aws / s3                  login, password -> key, secret; extra: endpoint_url (or host),
                              region_name, aws_session_token
    google_cloud_platform     extra: keyfile_dict or key_path -> token; project
    k2e_storage (any other)   extra: {"<protocol>": {fsspec options}}, e.g. {"s3": {...}}

Every secret is registered with Airflow's log masker before it is used.
"""

from __future__ import annotations

import json

from airflow.sdk import BaseHook


class K2eStorageHook(BaseHook):
    conn_name_attr = "storage_conn_id"
    default_conn_name = "k2e_storage_default"
    conn_type = "k2e_storage"
    hook_name = "k2e storage (fsspec options)"

    def __init__(self, storage_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.storage_conn_id = storage_conn_id

    def storage_options(self) -> dict[str, dict]:
        """{protocol: fsspec options} for the connection."""
        return options_from_connection(self.get_connection(self.storage_conn_id))


def options_from_connection(conn) -> dict[str, dict]:
    from airflow.sdk.log import mask_secret

    extra = conn.extra_dejson or {}
    if conn.conn_type in ("aws", "s3"):
        s3 = {
            k: v
            for k, v in {
                "key": conn.login,
                "secret": conn.password,
                "token": extra.get("aws_session_token"),
            }.items()
            if v
        }
        client = {
            k: v
            for k, v in {
                "endpoint_url": extra.get("endpoint_url") or conn.host,
                "region_name": extra.get("region_name"),
            }.items()
            if v
        }
        if client:
            s3["client_kwargs"] = client
        options = {"s3": s3}
    elif conn.conn_type in ("google_cloud_platform", "gcs"):
        keyfile = _gcp_extra(extra, "keyfile_dict")
        token = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
        gcs = {
            "token": token or _gcp_extra(extra, "key_path"),
            "project": _gcp_extra(extra, "project"),
        }
        options = {"gcs": {k: v for k, v in gcs.items() if v}}
    else:
        bad = [k for k, v in extra.items() if not isinstance(v, dict)]
        if bad:
            raise ValueError(
                f"connection {conn.conn_id!r}: extra must map a protocol to its fsspec "
                f'options, e.g. {{"s3": {{"key": ...}}}}; {bad[0]!r} is not a mapping'
            )
        options = extra
    for protocol_options in options.values():
        for name, value in protocol_options.items():
            if name in ("key", "secret", "token", "password") and isinstance(value, (str, dict)):
                mask_secret(value)
    return options


def _gcp_extra(extra: dict, name: str):
    return extra.get(name) or extra.get(f"extra__google_cloud_platform__{name}")
