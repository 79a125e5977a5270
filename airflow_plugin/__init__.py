"""k2e's Airflow provider: operators for the steps of a k2e job and a storage connection.

Installed with the `k2e` distribution (`apache_airflow_provider` entry point). Nothing here
imports TensorFlow or the k2e core at import time: DAG parsing stays fast, and workers
without TensorFlow can run the steps in another interpreter (`python=`).
"""
