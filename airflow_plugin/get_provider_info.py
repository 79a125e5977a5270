"""What `airflow providers list` and the connection form learn about k2e."""


def get_provider_info() -> dict:
    return {
        "package-name": "k2e",
        "name": "k2e",
        "description": "Train Keras models as TensorFlow Estimators and publish SavedModels: "
        "operators for convert, train, evaluate, export and whole jobs.",
        "integrations": [{"integration-name": "k2e", "tags": ["software"]}],
        "operators": [
            {"integration-name": "k2e", "python-modules": ["airflow_plugin.operators.k2e"]}
        ],
        "hooks": [{"integration-name": "k2e", "python-modules": ["airflow_plugin.hooks.storage"]}],
        "triggers": [
            {"integration-name": "k2e", "python-modules": ["airflow_plugin.triggers.tfjob"]}
        ],
        "connection-types": [
            {
                "connection-type": "k2e_storage",
                "hook-class-name": "airflow_plugin.hooks.storage.K2eStorageHook",
                "hook-name": "k2e storage (fsspec options)",
                "conn-fields": {
                    "protocol": _field(
                        "Protocol", "fsspec protocol the credentials are for: s3, gcs, ...", "s3"
                    ),
                    "endpoint_url": _field(
                        "Endpoint URL", "S3-compatible endpoint (MinIO, Ceph); empty for AWS"
                    ),
                    "region_name": _field("Region", "e.g. eu-west-1"),
                    "options": _field(
                        "Further options (JSON)",
                        'Other fsspec options of the protocol, e.g. {"anon": true}',
                    ),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port"],
                    "relabeling": {"login": "Key (access key id)", "password": "Secret"},
                    "placeholders": {
                        "login": "AKIA...",
                        "endpoint_url": "https://minio.example.com:9000",
                        "region_name": "us-east-1",
                        "extra": '{"s3": {"anon": true}}, or the fields above',
                    },
                },
            }
        ],
        "extra-links": [
            "airflow_plugin.links.k2e.K2eTensorBoardLink",
            "airflow_plugin.links.k2e.K2eModelLink",
            "airflow_plugin.links.k2e.K2eReportLink",
        ],
        "config": {
            "k2e": {
                "description": "Links on the k2e operators' task pages (an operator's own "
                "argument of the same name wins).",
                "options": {
                    "tensorboard_url": _link_option(
                        "TensorBoard link of a task, with {model_dir}; unset: no link",
                        "https://tensorboard.example.com/#scalars&logdir={model_dir}",
                    ),
                    "model_url": _link_option(
                        "Link of a published version, with {export_path}, {version}, "
                        "{export_base}; unset: the version's location",
                        "https://models.example.com/browse?path={export_path}",
                    ),
                    "report_url": _link_option(
                        "Link of a task's k2e report, with {report}; unset: its location",
                        "https://storage.example.com/view?path={report}",
                    ),
                },
            }
        },
    }


def _link_option(description: str, example: str) -> dict:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": "string",
        "example": example,
        "default": None,
    }


def _field(label: str, description: str, default: str | None = None) -> dict:
    schema = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": description, "schema": schema}
