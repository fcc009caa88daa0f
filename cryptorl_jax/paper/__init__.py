"""Paper trading: a finished run's agent on live hourly bars through the backtest's own code.

`cryptorl paper` (cli/paper.py) drives it: `feeds` extend the data files, `engine` books each
new closed hour, `book` keeps the state in SQLite, `status` reports it against the backtest.
"""
