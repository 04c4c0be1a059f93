"""Server-flag search (`tuner flag-search`): a search space of engine flags, an SLO objective, the maximum
sustainable load of one launch, an Optuna study in the results database, robust re-measurement and reports.

Each module has one job; nothing here imports the web layer.
"""
