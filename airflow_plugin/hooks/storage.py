"""Storage credentials from an Airflow connection, as the k2e core's fsspec options.

    aws / s3                  login, password -> key, secret; extra: endpoint_url (or host),
                              region_name, aws_session_token
    google_cloud_platform     extra: keyfile_dict or key_path -> token; project
    k2e_storage               the connection form: protocol, endpoint URL, region, key
                              (login), secret (password), further fsspec options as JSON;
                              or extra: {"<protocol>": {fsspec options}}, e.g. {"s3": {...}}

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

    def test_connection(self) -> tuple[bool, str]:
        """The Test button: lists the store's buckets with the connection's options."""
        import fsspec

        try:
            options = self.storage_options()
            protocol = next(iter(options), None)
            if protocol is None:
                return False, "the connection names no protocol: set the form's Protocol field"
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options[protocol])
            buckets = fs.ls("", detail=False)
        except Exception as e:  # the button shows the line; nothing is raised to the UI
            line = str(e).splitlines()[0] if str(e) else type(e).__name__
            return False, f"{type(e).__name__}: {line}"
        return True, f"{protocol}: {len(buckets)} bucket(s) listed"


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
    elif isinstance((form := _form_extra(extra)).get("protocol"), str):  # filled-in form
        options = {form["protocol"]: _form_options(conn, form)}
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


def _form_extra(extra: dict) -> dict:
    """The form's fields, under their names or as older UIs prefix them."""
    prefix = "extra__k2e_storage__"
    return {k.removeprefix(prefix): v for k, v in extra.items() if v not in (None, "")}


def _form_options(conn, extra: dict) -> dict:
    further = extra.get("options") or {}
    if isinstance(further, str):
        try:
            further = json.loads(further)
        except ValueError as e:
            raise ValueError(
                f"connection {conn.conn_id!r}: field 'options' is not JSON ({e}); write an "
                'object of fsspec options, e.g. {"anon": true}'
            ) from None
    options = {
        "key": conn.login,
        "secret": conn.password,
        "endpoint_url": extra.get("endpoint_url"),
        **(
            {"client_kwargs": {"region_name": extra["region_name"]}}
            if extra.get("region_name")
            else {}
        ),
        **further,
    }
    return {k: v for k, v in options.items() if v}
