"""Study definitions by name, the runner (Optuna + Ray Tune + MLflow) and reports."""
