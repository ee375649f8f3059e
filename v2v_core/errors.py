"""The one exception type for user mistakes and unavailable resources.

Its message says what went wrong and what to do instead; the CLI prints it without a traceback and
the UI shows it as a gr.Error.
"""


class V2VError(Exception):
    """A problem the user can fix (bad input, unreachable model, impossible setting)."""


def check_prompt(prompt) -> str:
    """The prompt, or a V2VError when it is empty (knowable before any model loads)."""
    if prompt is None or not str(prompt).strip():
        raise V2VError("The prompt is empty: describe the output, e.g. \"a pencil sketch\".")
    return str(prompt)


def check_frames(frames) -> int:
    """A number of frames for a comparison: at least 2 (warp error compares consecutive frames)."""
    try:
        n = int(frames)
    except (TypeError, ValueError):
        raise V2VError(f"Frames '{frames}' is not a whole number.") from None
    if n < 2:
        raise V2VError(f"Frames must be at least 2 (got {n}): temporal consistency compares consecutive frames.")
    return n


def argument(check):
    """An argparse `type` from a checker that raises V2VError: a mistake in an argument is reported by argparse
    (the sub-command's usage, exit status 2) before anything is loaded or written."""
    import argparse

    def parse(text):
        try:
            return check(text)
        except V2VError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = check.__name__.replace("check_", "")     # argparse names the type in some messages
    return parse


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
