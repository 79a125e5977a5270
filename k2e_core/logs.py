"""Clean logs: k2e's own progress lines (step, loss, steps/s) on stderr.

TensorFlow's own noise is turned down where TensorFlow is imported (k2e_core.estimator.compat).
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("k2e")


def configure_cli_logging(verbose: bool = False) -> None:
    """k2e's log lines on stderr; stdout stays for the step's JSON result."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s k2e %(levelname).1s %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("k2e")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def progress_hook(total_steps: int, every_secs: float):
    """A SessionRunHook that logs step, loss, steps/s and time left every `every_secs`."""
    import tensorflow as tf

    class ProgressHook(tf.estimator.SessionRunHook):
        """After training, `steps` holds the steps this session ran and `rate` the
        steady-state steps/s: from the end of the first step (which also optimises the graph
        and fills the input pipeline) to the end; None after fewer than two steps."""

        steps, rate, final_step, last_step = 0, None, None, None
        losses = 0.0, 0  # (sum, count) of the step losses since `take_mean_loss`

        def begin(self):
            self._global_step = tf.compat.v1.train.get_global_step()
            # The Estimator adds its training loss to this collection before hooks begin.
            losses = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)
            self._fetches = {"step": self._global_step}
            if losses:
                self._fetches["loss"] = losses[-1]
            self._last_time = None
            self._last_step = None
            self._loss = None

        def after_create_session(self, session, coord):
            self._last_step = self._first_step = int(session.run(self._global_step))
            self._start_step = None
            self._last_time = time.perf_counter()

        def before_run(self, run_context):
            # Both are scalars the step computes anyway; fetching them costs microseconds.
            return tf.estimator.SessionRunArgs(self._fetches)

        def after_run(self, run_context, run_values):
            self._loss = run_values.results.get("loss")
            if self._loss is not None:
                self.losses = self.losses[0] + float(self._loss), self.losses[1] + 1
            self.last_step = int(run_values.results["step"]) + 1
            if self._start_step is None:
                self._start_step = int(run_values.results["step"]) + 1
                self._start_time = time.perf_counter()
            if time.perf_counter() - self._last_time >= every_secs:
                self._report(int(run_values.results["step"]), self._loss)

        def end(self, session):
            step = self.final_step = int(session.run(self._global_step))
            self.steps = step - self._first_step
            if self._start_step is not None and step > self._start_step:
                self.rate = (step - self._start_step) / (time.perf_counter() - self._start_time)
            if step != self._last_step:
                self._report(step, self._loss, final=True)

        def take_mean_loss(self):
            """The mean step loss since the last call (None: no step), and a new window."""
            total, count = self.losses
            self.losses = 0.0, 0
            return total / count if count else None

        def exclude(self, seconds):
            """Leaves `seconds` the training loop spent on something else (an evaluation)
            out of the rates."""
            if self._last_time is not None:
                self._last_time += seconds
            if self._start_step is not None:
                self._start_time += seconds

        def _report(self, step, loss, final=False):
            if step == self._last_step:  # the first step is still building the graph
                return
            now = time.perf_counter()
            rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
            left = max(total_steps - step, 0) / rate if rate > 0 else float("inf")
            text = f"step {step}/{total_steps}"
            if loss is not None:
                text += f"  loss {float(loss):.4f}"
            text += f"  {rate:.1f} steps/s"
            text += "  done" if final else f"  about {left:.0f}s left"
            log.info(text)
            self._last_time, self._last_step = now, step

    return ProgressHook()
