"""pendulum benchmark (not written yet)."""


def add_arguments(parser) -> None:
    pass


def main(args) -> None:
    raise SystemExit("bench 'pendulum' is not implemented yet")
