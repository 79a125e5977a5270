"""What the job steps ask of a trainer, and which trainer a spec names.

Two trainers train the same job: `estimator` (k2e_core.estimator: the Keras model as an
Estimator, TensorFlow 2.15) and `keras` (k2e_core.keras_trainer: Keras 3 on TensorFlow 2.21).
Each runs in its own interpreter (k2e_core.versions). The steps (k2e_core.steps.job), the
data layer (k2e_core.inputs), storage, the registry, the gate, publishing and records are
shared and import neither: they reach the trainer through this interface.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass

from k2e_core import versions
from k2e_core.errors import SpecError


def unknown_metric_names(known, metric_names_map) -> str:
    """What is wrong with `model.metric_names_map` given the metric names Keras reports
    (`known`), and the fix; "" when every name it renames is known. Both trainers' line."""
    unknown = set(metric_names_map or {}) - set(known)
    if not unknown:
        return ""
    return f"unknown Keras metric names {sorted(unknown)}; the model's metrics are {sorted(known)}"


_MODULES = {
    "estimator": "k2e_core.estimator.trainer",
    "keras": "k2e_core.keras_trainer.trainer",
}


def for_spec(spec) -> type[Trainer]:
    """The class of the trainer `spec.trainer` names; one line naming the interpreter that
    has it where this one does not."""
    problem = versions.trainer_problem(spec.trainer)
    if problem:
        raise SpecError("trainer", problem, "")
    return importlib.import_module(_MODULES[spec.trainer]).TRAINER


@dataclass
class Seed:
    """What a model_dir starts from: `record` (None: the model's own weights) and the local
    checkpoint whose optimizer slots training starts from (None: fresh slots)."""

    record: dict | None = None
    optimizer_state: str | None = None


class Trainer(abc.ABC):
    """One job's trainer: its model, checkpoints, training, evaluation and export. `job` is
    the opened job (`k2e_core.steps.job.Job`): spec, model_dir, data, the model."""

    name: str

    # -- opening a job: the model, before the job exists

    @staticmethod
    @abc.abstractmethod
    def load_model(spec, staging_dir: str):
        """(compiled Keras model or None for a pre-made model, custom objects)."""

    @staticmethod
    @abc.abstractmethod
    def warm_start(model, model_dir: str, spec, staging_dir: str) -> Seed:
        """Puts `spec.warm_start`'s weights into a new model_dir's model."""

    def __init__(self, job):
        self.job = job

    # -- what the data must feed

    @abc.abstractmethod
    def model_io(self):
        """`inputs.data.ModelIO` of the job's model."""

    @abc.abstractmethod
    def run_loss(self):
        """`run_loss(features, labels, sample_weights)`: the compiled loss on one batch."""

    def examples(self):
        """(plan, columns) -> (features, labels) where the model takes other features than
        its inputs (a pre-made model's); None: the model's inputs."""
        return None

    @abc.abstractmethod
    def locate_warm_start(self) -> None:
        """Checks `spec.warm_start` names something that exists, fetching nothing."""

    # -- model_dir

    @abc.abstractmethod
    def prepare(self) -> float:
        """Makes model_dir ready to train (the first checkpoint, the warm start); seconds."""

    @abc.abstractmethod
    def latest_checkpoint(self) -> str | None: ...

    @abc.abstractmethod
    def global_step(self) -> int: ...

    def convert_result(self) -> dict:
        """The convert step's own figures."""
        return {}

    # -- training, evaluation, export

    @abc.abstractmethod
    def train(self) -> dict:
        """Trains to `train.steps` total (`records.TrainResult`'s fields)."""

    @abc.abstractmethod
    def evaluate(self, label: str | None = None) -> dict:
        """{"metrics": ..., "checkpoint": ...} at the latest checkpoint on the eval data."""

    @abc.abstractmethod
    def metric_names(self) -> list[str]:
        """The names evaluation reports (for the gate's checks before training)."""

    @abc.abstractmethod
    def confusion_matrix(self) -> dict | None: ...

    @abc.abstractmethod
    def evaluate_version(self, version_url: str, version: int, label: str) -> dict:
        """A published version's metrics on this run's eval data."""

    @abc.abstractmethod
    def export_verified(self, sample) -> tuple[str, dict]:
        """(local SavedModel dir, report) of the latest checkpoint, checked against the Keras
        model on `sample` (rows as sent, rows as the model sees them; None: not checked)."""

    # -- the pre-made baseline (`baseline:`; a trainer without one refuses it in the spec)

    def check_baseline(self, trained: bool = False) -> None:
        """Before any work: the baseline fits the data (and with `trained`, is trained)."""
        raise NotImplementedError

    def train_baseline(self) -> dict:
        raise NotImplementedError

    def measure_baseline(self, trained: dict | None = None) -> dict:
        raise NotImplementedError

    def baseline_metric_names(self) -> list[str]:
        raise NotImplementedError
