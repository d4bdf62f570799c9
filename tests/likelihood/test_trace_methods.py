"""The exact trace's methods (vmap, forward mode, loop, replicate): the same numbers, a choice measured
once per solve, a fixed method honoured, bad values rejected by name."""

import math

import pytest
import torch

import scoresde as ss
from scoresde.likelihood import exact_divergence
from scoresde.likelihood.divergence import EXACT_METHODS, Batching

from .conftest import FunctorchRefused, data, mixture

F64 = dict(dtype=torch.float64)
FIXED = [m for m in EXACT_METHODS if m != "auto"]
is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _fields(d=12):
    """(name, field, points): the exact score of a d-D mixture under VP and a small random MLP score,
    at t = 0.3, on 5 points."""
    sde = ss.VPSDE()
    gmm = mixture(d).to(**F64)
    x = data(gmm, sde, 5).to(**F64)
    exact = gmm.score_fn(sde)
    torch.manual_seed(0)
    mlp = ss.ScoreModel(ss.MLP(d, 32, 2), sde).double().eval().requires_grad_(False)

    def at(score):
        return lambda y: score(y, torch.full((y.shape[0],), 0.3, **F64))

    return [("mixture", at(exact), x), ("mlp", at(mlp), x)]


def _brute_trace(v, x):
    return torch.stack([torch.autograd.functional.jacobian(lambda y: v(y[None])[0], xi).trace() for xi in x])


@pytest.mark.parametrize("case", [0, 1], ids=["mixture", "mlp"])
def test_every_method_gives_the_jacobian_trace(case):
    name, v, x = _fields()[case]
    expected = _brute_trace(v, x)
    for method in EXACT_METHODS:
        for chunk in (None, 5):  # 5 does not divide D = 12: a short last pass
            out, div = exact_divergence(v, x, chunk, exact_method=method)
            torch.testing.assert_close(out, v(x), rtol=0, atol=1e-12, msg=f"{name} {method} {chunk}")
            torch.testing.assert_close(div, expected, rtol=0, atol=1e-10, msg=f"{name} {method} {chunk}")


def test_every_method_gives_the_same_log_likelihood():
    sde, gmm = ss.VESDE(), mixture(6).to(**F64)
    x = data(gmm, sde, 6).to(**F64)
    kw = dict(rtol=1e-6, atol=1e-6)
    ref = ss.log_likelihood(gmm.score_fn(sde), sde, x, exact_method="loop", **kw)
    for method in EXACT_METHODS:
        res = ss.log_likelihood(gmm.score_fn(sde), sde, x, exact_method=method, **kw)
        torch.testing.assert_close(res.log_p, ref.log_p, rtol=0, atol=1e-8, msg=method)
        if method != "auto":  # a fixed method is reported as given, unmeasured
            assert res.exact_method.method == method and res.exact_method.seconds is None


def _calls_per_evaluation(choice, d):
    """Score calls of one evaluation by ``choice``: forward mode runs the primal in every pass."""
    return math.ceil(d / choice.chunk_size) if choice.method == "forward" and choice.chunk_size else 1


def test_the_choice_is_measured_once_per_solve():
    """Every candidate calls the score once at the first evaluation (the chunked ones stop after their
    first pass), the contenders once more, and the chosen method alone afterwards: the count of score
    calls tells."""
    sde, gmm, d = ss.VPSDE(), mixture(12).to(**F64), 12
    inner = gmm.score_fn(sde)
    calls = []

    def score(x, t):
        calls.append(bool(is_wrapped(x)))
        return inner(x, t)

    x = data(gmm, sde, 8).to(**F64)
    for _ in range(2):  # each solve measures afresh
        calls.clear()
        res = ss.log_likelihood(score, sde, x, rtol=1e-4, atol=1e-4)
        choice = res.exact_method
        # the loop, vmap with all 12 directions, vmap and forward mode in chunks of 8 (32 > D is not timed)
        assert set(choice.seconds) == {"loop", "vmap", "vmap:8", "forward:8"}
        assert choice.label == min(choice.seconds, key=choice.seconds.get)
        evaluations = res.nfe - 1  # less the differentiability check
        assert evaluations > 10
        # the first evaluation: one call per candidate, and one more for each of the two fastest if
        # they are close
        first = len(calls) - 1 - (evaluations - 1) * _calls_per_evaluation(choice, d)
        assert first in (len(choice.seconds), len(choice.seconds) + 2)


def _costly(v, plain_cost, functorch_cost, now):
    """``v`` that advances the fake clock ``now`` by a cost per call: plain (autograd) or under functorch."""

    def field(y):
        now[0] += functorch_cost if is_wrapped(y) else plain_cost
        return v(y)

    return field


@pytest.mark.parametrize("plain_cost, functorch_cost, chosen", [(10.0, 1.0, "vmap"), (1.0, 10.0, "loop")])
def test_the_fastest_candidate_is_kept_and_used(plain_cost, functorch_cost, chosen):
    """With a clock that only the field advances, the cheap kind of call wins, and every later call of
    the same Batching goes to it without reading the clock."""
    _, v, x = _fields()[0]
    now = [0.0]
    reads = []

    def clock():
        reads.append(now[0])
        return now[0]

    field = _costly(v, plain_cost, functorch_cost, now)
    batching = Batching(clock=clock)
    exact_divergence(field, x, batching=batching)
    assert batching.exact.method == chosen
    first_reads = len(reads)
    calls = []

    def watched(y):
        calls.append(bool(is_wrapped(y)))
        return field(y)

    for _ in range(3):
        _, div = exact_divergence(watched, x, batching=batching)
        torch.testing.assert_close(div, _brute_trace(v, x), rtol=0, atol=1e-10)
    assert len(reads) == first_reads  # measured once
    assert calls == [chosen == "vmap"] * 3  # one call per evaluation, of the chosen kind


def test_a_one_off_slow_reading_is_timed_again():
    """The loop is the fastest (plain calls cost 1, functorch calls 10), but its first reading is slowed
    by 12 (another job on the machine): the runner-up within the recheck factor of the fastest reading
    (vmap's 10), it is timed again and gets the choice."""
    _, v, x = _fields()[0]
    now, penalty = [0.0], [12.0]

    def field(y):
        if not is_wrapped(y):
            now[0] += 1.0 + penalty[0]
            penalty[0] = 0.0
        else:
            now[0] += 10.0
        return v(y)

    batching = Batching(clock=lambda: now[0])
    exact_divergence(field, x, 6, batching=batching)  # candidates: the loop, vmap and forward mode by 6
    assert batching.exact.method == "loop" and batching.exact.seconds["loop"] == 1.0
    assert batching.exact.seconds == {"loop": 1.0, "vmap:6": 10.0, "forward:6": 20.0}
    assert batching.recheck * 10.0 > 13.0


def test_a_refusing_network_times_the_loop_and_the_replicated_method():
    _, v, x = _fields()[1]

    def field(y):
        return v(y) + FunctorchRefused.apply(y)

    batching = Batching()
    out, div = exact_divergence(field, x, batching=batching)
    assert set(batching.exact.seconds) == {"loop", "replicate"}
    assert batching.mode == "replicate"  # the Hutchinson-style batching learns it too
    torch.testing.assert_close(div, _brute_trace(field, x), rtol=0, atol=1e-10)
    with pytest.raises(RuntimeError, match="setup_context"):
        exact_divergence(field, x, exact_method="forward")  # fixed: no fallback


def test_candidates_out_of_memory_are_skipped():
    """A field that runs out of memory under functorch (as vmap over all directions can on a GPU): the
    functorch candidates are skipped, the loop is kept; fixed to vmap, the error is raised."""
    _, v, x = _fields()[0]

    def field(y):
        if is_wrapped(y):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return v(y)

    batching = Batching()
    _, div = exact_divergence(field, x, batching=batching)
    assert set(batching.exact.seconds) == {"loop"} and batching.exact.method == "loop"
    assert batching.mode == "auto"  # functorch neither refused nor worked: undecided
    torch.testing.assert_close(div, _brute_trace(v, x), rtol=0, atol=1e-10)
    with pytest.raises(torch.OutOfMemoryError):
        exact_divergence(field, x, exact_method="vmap")


def test_small_dimensions_take_the_loop_unmeasured():
    sde, gmm = ss.VPSDE(), mixture(2).to(**F64)
    res = ss.log_likelihood(gmm.score_fn(sde), sde, data(gmm, sde, 4).to(**F64), rtol=1e-4, atol=1e-4)
    assert res.exact_method.method == "loop" and res.exact_method.seconds is None
    hutch = ss.log_likelihood(gmm.score_fn(sde), sde, data(gmm, sde, 4).to(**F64), trace="hutchinson",
                              rtol=1e-4, atol=1e-4)
    assert hutch.exact_method is None


def test_bad_values_are_rejected_by_name():
    sde, gmm = ss.VPSDE(), mixture(6).to(**F64)
    x = data(gmm, sde, 3).to(**F64)
    score = gmm.score_fn(sde)
    with pytest.raises(ss.ArgumentError, match="exact_method must be one of"):
        ss.log_likelihood(score, sde, x, exact_method="jvp")
    with pytest.raises(ss.ArgumentError, match="exact_method must be one of"):
        ss.log_likelihood(score, sde, x, exact_method=None)
    with pytest.raises(ss.ArgumentError, match="exact_method='loop' applies to trace='exact' only"):
        ss.log_likelihood(score, sde, x, trace="hutchinson", exact_method="loop")
    with pytest.raises(ss.ArgumentError, match="exact_method"):
        Batching(exact_method="chunked")
    with pytest.raises(ss.ArgumentError, match="contradicts"):
        exact_divergence(lambda y: y.sin(), x, exact_method="vmap", batching=Batching(exact_method="loop"))
    assert set(FIXED) == {"vmap", "forward", "loop", "replicate"}
