r"""Divergence (Jacobian trace) of a batched vector field, exactly or by Skilling-Hutchinson.

For a field :math:`v:\mathbb R^D\to\mathbb R^D` applied sample by sample to a batch
``x`` of shape ``(batch, *S)`` (:math:`D = \prod S`), the divergence is

.. math:: \nabla\!\cdot v(x) = \operatorname{tr} J_v(x) = \sum_{i=1}^D e_i^\top J_v(x)\, e_i .

* :func:`exact_divergence` computes every term: ``D`` vector-Jacobian products
  :math:`e_i^\top J_v` (reverse mode; row :math:`i` of every sample's Jacobian, of which the
  :math:`i`-th entry is kept) or Jacobian-vector products :math:`J_v e_i` (forward mode, column
  :math:`i`), in one of several ways chosen by measured cost (below).
* :func:`hutchinson_divergence` uses the unbiased estimator (Skilling 1989, Hutchinson 1990)
  :math:`\operatorname{tr} J = \mathbb E[\epsilon^\top J \epsilon]` for probes with
  :math:`\mathbb E[\epsilon\epsilon^\top] = I`, averaged over the given probes. For symmetric
  :math:`J`, Gaussian probes have variance :math:`2\|J\|_F^2` and Rademacher probes
  :math:`2(\|J\|_F^2 - \sum_i J_{ii}^2)`, never more.

Both return ``(v(x), div)`` so the field is evaluated exactly once per call (once per pass when
replicated or in forward mode, and once per candidate when the exact trace's method is being
measured, below). The batch samples must not interact inside ``v`` (no batch norm): the
vector-Jacobian products are taken with the same direction for every sample at once.

**Networks vmap cannot batch.** Several VJPs at once go through functorch (``vmap`` for the exact
trace, ``is_grads_batched`` for several probes), which some networks do not support: a diffusers
UNet with frozen weights fails with "NYI: querying is_contiguous inside of vmap", and so does any
network with data-dependent control flow or ``.item()``. :class:`Batching` then replicates
instead: the batch is stacked ``k`` times (``k`` = ``chunk_size`` directions), the field runs once
on the ``k * batch`` rows, and one plain backward pass carries a different direction
:math:`e_i` (or probe) in each replica, so replica ``j`` returns :math:`e_{i_j}^\top J_v(x)`.
The answer is the same; the price is ``ceil(D / k)`` forward passes of ``k * batch`` rows instead of
one of ``batch`` rows, i.e. ``D`` sample-forwards per evaluation instead of one (about 1.5x the
arithmetic of the vmap path, whose ``D`` backward passes cost about two forwards each), and the
activations of ``k * batch`` rows in memory. ``"auto"`` tries vmap at the first evaluation of a
solve and keeps whichever worked for the rest of it.

**The exact trace's method, by measured cost.** The ``D`` products can be taken by
:func:`torch.func.vmap` over :func:`torch.func.vjp` after one forward pass, with all ``D`` cotangents
in one batched backward pass or ``chunk_size`` at a time; by forward mode, :func:`torch.func.vmap`
over :func:`torch.func.jvp`, ``chunk_size`` tangents per pass (each pass recomputes the primal, but
no graph is stored); by a loop of ``D`` plain backward passes through one retained graph; or
replicated, as above. They do the same arithmetic to within a small factor and compute the same
numbers (to rounding), but their speed depends on the network, ``D``, the batch and the device,
and no fixed one wins. Per evaluation at batch 128 on one CPU core, against one Hutchinson probe:
for the exact score of a 64-D mixture, vmap over all 64 directions costs 20-65x, in chunks of 8
4-17x and the loop 3.5-14x; for an MLP(64, 256, 3) 28-33x, 25-29x and 25-27x; for a U-Net on 8x8
inputs 39-78x, 28-37x and 27-33x (the ranges are two runs on a loaded machine); forward mode
was never the fastest (11-185x). So ``exact_method="auto"`` times the candidates at the first
evaluation of each solve and keeps the fastest for the rest of it: the loop in full (its answer
is the evaluation's), vmap in chunks of 8 and 32, vmap over all directions (skipped when the
chunks of 32 were more than 1.5x slower than those of 8: it cannot be timed in part), and forward
mode in chunks of 8; every chunked one (and the loop, in groups of 8 backward passes, when it is not
the first) runs only its set-up and first pass and is extrapolated (``set-up + passes x first
pass``); the two fastest are timed once more if they are within 1.5x of each other, since one
reading on a busy machine can be off by more than they differ. Measured on the 64-D mixture (VP,
rtol = atol = 1e-4, loaded machine): at batch 128 (153 evaluations) ``"auto"`` picked the loop in
4 of 4 solves and took 4.07 s (median of 4) against 4.00 s for the loop fixed, 4.55 s for vmap in
chunks of 8 and 21 s for vmap over all directions (the default before); at batch 16, where the loop
is the slowest (1.06 s), it picked vmap in chunks of 8 or 32 or over all directions (all three within
25% of each other) and took 0.57 s against 0.44-0.56 s for those fixed. On an MLP(64, 256, 3) at
batch 128, where all are within 30%, the first evaluation costs 3.7-4.3 evaluations of the chosen
method, so measuring costs about three evaluations per solve.
Functorch's one-off start-up (about 1 s for the first vmap of a vjp in a process on this CPU) is
paid on a tiny function before the timing. Reading a clock needs the device to have finished: on
CUDA the device is synchronised at each clock read of that first evaluation only, never afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ArgumentError, ScoreSDEError, check_choice
from ..sde import call_score

Field = Callable[[Tensor], Tensor]

NOISE_TYPES = ("rademacher", "gaussian")

#: how several vector-Jacobian products are batched (see :class:`Batching`)
BATCHING_MODES = ("auto", "vmap", "replicate")

#: how the exact trace takes its ``D`` products (see :func:`exact_divergence`)
EXACT_METHODS = ("auto", "vmap", "forward", "loop", "replicate")

#: the methods that go through functorch (a network it refuses is refused by all of them)
_FUNCTORCH = ("vmap", "forward")

#: the loop's backward passes per clock read when it is timed (see :meth:`Batching.measure`)
LOOP_GROUP = 8

#: chunk sizes that ``exact_method="auto"`` times besides all directions at once (those below D)
AUTO_CHUNKS = (8, 32)


@dataclass(frozen=True)
class ExactMethod:
    """How the exact trace of a solve took its ``D`` products, as reported on a result.

    Attributes:
        method: ``"vmap"``, ``"forward"``, ``"loop"`` or ``"replicate"`` (see :func:`exact_divergence`).
        chunk_size: directions per batched pass (None: all ``D`` at once; always None for the loop).
        seconds: with ``exact_method="auto"``, each candidate's wall time for one evaluation as measured at
            the first one (extrapolated from its first pass for the chunked candidates), keyed by
            :attr:`label`; the chosen one is the fastest. None when the method was fixed (or ``D <= 4``,
            where the loop is used without measuring).
    """

    method: str
    chunk_size: int | None = None
    seconds: dict[str, float] | None = None

    @property
    def label(self) -> str:
        """``"vmap"``, or ``"vmap:8"`` for chunks of 8."""
        return self.method if self.chunk_size is None else f"{self.method}:{self.chunk_size}"

    def __str__(self) -> str:
        return self.label


class _Stopwatch:
    """Clock reads at the stages of one timed candidate: its start, the end of its set-up (the forward
    pass, where it is shared by all passes), and the end of each batched pass. With ``stop`` the
    candidate ends after its first pass, and :meth:`estimate` extrapolates to all ``n_passes``."""

    def __init__(self, clock: Callable[[], float], sync: Callable[[], None], stop: bool):
        self.clock, self.sync, self.stop = clock, sync, stop
        self.marks: list[float] = []

    def mark(self) -> None:
        self.sync()
        self.marks.append(self.clock())

    def estimate(self, n_passes: int) -> float:
        start, setup, *passes = self.marks
        if not self.stop or n_passes <= 1:
            return self.marks[-1] - start
        return (setup - start) + n_passes * (passes[0] - setup)


def _mark(watch: _Stopwatch | None) -> bool:
    """Read ``watch``'s clock (if any); True when the candidate should stop here."""
    if watch is None:
        return False
    watch.mark()
    return watch.stop and len(watch.marks) > 2


class Batching:
    """How the vector-Jacobian products of a solve are batched, decided once per solve.

    ``mode`` (several probes, and the exact trace when ``exact_method`` is ``"auto"`` and ``mode`` is
    not): ``"vmap"``: functorch batches them after one forward pass. ``"replicate"``: the batch is
    stacked once per direction and one plain backward pass takes them all (see the module).
    ``"auto"`` (the default) tries vmap at the first call and, if functorch refuses the network
    (a ``RuntimeError`` or ``NotImplementedError`` other than running out of memory), replicates;
    :attr:`mode` then holds the choice, and later calls go straight to it.

    ``exact_method`` (the exact trace): one of :data:`EXACT_METHODS`. ``"auto"`` times the candidates
    at the first call and keeps the fastest in :attr:`exact` (an :class:`ExactMethod`) for every later
    call; any other value fixes the method. ``clock`` is the wall clock read around each candidate
    (a function returning seconds).
    """

    def __init__(self, mode: str = "auto", exact_method: str = "auto", *,
                 clock: Callable[[], float] = time.perf_counter):
        self.mode = check_choice("batching", mode, BATCHING_MODES)
        self.exact_method = check_choice("exact_method", exact_method, EXACT_METHODS)
        self.exact: ExactMethod | None = None
        self.clock = clock

    def run(self, batched: Callable[[], tuple[Tensor, Tensor]], replicated: Callable[[], tuple[Tensor, Tensor]]):
        """``batched()`` or ``replicated()`` (both return ``(v(x), div)``), by :attr:`mode`."""
        if self.mode == "replicate":
            return replicated()
        if self.mode == "vmap":
            return batched()
        try:
            result = batched()
        except (RuntimeError, NotImplementedError) as err:
            if isinstance(err, (ScoreSDEError, torch.OutOfMemoryError)):
                raise
            # functorch cannot batch this network; a genuine failure of the network shows
            # again, unbatched, in the replicated pass and is raised from there
            try:
                result = replicated()
            except Exception as again:
                raise again from err
            self.mode = "replicate"
            return result
        self.mode = "vmap"
        return result

    #: the runner-up within this factor of the fastest: both are timed a second time (the faster reading counts)
    recheck = 1.5

    def measure(self, candidates: list[tuple[str, int | None]], runners: dict[str, Callable], x: Tensor):
        """Time every candidate ``(method, chunk_size)``, keep the fastest in :attr:`exact`, and return
        the first one's ``(v(x), div)`` (they all compute the same numbers).

        The first candidate runs in full (its answer is returned). Every other one that works in
        passes (``chunk_size`` directions; the loop's in groups of :data:`LOOP_GROUP`) runs its set-up
        and first pass only and is extrapolated to all of them (``set-up + passes x first pass``), so
        that measuring costs little more than one evaluation. All directions at once (which cannot be
        timed in part) is skipped when the chunks already timed got slower with size by more than
        :attr:`recheck`. Then the two fastest, if the second is
        within :attr:`recheck` of the first, are timed again (second first, partially) and the faster of
        each one's two readings counts: one reading on a busy machine can be off by more than the
        candidates differ. Skipped: a candidate that runs out of memory, the functorch candidates once
        functorch has refused the network, and ``"replicate"`` unless it has (the fallback). A failure
        of the loop, which needs nothing but autograd, is the network's own and is raised. On CUDA the
        device is synchronised at each clock read (this call only), so that the clock sees the kernels.
        """
        device, d = x.device, x[0].numel()
        _warm_up_functorch(x)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

        def passes(method: str, chunk: int | None) -> int:
            if method == "loop":
                return math.ceil(d / LOOP_GROUP)
            return 1 if chunk is None else math.ceil(d / chunk)

        result, seconds, timed, refused, failure = None, {}, [], None, None
        for method, chunk in candidates:
            if (method in _FUNCTORCH and refused is not None) or (method == "replicate" and refused is None):
                continue
            if chunk is None and method in _FUNCTORCH and self._growing(method, timed, seconds):
                continue  # larger passes were slower: all D at once would be slower still
            n = passes(method, chunk)
            watch = _Stopwatch(self.clock, sync, stop=result is not None and n > 1)
            try:
                watch.mark()
                out = runners[method](chunk, watch)
            except (RuntimeError, NotImplementedError) as err:
                if isinstance(err, ScoreSDEError):
                    raise
                if _out_of_memory(err):
                    failure = err
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if method not in _FUNCTORCH:
                    raise err from refused
                refused = err
                continue
            seconds[ExactMethod(method, chunk).label] = watch.estimate(n)
            timed.append((method, chunk))
            if result is None:
                result = out
        if result is None:
            raise failure if failure is not None else refused
        ranked = sorted(timed, key=lambda mc: seconds[ExactMethod(*mc).label])[:2]
        close = len(ranked) == 2 and seconds[ExactMethod(*ranked[1]).label] <= self.recheck * seconds[
            ExactMethod(*ranked[0]).label]
        for method, chunk in reversed(ranked if close else []):
            label = ExactMethod(method, chunk).label
            n = passes(method, chunk)
            watch = _Stopwatch(self.clock, sync, stop=n > 1)
            try:
                watch.mark()
                runners[method](chunk, watch)
            except (RuntimeError, NotImplementedError) as err:
                if _out_of_memory(err):
                    continue
                raise
            seconds[label] = min(seconds[label], watch.estimate(n))
        method, _, chunk = min(seconds, key=seconds.get).partition(":")
        self.exact = ExactMethod(method, int(chunk) if chunk else None, seconds)
        if self.mode == "auto" and refused is not None:
            self.mode = "replicate"
        elif self.mode == "auto" and any(m in _FUNCTORCH for m, _ in timed):
            self.mode = "vmap"
        return result


    def _growing(self, method: str, timed: list, seconds: dict) -> bool:
        """Whether ``method``'s largest timed chunk was more than :attr:`recheck` times slower than its
        smallest (so that all directions at once need not be timed)."""
        sizes = sorted(c for m, c in timed if m == method and c is not None)
        return len(sizes) >= 2 and seconds[ExactMethod(method, sizes[-1]).label] > self.recheck * seconds[
            ExactMethod(method, sizes[0]).label]


_functorch_warm = False


def _warm_up_functorch(like: Tensor) -> None:
    """Pay functorch's one-off start-up (lazy imports: about 1 s for the first vmap of a vjp on this
    CPU, 0.2-0.4 s for the first jvp) once per process, on a tiny function, so that it does not
    count against the first candidates timed."""
    global _functorch_warm
    if _functorch_warm:
        return
    y = like.new_ones(2)
    try:
        torch.func.vmap(torch.func.vjp(torch.sin, y)[1])(y.new_ones(2, 2))
        torch.func.vmap(lambda e: torch.func.jvp(torch.sin, (y,), (e,))[1])(y.new_ones(2, 2))
    except (RuntimeError, NotImplementedError):  # functorch unusable here: the candidates will say so
        pass
    _functorch_warm = True


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's)."""
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)


def as_batching(batching: str | Batching, exact_method: str = "auto") -> Batching:
    """A :class:`Batching` (kept, so its decisions are shared) or a fresh one from a mode string;
    ``exact_method`` other than ``"auto"`` must agree with a kept one's."""
    if not isinstance(batching, Batching):
        return Batching(batching, exact_method)
    check_choice("exact_method", exact_method, EXACT_METHODS)
    if exact_method != "auto" and exact_method != batching.exact_method:
        raise ArgumentError(f"exact_method={exact_method!r} contradicts the given Batching's "
                            f"exact_method={batching.exact_method!r}; pass one of them")
    return batching


# Below this many dimensions a loop of plain backward passes beats vmap's fixed overhead.
_LOOP_MAX_DIM = 4


def _with_graph(v: Field, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, v(y))`` with ``y`` a leaf copy of ``x`` that autograd tracks."""
    y = x.detach().requires_grad_(True)
    return y, v(y)


def _vjp(out: Tensor, y: Tensor, cotangent: Tensor, batched: bool, retain: bool) -> Tensor:
    if not out.requires_grad:  # the field does not depend on x: zero Jacobian
        return torch.zeros_like(cotangent)
    (row,) = torch.autograd.grad(
        out, y, cotangent, retain_graph=retain, is_grads_batched=batched, allow_unused=True
    )
    return torch.zeros_like(cotangent) if row is None else row


def _replicated_vjps(stacked: Field, x: Tensor, cotangents: Tensor) -> tuple[Tensor, Tensor]:
    """``(v(x), rows)`` with ``rows[j] = cotangents[j]^T J_v(x)``, shape ``(k, batch, *S)``: one
    forward pass of ``stacked`` on ``x`` stacked ``k`` times (row ``j * batch + i`` is sample
    ``i``), one backward pass with replica ``j``'s cotangent ``cotangents[j]``."""
    k = cotangents.shape[0]
    with torch.enable_grad():
        y = x.detach().repeat(k, *[1] * (x.dim() - 1)).requires_grad_(True)
        out = stacked(y)
        rows = _vjp(out, y, cotangents.flatten(0, 1), batched=False, retain=False)
    return out[: x.shape[0]].detach(), rows.reshape(cotangents.shape)


def _exact_replicated(stacked: Field, x: Tensor, chunk_size: int | None,
                      watch: _Stopwatch | None = None) -> tuple[Tensor, Tensor]:
    b, d = x.shape[0], x[0].numel()
    k = d if chunk_size is None else min(chunk_size, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    out, div = None, x.new_zeros(b)
    _mark(watch)  # no shared set-up: every pass runs the network
    for start in range(0, d, k):
        basis = eye[start : start + k]  # (c, D): replica j carries e_{start + j}
        cot = basis[:, None, :].expand(basis.shape[0], b, d).reshape(basis.shape[0], *x.shape)
        first, rows = _replicated_vjps(stacked, x, cot)
        out = first if out is None else out
        div = div + (rows * cot).flatten(2).sum(2).sum(0)
        if _mark(watch):
            break
    return out, div


def _exact_loop(v: Field, x: Tensor, watch: _Stopwatch | None = None) -> tuple[Tensor, Tensor]:
    """One forward pass, then ``D`` plain backward passes through its retained graph."""
    d, sample_shape = x[0].numel(), x.shape[1:]
    with torch.enable_grad():
        y, out = _with_graph(v, x)
        _mark(watch)
        div = x.new_zeros(x.shape[0])
        for i in range(d):
            e = torch.zeros(d, dtype=x.dtype, device=x.device)
            e[i] = 1
            e = e.reshape(sample_shape).expand_as(x)
            row = _vjp(out, y, e, batched=False, retain=i < d - 1)
            div = div + row.flatten(1)[:, i]
            if (i + 1) % LOOP_GROUP == 0 and _mark(watch):
                break
    if d % LOOP_GROUP and watch is not None and not watch.stop:
        watch.mark()
    return out.detach(), div


def _basis(x: Tensor) -> Tensor:
    """The ``D`` basis directions of one sample, shape ``(D, 1, *S)`` (broadcast over the batch)."""
    d = x[0].numel()
    return torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:])


def _exact_vmap(v: Field, x: Tensor, chunk_size: int | None, watch: _Stopwatch | None = None) -> tuple[Tensor, Tensor]:
    """One forward pass, then vmap over torch.func.vjp: ``chunk_size`` cotangents per batched pass."""
    out, vjp_fn = torch.func.vjp(v, x)
    _mark(watch)

    def diagonal_entry(e: Tensor) -> Tensor:
        # e_i^T J: row i of every sample's Jacobian; keep its i-th entry.
        (row,) = vjp_fn(e.expand_as(x))
        return (row * e).flatten(1).sum(1)

    basis = _basis(x)
    k = basis.shape[0] if chunk_size is None else chunk_size
    batched, div = torch.func.vmap(diagonal_entry), x.new_zeros(x.shape[0])
    for start in range(0, basis.shape[0], k):
        div = div + batched(basis[start : start + k]).sum(0)  # (k, batch) diagonal entries
        if _mark(watch):
            break
    return out, div


def _exact_forward(v: Field, x: Tensor, chunk_size: int | None,
                   watch: _Stopwatch | None = None) -> tuple[Tensor, Tensor]:
    """Forward mode: vmap over torch.func.jvp, ``chunk_size`` tangents :math:`J e_i` per pass (each
    pass also runs the field's primal computation, unbatched)."""
    basis = _basis(x)
    k = basis.shape[0] if chunk_size is None else chunk_size

    def diagonal_entry(e: Tensor) -> tuple[Tensor, Tensor]:
        out, col = torch.func.jvp(v, (x,), (e.expand_as(x),))  # J e_i: column i; keep its i-th entry
        return out, (col * e).flatten(1).sum(1)

    batched = torch.func.vmap(diagonal_entry, out_dims=(None, 0))
    out, div = None, x.new_zeros(x.shape[0])
    _mark(watch)  # no shared set-up
    for start in range(0, basis.shape[0], k):
        first, diag = batched(basis[start : start + k])
        out = first if out is None else out
        div = div + diag.sum(0)
        if _mark(watch):
            break
    return out, div


def exact_divergence(
    v: Field,
    x: Tensor,
    chunk_size: int | None = None,
    *,
    exact_method: str = "auto",
    batching: str | Batching = "auto",
    stacked: Field | None = None,
) -> tuple[Tensor, Tensor]:
    r"""``(v(x), tr J_v(x))`` with the trace exact, shape ``(batch,)``.

    The ``D`` products :math:`e_i^\top J_v` (or :math:`J_v e_i`) are taken by one of
    :data:`EXACT_METHODS` (``exact_method``):

    * ``"vmap"``: one forward pass, then :func:`torch.func.vmap` over :func:`torch.func.vjp`,
      ``chunk_size`` cotangents per batched backward pass (None: all ``D``);
    * ``"forward"``: forward mode, :func:`torch.func.vmap` over :func:`torch.func.jvp`,
      ``chunk_size`` tangents per pass, each pass also running the (unbatched) primal;
    * ``"loop"``: one forward pass and ``D`` plain backward passes through its retained graph
      (no functorch; ``chunk_size`` does not apply);
    * ``"replicate"``: the replicated method of the module docstring, ``ceil(D / k)`` forward and
      backward passes on ``k * batch`` rows, ``k = chunk_size``;
    * ``"auto"`` (default): ``D <= 4`` takes the loop. Otherwise the first call with a fresh
      ``batching`` measures the candidates by wall clock (:meth:`Batching.measure`): the loop (run
      in full, its answer is returned), then vmap and forward mode in passes of ``chunk_size``
      (without it: vmap with all ``D`` directions at once and in chunks of each of
      :data:`AUTO_CHUNKS` below ``D``, forward mode in chunks of the smallest), and keeps the
      fastest in ``batching.exact`` for every later
      call that shares the :class:`Batching` (one ODE solve). A candidate that runs out of memory is
      skipped; once functorch refuses the network, the replicated method is timed instead of the
      functorch candidates. On CUDA the device is synchronised at each clock read of that first
      call, and never afterwards. With a ``batching`` of mode ``"vmap"`` or ``"replicate"``,
      ``"auto"`` means that method, unmeasured.

    Args:
        v: per-sample vector field, ``(batch, *S) -> (batch, *S)``.
        x: points, shape ``(batch, *S)``.
        chunk_size: how many of the ``D`` basis directions are pushed through one batched pass
            (None: all of them); memory grows like ``chunk_size * batch * D``
            (replicated: also the network's activations on ``chunk_size * batch`` rows).
        exact_method: one of :data:`EXACT_METHODS` (above); must agree with ``batching``'s own
            when that is a :class:`Batching`.
        batching: ``"auto"``, ``"vmap"``, ``"replicate"``, or a :class:`Batching` whose
            decisions are shared across calls (as in one ODE solve).
        stacked: the field on ``k`` stacked copies of the batch, ``(k * batch, *S) -> (k * batch, *S)``,
            for the replicated method (default ``v``, which must then accept any number of rows).
    """
    b = as_batching(batching, exact_method)
    d = x[0].numel()
    runners = {
        "vmap": lambda c, watch=None: _exact_vmap(v, x, c, watch),
        "forward": lambda c, watch=None: _exact_forward(v, x, c, watch),
        "loop": lambda c, watch=None: _exact_loop(v, x, watch),
        "replicate": lambda c, watch=None: _exact_replicated(stacked or v, x, c, watch),
    }
    if b.exact is not None:  # decided at an earlier call of this solve
        return runners[b.exact.method](b.exact.chunk_size)
    method = b.exact_method
    if method == "auto" and b.mode != "auto":
        method = b.mode
    if method == "auto" and d <= _LOOP_MAX_DIM:  # vmap's fixed overhead dominates
        method = "loop"
    if method != "auto":
        result = runners[method](chunk_size)
        b.exact = ExactMethod(method, None if method == "loop" else chunk_size)
        return result
    if chunk_size is not None:
        candidates = [("loop", None), ("vmap", chunk_size), ("forward", chunk_size)]
    else:
        chunks = [c for c in AUTO_CHUNKS if c < d]
        candidates = [("loop", None)] + [("vmap", c) for c in chunks] + [("vmap", None)]
        candidates += [("forward", c) for c in chunks[:1]]  # never the fastest here, so one try
    candidates.append(("replicate", chunk_size))  # timed only when functorch refuses the network
    return b.measure(candidates, runners, x)


def hutchinson_divergence(
    v: Field,
    x: Tensor,
    probes: Tensor,
    chunk_size: int | None = None,
    *,
    batching: str | Batching = "auto",
    stacked: Field | None = None,
    per_probe: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""``(v(x), mean_k eps_k^T J_v(x) eps_k)``: the Hutchinson estimate, shape ``(batch,)``; with
    ``per_probe=True`` each probe's quadratic form :math:`\epsilon_k^\top J_v(x)\,\epsilon_k`, shape
    ``(batch, n_probes)`` (whose spread gives each sample's standard error).

    One forward pass and one backward pass per probe (plain autograd, the cheapest way for a
    handful of probes; several probes go through one batched backward pass).

    Args:
        v: per-sample vector field, ``(batch, *S) -> (batch, *S)``.
        x: points, shape ``(batch, *S)``.
        probes: ``(n_probes, batch, *S)`` directions with identity second moment
            (see :func:`draw_probes`).
        chunk_size: how many probes go through the backward pass at once (None: all).
        batching, stacked: as for :func:`exact_divergence` (several probes at once need vmap,
            or the replicated method).
    """
    n = probes.shape[0]
    step = n if chunk_size is None else min(chunk_size, n)

    def result(out: Tensor, forms: list[Tensor]) -> tuple[Tensor, Tensor]:  # forms: (k, batch) blocks
        each = torch.cat(forms).T  # (batch, n)
        return out, each if per_probe else each.mean(1)

    if n == 1:  # the common case, without the chunk bookkeeping
        with torch.enable_grad():
            y, out = _with_graph(v, x)
            row = _vjp(out, y, probes[0], batched=False, retain=False)
        form = (row * probes[0]).flatten(1).sum(1)
        return out.detach(), form[:, None] if per_probe else form

    def batched() -> tuple[Tensor, Tensor]:
        forms = []
        with torch.enable_grad():
            y, out = _with_graph(v, x)
            for start in range(0, n, step):
                eps = probes[start : start + step]
                last = start + step >= n
                if eps.shape[0] == 1:
                    rows = _vjp(out, y, eps[0], batched=False, retain=not last)[None]
                else:
                    rows = _vjp(out, y, eps, batched=True, retain=not last)
                forms.append((rows * eps).flatten(2).sum(2))
        return result(out.detach(), forms)

    def replicated() -> tuple[Tensor, Tensor]:
        out, forms = None, []
        for start in range(0, n, step):
            eps = probes[start : start + step]
            first, rows = _replicated_vjps(stacked or v, x, eps)
            out = first if out is None else out
            forms.append((rows * eps).flatten(2).sum(2))
        return result(out, forms)

    return as_batching(batching).run(batched, replicated)


def hutchpp_divergence(
    v: Field,
    x: Tensor,
    sketch: Tensor,
    probes: Tensor,
    *,
    batching: str | Batching = "auto",
    stacked: Field | None = None,
    per_probe: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""``(v(x), Hutch++ estimate of tr J_v(x))`` (Meyer, Musco, Musco & Woodruff 2021), shape ``(batch,)``;
    with ``per_probe=True`` one estimate per residual probe, shape ``(batch, n_probes)``.

    With the sketch :math:`S` (``m`` directions) and, per sample, :math:`Q` an orthonormal basis of
    :math:`J^\top S` (its reduced QR), the trace splits into the part on :math:`Q`'s span, computed
    exactly, and Hutchinson's estimate on its complement with the probes projected off it:

    .. math:: \operatorname{tr} J = \operatorname{tr}(Q^\top J Q)
              + \mathbb E\big[g^\top (I-QQ^\top) J (I-QQ^\top) g\big].

    Unbiased for any :math:`Q` independent of :math:`g`; its variance is Hutchinson's on the
    complement, small when a few directions carry most of :math:`J`'s off-diagonal mass (e.g. a
    Gaussian mixture's score between two competing components). Cost: ``2 m + n`` vector-Jacobian
    products after one forward pass, and a batched QR of ``(batch, D, m)``.

    Args:
        v: per-sample vector field, ``(batch, *S) -> (batch, *S)``.
        x: points, shape ``(batch, *S)``.
        sketch: ``(m, batch, *S)`` directions (e.g. Rademacher), ``m <= D``.
        probes: ``(n, batch, *S)`` Hutchinson probes for the complement.
        batching, stacked: as for :func:`exact_divergence`.
    """
    d, m = x[0].numel(), sketch.shape[0]
    if m > d:
        raise ArgumentError(f"Hutch++ needs at most D = {d} sketch directions, got {m}")

    def columns(c: Tensor) -> Tensor:  # (k, batch, *S) -> (batch, D, k)
        return c.flatten(2).permute(1, 2, 0)

    def directions(q: Tensor) -> Tensor:  # (batch, D, k) -> (k, batch, *S)
        return q.permute(2, 0, 1).reshape(q.shape[2], *x.shape)

    def estimate(vjps: Callable[[Tensor], Tensor]) -> Tensor:
        q, _ = torch.linalg.qr(columns(vjps(sketch)))  # (batch, D, m): a basis of J^T S
        qd = directions(q)
        low = (vjps(qd) * qd).flatten(2).sum(2).sum(0)  # tr(Q^T J Q)
        g = columns(probes)
        rd = directions(g - q @ (q.transpose(1, 2) @ g))  # the probes off Q's span
        each = low[:, None] + (vjps(rd) * rd).flatten(2).sum(2).T  # (batch, n)
        return each if per_probe else each.mean(1)

    def batched() -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            y, out = _with_graph(v, x)

            def vjps(c: Tensor) -> Tensor:
                if c.shape[0] == 1:
                    return _vjp(out, y, c[0], batched=False, retain=True)[None]
                return _vjp(out, y, c, batched=True, retain=True)

            return out.detach(), estimate(vjps)

    def replicated() -> tuple[Tensor, Tensor]:
        first: list[Tensor] = []

        def vjps(c: Tensor) -> Tensor:
            out, rows = _replicated_vjps(stacked or v, x, c)
            first.append(out)
            return rows

        est = estimate(vjps)
        return first[0], est

    return as_batching(batching).run(batched, replicated)


def check_score_differentiable(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor) -> None:
    r"""Raise unless ``score_fn(x, t)`` depends on ``x`` through autograd.

    The divergence :math:`\nabla\cdot s_\theta` is taken by autograd; a score that is detached
    from ``x`` (``.detach()``, a ``torch.no_grad()`` wrapper, a numpy round trip) has an autograd
    Jacobian of zero, and the log-likelihood would silently lose the whole divergence integral.
    One evaluation with one backward pass tells.
    """
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        s = call_score(score_fn, y, t.expand(x.shape[0]))
        row = None
        if s.requires_grad:
            (row,) = torch.autograd.grad(s, y, torch.ones_like(s), allow_unused=True)
    if row is None:
        raise ArgumentError(
            "score_fn is not differentiable in x: its output does not depend on x through autograd "
            "(it is detached, computed under torch.no_grad(), or leaves torch), so the divergence of "
            "the probability flow would be lost. Pass the network itself, or a score_fn without "
            "no_grad/.detach(); the likelihood changes no parameter and runs without parameter gradients"
        )


def draw_probes(
    like: Tensor, n: int, noise: str, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` probe vectors per sample of ``like``, shape ``(n, *like.shape)``, with
    :math:`E[\\epsilon\\epsilon^T] = I`: Rademacher (+-1) or standard Gaussian entries."""
    shape = (n, *like.shape)
    if noise == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    raise ArgumentError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
