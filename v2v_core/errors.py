"""The one exception type for user mistakes and unavailable resources.

Its message says what went wrong and what to do instead; the CLI prints it without a traceback and
the UI shows it as a gr.Error.
"""


class V2VError(Exception):
    """A problem the user can fix (bad input, unreachable model, impossible setting)."""
