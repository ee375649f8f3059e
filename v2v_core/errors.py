"""The one exception type for user mistakes and unavailable resources.

Its message says what went wrong and what to do instead; the CLI prints it without a traceback and
the UI shows it as a gr.Error.
"""


class V2VError(Exception):
    """A problem the user can fix (bad input, unreachable model, impossible setting)."""


def _subparsers(parser):
    """{name: subparser} of a parser's sub-commands, and the attribute that holds the chosen name."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices, action.dest
    return {}, None


def _strict(parser) -> None:
    """No silent abbreviations (`--method` must not pass for `--methods`), on every (sub)parser."""
    parser.allow_abbrev = False
    for sub in _subparsers(parser)[0].values():
        _strict(sub)


def run_cli(parser, argv=None) -> int:
    """Parse, run the chosen sub-command's `fn`, and turn a V2VError into one line and exit status 2.
    Flags are never abbreviated, and a wrong flag is reported with the usage of the sub-command it was
    given to, not the top-level usage."""
    import sys

    _strict(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:
        target = parser
        while True:
            choices, dest = _subparsers(target)
            name = getattr(args, dest, None) if dest else None
            if name not in choices:
                break
            target = choices[name]
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.fn(args)
    except V2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


class Cancelled(Exception):
    """A run stopped on request (the UI's Stop, a closed tab): not a mistake. Says which method was
    running and how many of its frames were done, so the UI can say "Stopped after N frames"."""

    def __init__(self, method: str | None = None, frames: int = 0):
        super().__init__(f"stopped after {frames} frames" + (f" of {method}" if method else ""))
        self.method, self.frames = method, frames
