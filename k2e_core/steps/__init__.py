"""The job's steps (convert, train, evaluate, export, run, validate) that the CLI, the
Airflow operators and the KFP components all call, and the pieces a step opens a job from."""
