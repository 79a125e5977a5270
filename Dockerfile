# The k2e project image: what the Kubeflow components run in (and any k2e job in a
# container). Same pins as every other install: constraints.txt.
#   docker build -t k2e:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/k2e
COPY pyproject.toml constraints.txt README.md ./
COPY k2e_core k2e_core
COPY kfp_components kfp_components
COPY airflow_plugin airflow_plugin
RUN python -m pip install "pip==26.3" \
 && python -m pip install -c constraints.txt ".[tensorflow,kfp,s3,gcs,report]"
COPY examples examples

# KFP supplies each component's command; `k2e` is the CLI for plain container use.
CMD ["k2e", "--help"]
