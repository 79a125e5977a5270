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
        "connection-types": [
            {
                "connection-type": "k2e_storage",
                "hook-class-name": "airflow_plugin.hooks.storage.K2eStorageHook",
                "hook-name": "k2e storage (fsspec options)",
            }
        ],
    }
