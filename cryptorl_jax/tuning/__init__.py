"""tuning: Optuna studies nested inside the walk-forward train windows.

`driver.run_study` is the study (see its docstring); its parts: `space` (the search space and
a trial's overrides), `split` (a trial's nested rows and its validation score), `trials` (ask,
train and score, tell) and `storage` (the Optuna storage, the trial log, best.yaml and
overfitting.json).
"""
