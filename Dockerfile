# The k2e project image: what the Kubeflow components run in (and any k2e job in a
# container), one per trainer, each with its environment's pins:
#   docker build -t k2e:0.1.0 .                                  # trainer: estimator
#   docker build --build-arg TRAINER=keras -t k2e-keras:0.1.0 .  # trainer: keras
ARG TRAINER=estimator

# trainer: estimator: TensorFlow 2.15 on Python 3.11 (constraints.txt)
FROM python:3.11.7-slim-bookworm AS estimator
ENV K2E_CONSTRAINTS=constraints.txt K2E_EXTRAS=tensorflow,kfp,s3,gcs,report

# trainer: keras: TensorFlow 2.21 and Keras 3 on Python 3.12 (constraints-keras.txt)
FROM python:3.12.1-slim-bookworm AS keras
ENV K2E_CONSTRAINTS=constraints-keras.txt K2E_EXTRAS=keras,kfp,s3,gcs,report

FROM ${TRAINER}
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/k2e
COPY pyproject.toml constraints.txt constraints-keras.txt README.md ./
COPY k2e_core k2e_core
COPY kfp_components kfp_components
COPY airflow_plugin airflow_plugin
RUN python -m pip install "pip==26.3" \
 && python -m pip install -c "$K2E_CONSTRAINTS" ".[$K2E_EXTRAS]"
COPY examples examples

# KFP supplies each component's command; `k2e` is the CLI for plain container use.
CMD ["k2e", "--help"]
