"""The native engine for whole-window training: one compiled call per optimizer step.

Window training (``window.py``) runs B sequences of L steps through PyTorch's sequence LSTM
from a zero state, takes the MSE, backpropagates through the whole window, clips and steps
Adam. At the sizes the issue-19 recipe uses (16 hidden units, B = 2 to 8) PyTorch spends most
of each step dispatching small per-time-step operations, and the number of iterations before a
frequency locks (thousands) sets the cost of a run. Here the same mathematics runs as one
numba kernel per iteration, on the flat float32 parameter layout of ``native`` (whose layout,
Adam state and Adam update it shares), single-threaded and deterministic.

Numerics: float32, torch's formulas, except the gate nonlinearities: a rational approximation
of tanh (max error 4e-7, tested) instead of libm calls, so that the gate loops vectorise; the
sums over batch and time run in the kernel's own order (sample by sample, time backwards), and
the W_hh^T mat-vec may reassociate (as BLAS does). Results agree with the torch path to about
float32 rounding (tests: six iterations, parameters within 1e-5 of their scale) and, as with
any float32 training of a chaotic recipe, drift apart over thousands of iterations. Two runs on
one machine are bit-identical.

Supported: a one-layer FrequencyLSTM (any input, hidden and output size) with what
``native.supports`` accepts (Adam/AdamW, clipping by total norm) and the MSE loss;
``supports_window`` says so, or why not.
"""

from __future__ import annotations

import math

import numpy as np

from .native import (
    _CLIP_EPS,
    _JIT,
    _JIT_SUM,
    _ONE,
    _TWO,
    _ZERO,
    AdamState,
    _adam_consts,
    _adam_flat,
    _pack,
    _segments,
    _unpack_into,
    _views,
    flush_denormals,
    njit,
    supports,
)

# Eigen-style rational approximation of tanh (odd degree 13 over even degree 6), clamped where
# float32 tanh is ±1 to within 3e-7: only +, -, ×, ÷ and min/max, so the compiler vectorises
# the gate loops (libm's tanhf/expf are scalar calls and took most of a step), and every CPU
# rounds it the same way. Max error 4e-7 (≤ 7 ulp near saturation, < 1 ulp on average).
_TANH_CLAMP = np.float32(7.90531110763549805)
_TA = tuple(
    np.float32(v)
    for v in (
        4.89352455891786e-03,
        6.37261928875436e-04,
        1.48572235717979e-05,
        5.12229709037114e-08,
        -8.60467152213735e-11,
        2.00018790482477e-13,
        -2.76076847742355e-16,
    )
)
_TB = tuple(
    np.float32(v)
    for v in (
        4.89352518554385e-03,
        2.26843463243900e-03,
        1.18534705686654e-04,
        1.19825839466702e-06,
    )
)
_HALF = np.float32(0.5)


_INLINE = {**_JIT, "inline": "always"}  # inlined, so that the gate loops vectorise


@njit(**_INLINE)
def _tanh(x):
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _TA[6] + _TA[5]
    p = x2 * p + _TA[4]
    p = x2 * p + _TA[3]
    p = x2 * p + _TA[2]
    p = x2 * p + _TA[1]
    p = x2 * p + _TA[0]
    q = x2 * _TB[3] + _TB[2]
    q = x2 * q + _TB[1]
    q = x2 * q + _TB[0]
    return (x * p) / q


@njit(**_INLINE)
def _sigmoid(x):
    return _HALF * _tanh(_HALF * x) + _HALF


@njit(**_JIT)
def _activate(a, hid):
    """Gate pre-activations (i, f, g, o) → activations, in place (a loop of its own, so that
    it vectorises)."""
    for r in range(2 * hid):
        a[r] = _sigmoid(a[r])
    for r in range(2 * hid, 3 * hid):
        a[r] = _tanh(a[r])
    for r in range(3 * hid, 4 * hid):
        a[r] = _sigmoid(a[r])


@njit(**_JIT_SUM)
def _matvec(w, v, out, rows, cols):
    """out[j] = Σ_r w[j·cols + r] · v[r]: dot products whose additions may be reordered so
    that they vectorise (the licence BLAS takes; 3-4× faster than the fixed-order form)."""
    for j in range(rows):
        s = _ZERO
        o = j * cols
        for r in range(cols):
            s += w[o + r] * v[r]
        out[j] = s


@njit(**_JIT)
def _sumsq_ordered(a):
    """Σ a² in index order (no reassociation: the same on every CPU)."""
    s = _ZERO
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


@njit(**_JIT)
def _window_grad(x, y, theta, grad, lay, hid):
    """The MSE of a one-layer FrequencyLSTM over whole windows, and its gradient into grad.

    x (B, L, I) and y (B, L, K) float32; every sequence starts from a zero state. The loss is
    the MSE over all B·L·K values (returned as float32). Every sum runs in a fixed order (the
    vectorised loops are element-wise), so the result does not depend on the CPU's vector
    width. Written with plain indices: array views made per time step cost reference counting
    in numba.
    """
    n_b, n_t, n_in = x.shape
    gates = 4 * hid
    h2 = 2 * hid
    h3 = 3 * hid
    n_out = y.shape[2]
    wih3, _, whh3, bih2, bhh2, fcw, fcb = _views(theta, lay, n_in, hid, 1)
    gwih3, _, gwhh3, gbih2, gbhh2, gfcw, gfcb = _views(grad, lay, n_in, hid, 1)
    wih = wih3
    whh = whh3[0]
    gwih = gwih3
    gwhh = gwhh3[0]
    gbih = gbih2[0]
    gbhh = gbhh2[0]
    grad[:] = _ZERO
    bias = np.empty(gates, dtype=np.float32)
    for r in range(gates):
        bias[r] = bih2[0, r] + bhh2[0, r]
    # flat buffers, row-major: hb/cb (L + 1, H), tcb (L, H), act (L, 4H), err (L, K)
    hb = np.zeros((n_t + 1) * hid, dtype=np.float32)
    cb = np.zeros((n_t + 1) * hid, dtype=np.float32)
    tcb = np.zeros(n_t * hid, dtype=np.float32)
    act = np.zeros(n_t * gates, dtype=np.float32)
    err = np.zeros(n_t * n_out, dtype=np.float32)
    a = np.zeros(gates, dtype=np.float32)
    dh = np.zeros(hid, dtype=np.float32)
    dc = np.zeros(hid, dtype=np.float32)
    da = np.zeros(gates, dtype=np.float32)
    gb = np.zeros(gates, dtype=np.float32)
    wf = wih.ravel()
    hf = whh.ravel()
    gwf = gwih.ravel()
    ghf = gwhh.ravel()
    fwf = fcw.ravel()
    gfwf = gfcw.ravel()
    inv_n = _ONE / np.float32(n_b * n_t * n_out)
    se_total = 0.0  # float64 across sequences: the loss is reported, not differentiated
    for b in range(n_b):
        xb = x[b].ravel()
        yb = y[b].ravel()
        # ---- forward from a zero state
        se = _ZERO
        for t in range(n_t):
            for r in range(gates):
                a[r] = bias[r]
            for j in range(n_in):
                xj = xb[t * n_in + j]
                o = j * gates
                for r in range(gates):
                    a[r] += xj * wf[o + r]
            ht = t * hid
            for j in range(hid):
                hj = hb[ht + j]
                o = j * gates
                for r in range(gates):
                    a[r] += hj * hf[o + r]
            _activate(a, hid)
            at = t * gates
            for r in range(gates):
                act[at + r] = a[r]
            hn = ht + hid
            for j in range(hid):
                c = a[hid + j] * cb[ht + j] + a[j] * a[h2 + j]
                cb[hn + j] = c
                tc = _tanh(c)
                tcb[ht + j] = tc
                hb[hn + j] = a[h3 + j] * tc
            for k in range(n_out):
                s = fcb[k, 0]
                o = k * hid
                for j in range(hid):
                    s += fwf[o + j] * hb[hn + j]
                e = s - yb[t * n_out + k]
                err[t * n_out + k] = e
                se += e * e
        se_total += se
        # ---- backward through the whole window, gradients summed into grad
        for j in range(hid):
            dh[j] = _ZERO
            dc[j] = _ZERO
        for t in range(n_t - 1, -1, -1):
            ht = t * hid
            hn = ht + hid
            at = t * gates
            for k in range(n_out):
                d = inv_n * (_TWO * err[t * n_out + k])
                gfcb[k, 0] += d
                o = k * hid
                for j in range(hid):
                    gfwf[o + j] += d * hb[hn + j]
                for j in range(hid):
                    dh[j] += d * fwf[o + j]
            for j in range(hid):
                gi = act[at + j]
                gf = act[at + hid + j]
                gg = act[at + h2 + j]
                go = act[at + h3 + j]
                tc = tcb[ht + j]
                dct = dc[j] + dh[j] * go * (_ONE - tc * tc)
                da[j] = dct * gg * gi * (_ONE - gi)
                da[hid + j] = dct * cb[ht + j] * gf * (_ONE - gf)
                da[h2 + j] = dct * gi * (_ONE - gg * gg)
                da[h3 + j] = dh[j] * tc * go * (_ONE - go)
                dc[j] = dct * gf
            _matvec(hf, da, dh, hid, gates)
            for r in range(gates):
                gb[r] += da[r]
            for j in range(n_in):
                xj = xb[t * n_in + j]
                o = j * gates
                for r in range(gates):
                    gwf[o + r] += xj * da[r]
            for j in range(hid):
                hj = hb[ht + j]
                o = j * gates
                for r in range(gates):
                    ghf[o + r] += hj * da[r]
    for r in range(gates):  # b_ih and b_hh receive the same gradient
        gbih[r] = gb[r]
        gbhh[r] = gb[r]
    return np.float32(se_total * inv_n)


@njit(**_JIT)
def _window_step(x, y, theta, grad, exp_avg, exp_avg_sq, steps, lay, hid, hyper, out):
    """One optimizer step of whole-window training of a one-layer FrequencyLSTM.

    The loss and gradient of ``_window_grad``; theta, exp_avg, exp_avg_sq and steps (one per
    tensor) are updated in place when the loss and the gradient norm are finite; out receives
    (loss, total gradient norm before clipping, applied 0/1). hyper (float64): lr, beta1,
    beta2, eps, weight_decay, clip (negative: off), weight-decay mode.
    """
    n_in = x.shape[2]
    loss = _window_grad(x, y, theta, grad, lay, hid)
    # ---- clip_grad_norm_ over the per-tensor norms, then Adam
    seg = _segments(lay, n_in, hid, 1, theta.shape[0])
    n_seg = seg.shape[0] - 1
    norms = np.zeros(n_seg, dtype=np.float32)
    for s in range(n_seg):
        norms[s] = math.sqrt(_sumsq_ordered(grad[seg[s] : seg[s + 1]]))
    gn = np.float32(math.sqrt(_sumsq_ordered(norms)))
    out[0] = loss
    out[1] = gn
    out[2] = 0.0
    if not (math.isfinite(loss) and math.isfinite(gn)):
        return
    coef = _ONE
    if hyper[5] >= 0.0:
        coef = (_ONE / (gn + _CLIP_EPS)) * np.float32(hyper[5])
        if coef > _ONE:
            coef = _ONE
    for s in range(n_seg):
        steps[s] += 1
        cst, flg = _adam_consts(steps[s], hyper, coef)
        lo = seg[s]
        hi = seg[s + 1]
        _adam_flat(theta[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], cst, flg)
    out[2] = 1.0


def supports_window(model, optimizer, criterion, clip_grad_norm) -> tuple[bool, str]:
    """(True, "") when ``WindowSession`` runs these options as the torch path does, else
    (False, the reason in one sentence)."""
    import torch

    if type(criterion) is not torch.nn.MSELoss or criterion.reduction != "mean":
        return False, "the native window kernel implements MSELoss(reduction='mean') only"
    ok, why = supports(model, optimizer, state_reset="stream", clip_grad_norm=clip_grad_norm)
    if ok and model.lstm.num_layers != 1:
        return False, "the native window kernel implements one LSTM layer"
    return ok, why


class WindowSession:
    """The model's parameters and Adam state as flat arrays for a run of window steps.

    Open it, call ``step`` once per iteration (the learning rate may change between steps),
    and ``close`` to write the parameters and the optimizer state back into the torch objects
    in torch's own format, so checkpoints, evaluation and a later torch step see no difference.
    """

    def __init__(self, model, optimizer, clip_grad_norm: float | None) -> None:
        self.optimizer = optimizer
        self.adam = AdamState.of(model, optimizer, clip_grad_norm)
        self.layout = self.adam.layout
        self.grad = np.zeros_like(self.adam.theta)
        self._out = np.zeros(3, dtype=np.float32)
        self._average: np.ndarray | None = None
        self._average_into: list = []

    def start_average(self, params: list, average: list) -> None:
        """Keep an exponential moving average of the weights, starting from ``average`` (one
        tensor per entry of ``params``, the model's trainable tensors), updated by ``step``
        and written back into those tensors by ``close``."""
        index = {id(p): i for i, p in enumerate(params)}
        self._average_into = [average[index[id(p)]] for p in self.adam.params]
        self._average = _pack(self.layout, self._average_into)

    def step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        average: float = 0.0,
        signal_decay: float = 0.0,
    ) -> tuple[float, float, bool]:
        """One iteration on x (B, L, I), y (B, L) or (B, L, K): (loss, grad norm, applied).
        After an applied step the weights on input 0 (S) shrink by ``lr · signal_decay``
        (decoupled decay) and then the average (``start_average``) moves by ``average`` of
        the way to the new weights."""
        x, y = self._inputs(x, y)
        adam = self.adam
        adam.hyper[0] = float(lr)
        lay = self.layout
        with flush_denormals():
            _window_step(
                x,
                y,
                adam.theta,
                self.grad,
                adam.exp_avg,
                adam.exp_avg_sq,
                adam.steps,
                lay.lay,
                lay.hid,
                adam.hyper,
                self._out,
            )
        applied = bool(self._out[2])
        if applied and signal_decay:
            adam.theta[self.signal_rows()] *= np.float32(1.0 - lr * signal_decay)
        if applied and self._average is not None:
            self._average += np.float32(average) * (adam.theta - self._average)
        return float(self._out[0]), float(self._out[1]), applied

    def _inputs(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, L, I) and y as the kernel's contiguous float32 (B, L, K), or a ValueError."""
        n_out = self.layout.n_out
        x = np.require(x, dtype=np.float32, requirements=("C", "A", "W"))
        if x.ndim != 3 or x.shape[2] != self.layout.n_in:
            raise ValueError(f"x must be (batch, steps, {self.layout.n_in}), got shape {x.shape}")
        y = np.asarray(y, dtype=np.float32)
        if y.size != x.shape[0] * x.shape[1] * n_out:
            raise ValueError(
                f"y must hold {n_out} target(s) per row of x {x.shape[:2]}, got shape {y.shape}"
            )
        return x, np.require(y.reshape(x.shape[0], x.shape[1], n_out), requirements=("C", "A", "W"))

    def signal_rows(self) -> slice:
        """Where the gate weights on input 0 (the signal S) lie in the flat layout: the first
        row of W_ih^T."""
        start = int(self.layout.lay[0])
        return slice(start, start + 4 * self.layout.hid)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> float:
        """The window MSE at the current weights, its gradient left in ``self.grad`` (the
        flat layout of ``self.adam.theta``); no step is taken."""
        x, y = self._inputs(x, y)
        lay = self.layout
        with flush_denormals():
            return float(_window_grad(x, y, self.adam.theta, self.grad, lay.lay, lay.hid))

    def close(self) -> None:
        """Write the parameters, the Adam moments, the step counts and the average (if any)
        back into torch."""
        self.adam.write_back(self.optimizer)
        if self._average is not None:
            import torch

            with torch.no_grad():
                _unpack_into(self.layout, self._average, self._average_into)
