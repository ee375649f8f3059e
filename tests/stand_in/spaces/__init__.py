"""A stand-in for Hugging Face's `spaces` package (ZeroGPU), for tests: `GPU` records, in EVENTS, each decorated
function's calls in order with the duration it would request (a callable duration is called with the call's own
arguments, as ZeroGPU does), then runs the function here. Tests put this folder first on sys.path."""
import functools
import inspect

EVENTS: list[list] = []


def GPU(fn=None, duration=60):
    def wrap(f):
        def asked(args, kwargs):
            return duration(*args, **kwargs) if callable(duration) else duration

        if inspect.isgeneratorfunction(f):
            @functools.wraps(f)
            def gen(*args, **kwargs):
                EVENTS.append(["gpu-call", f.__name__, asked(args, kwargs)])
                yield from f(*args, **kwargs)
                EVENTS.append(["gpu-release", f.__name__])
            return gen

        @functools.wraps(f)
        def call(*args, **kwargs):
            EVENTS.append(["gpu-call", f.__name__, asked(args, kwargs)])
            try:
                return f(*args, **kwargs)
            finally:
                EVENTS.append(["gpu-release", f.__name__])
        return call

    return wrap(fn) if fn is not None else wrap
