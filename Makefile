# Set-up and the two README commands. Needs Python 3.11, Python 3.12 and the package registries.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := tensorflow,airflow,airflow-kubernetes,lineage,kfp,kubernetes,s3,gcs,report,dev
# The Airflow environment: Airflow as its official images run it (Python 3.12), with k2e's
# provider and no TensorFlow; its tasks run k2e in .venv (operators' python=).
PYTHON312 ?= $(or $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)),python3.12)
AIRFLOW_VENV := .venv-airflow
AIRFLOW_EXTRAS := airflow,airflow-kubernetes,lineage,kubernetes,s3,gcs
# The Keras trainer's environment (trainer: keras): TensorFlow 2.21, Keras 3, Python 3.12,
# pinned by its own lock; its tests are tests/keras_trainer.
KERAS_VENV := .venv-keras
KERAS_EXTRAS := keras,kfp,s3,gcs,report,dev
KERAS_TESTS := tests/keras_trainer

.PHONY: run test bench venv venv-airflow venv-keras lock lock-keras clean

# The main job: the iris example end to end on local storage.
run: $(VENV)/.installed examples/data/.generated
	$(BIN)/k2e run examples/iris.yaml

# Lint and format checks (ruff, configured in pyproject.toml), then the test suite on
# TEST_WORKERS processes (pytest-xdist), one test at a time each, the slow ones first
# (tests/conftest.py): no long test starts last; then the Keras trainer's tests in its own
# interpreter. pytest exits 5 when a selection (PYTEST_ARGS) collects no test: said, not
# failed. The quick set: make test PYTEST_ARGS='-m "not slow"'.
TEST_WORKERS ?= 2
PYTEST = -m pytest -ra -n $(TEST_WORKERS) --dist load --maxschedchunk 1 $(PYTEST_ARGS)
test: $(VENV)/.installed $(AIRFLOW_VENV)/.installed $(KERAS_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rc=0; $(BIN)/python $(PYTEST) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; rc=0; fi; \
	krc=0; $(KERAS_VENV)/bin/python $(PYTEST) $(KERAS_TESTS) || krc=$$?; \
	if [ $$krc -eq 5 ]; then echo "make test: no Keras trainer tests selected (exit 5)"; krc=0; fi; \
	[ $$rc -eq 0 ] && exit $$krc; exit $$rc

# The benchmark suite (about 15 minutes on 2 cores); BENCH_ARGS=--readme also refreshes README.md's table.
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "k2e needs Python 3.11, got " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv-airflow: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON312) -c 'import sys; assert sys.version_info[:2] == (3, 12), "the Airflow environment is Python 3.12, got " + sys.version.split()[0]'
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON312) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "pip==26.3"
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(AIRFLOW_EXTRAS)]"
	$(AIRFLOW_VENV)/bin/python -m pip check
	touch $@

venv-keras: $(KERAS_VENV)/.installed

$(KERAS_VENV)/.installed: pyproject.toml constraints-keras.txt
	@$(PYTHON312) -c 'import sys; assert sys.version_info[:2] == (3, 12), "the Keras trainer runs on Python 3.12, got " + sys.version.split()[0]'
	test -x $(KERAS_VENV)/bin/python || $(PYTHON312) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "pip==26.3"
	$(KERAS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-keras.txt -e ".[$(KERAS_EXTRAS)]"
	$(KERAS_VENV)/bin/python -m pip check
	touch $@

examples/data/.generated: examples/generate_data.py $(VENV)/.installed
	$(BIN)/python examples/generate_data.py examples/data
	touch $@

# Re-resolve the pinned set after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/k2e-lock && $(PYTHON) -m venv /tmp/k2e-lock
	/tmp/k2e-lock/bin/python -m pip install --quiet "pip==26.3"
	/tmp/k2e-lock/bin/python -m pip install --quiet ".[$(EXTRAS)]"
	(echo "# Every install of k2e uses exactly these versions (pip install -c constraints.txt ...)."; \
	 echo "# Regenerate: make lock"; \
	 /tmp/k2e-lock/bin/python -m pip freeze --all | grep -v '^pip==\|^setuptools==\|^wheel==\|^k2e[= @]') > constraints.txt

# The same for the Keras trainer's environment (Python 3.12).
lock-keras:
	rm -rf /tmp/k2e-lock-keras && $(PYTHON312) -m venv /tmp/k2e-lock-keras
	/tmp/k2e-lock-keras/bin/python -m pip install --quiet "pip==26.3"
	/tmp/k2e-lock-keras/bin/python -m pip install --quiet ".[$(KERAS_EXTRAS)]"
	(echo "# The Keras trainer's environment (.venv-keras) uses exactly these versions."; \
	 echo "# Regenerate: make lock-keras"; \
	 /tmp/k2e-lock-keras/bin/python -m pip freeze --all | grep -v '^pip==\|^setuptools==\|^wheel==\|^k2e[= @]') > constraints-keras.txt

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(KERAS_VENV) out examples/data
