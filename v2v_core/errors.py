"""The one exception type for user mistakes and unavailable resources.

Its message says what went wrong and what to do instead; the CLI prints it without a traceback and
the UI shows it as a gr.Error.
"""


class V2VError(Exception):
    """A problem the user can fix (bad input, unreachable model, impossible setting)."""


def run_cli(parser, argv=None) -> int:
    """Parse, run the chosen sub-command's `fn`, and turn a V2VError into one line and exit status 2."""
    import sys

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except V2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
