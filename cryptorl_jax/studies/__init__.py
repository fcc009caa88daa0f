"""studies: experiments made of whole walk-forward runs (above walkforward).

`planted` (the planted markets' oracle, replayed through the backtest), `power` (can the method
find a planted edge: `cryptorl power`), `study` and `study_doc` (several runs of one config
compared: `cryptorl study`, docs/study.md).
"""
