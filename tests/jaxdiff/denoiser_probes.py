"""Denoiser wrappers for tests that count what ``jaxdiff.sample`` does with a denoiser.

``counting`` counts real calls (run the sampler under ``jax.disable_jit()``), ``tracing``
counts traces (a jitted sampler that retraces shows more entries).
"""
import jax


def counting(denoise):
    """(counted, calls): ``denoise`` wrapped to append to the list ``calls`` on every call
    with concrete arrays; calls with tracers (such as ``sample``'s ``eval_shape`` shape
    check) are not counted."""
    calls = []

    def counted(x, sigma):
        if not isinstance(x, jax.core.Tracer):
            calls.append(1)
        return denoise(x, sigma)
    return counted, calls


def tracing(denoise):
    """(traced, traces): ``denoise`` wrapped to append to the list ``traces`` whenever its
    Python body runs, which under ``jax.jit`` is once per trace."""
    traces = []

    def traced(x, sigma):
        traces.append(1)
        return denoise(x, sigma)
    return traced, traces
