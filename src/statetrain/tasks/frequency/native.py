"""The native engine: one compiled call trains a whole epoch of the reference loop.

The reference loop (see ``trainer``) is, per chunk of ``tbptt_steps`` rows: forward with the
carried state, MSE, backward through the chunk, clip the gradient norm, Adam/AdamW step,
detach the state. Here the same mathematics runs as one numba kernel per epoch, in float32
like PyTorch, single-threaded and deterministic (two runs from the same start are
bit-identical). The torch objects stay the source of truth: ``train_epoch`` reads the
parameters and the Adam state from them, runs the kernel, and writes both back in place in
torch's own format, so a later torch step or ``optimizer.state_dict()`` continues seamlessly.

Supported: ``FrequencyLSTM`` and its subclasses (any input size, hidden size and number of
layers, any number K of outputs, the loss then being the MSE over all N·K values as torch's
``MSELoss``; no dropout, no projections), ``torch.optim.Adam`` / ``AdamW`` with one param
group (any lr, betas, eps, weight decay; not amsgrad, maximize, capturable, differentiable
or fused), gradient clipping by total L2 norm (torch's ``clip_grad_norm_`` formula) or none,
``tbptt_steps >= 1`` and ``state_reset`` ``"epoch"`` or ``"stream"``. ``supports()`` says
so, or says why not.

Numerics: every elementwise operation is IEEE float32 (``fastmath=False``), in torch's
order where it matters (clip coefficient, Adam's lerp/moments/bias corrections; libm expf
and tanhf for the gates). The only licence taken is in dot products and sums of squares,
whose additions may be reordered (``fastmath={"reassoc"}``) so that they vectorise: the
freedom torch's own BLAS/oneDNN kernels take. Adam's division by sqrt(bias correction 2) is
skipped once that factor rounds to exactly 1.0 in float32 (beta2 0.999: step > ~16,600), as
x / 1 == x. Results agree with the torch reference loop to float32 rounding (tests: 1e-5
after 1,000 steps) and are deterministic on a given machine; like torch, the kernel slows a
little when Adam's first moments of an input that is always 0 in a stream decay into
denormals.

Layout: the kernels work on one flat float32 vector holding every tensor, the LSTM weights
transposed ((in, 4H) instead of (4H, in)) so that the gate pre-activations are sums of
contiguous rows. A one-step chunk (tbptt_steps=1, the reference loop) never stores its
gradient: it is an outer product, so its norm is a product of norms and Adam computes it on
the fly; longer chunks accumulate the gradient and then run Adam over it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

try:  # the module must import (and say why not) even where numba is missing
    from numba import njit

    NUMBA_ERROR = ""
except Exception as exc:  # pragma: no cover - depends on the environment
    NUMBA_ERROR = f"numba cannot be imported ({type(exc).__name__}: {exc})"

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn

        return wrap


_JIT = {"cache": True, "error_model": "numpy", "fastmath": False, "nogil": True}
# Reductions only: reassociation lets LLVM vectorise a sum; no other fast-math licence.
_JIT_SUM = {"cache": True, "error_model": "numpy", "fastmath": {"reassoc"}, "nogil": True}

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_CLIP_EPS = np.float32(1e-6)  # torch.nn.utils.clip_grad_norm_: max_norm / (total + 1e-6)

# Order of the counters the train kernel returns in one int64 array.
_CNT_CHUNKS, _CNT_ROWS, _CNT_UPDATES, _CNT_BAD, _CNT_STOPPED, _CNT_CLIPPED = range(6)


# ---------------------------------------------------------------------------------- kernels
@njit(**_JIT_SUM)
def _dot(a, b):
    s = _ZERO
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(**_JIT_SUM)
def _sumsq(a):
    s = _ZERO
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


@njit(**_JIT)
def _sigmoid(z):
    return _ONE / (_ONE + math.exp(-z))


@njit(**_JIT)
def _cell_forward(wih, whh, bih, bhh, inp, h0, c0, act, c1, tc1, h1):
    """One LSTM cell step. wih (I, 4H) and whh (H, 4H) are the transposed torch weights.

    act (4H,) receives the activated gates (i, f, g, o), c1/tc1/h1 (H,) the new cell,
    tanh(cell) and hidden state.
    """
    n_in = inp.shape[0]
    hid = h0.shape[0]
    gates = act.shape[0]
    for r in range(gates):
        act[r] = bih[r] + bhh[r]
    for j in range(n_in):
        xj = inp[j]
        w = wih[j]
        for r in range(gates):
            act[r] += xj * w[r]
    for j in range(hid):
        hj = h0[j]
        w = whh[j]
        for r in range(gates):
            act[r] += hj * w[r]
    for j in range(hid):
        act[j] = _sigmoid(act[j])
        act[hid + j] = _sigmoid(act[hid + j])
        act[2 * hid + j] = math.tanh(act[2 * hid + j])
        act[3 * hid + j] = _sigmoid(act[3 * hid + j])
    for j in range(hid):
        c = act[hid + j] * c0[j] + act[j] * act[2 * hid + j]
        t = math.tanh(c)
        c1[j] = c
        tc1[j] = t
        h1[j] = act[3 * hid + j] * t


@njit(**_JIT)
def _cell_backward(act, c0, tc1, dh, dc, da):
    """Backward of one cell step.

    dh (H,): gradient w.r.t. this step's h; dc (H,): w.r.t. this step's c from later steps,
    replaced by the gradient w.r.t. the previous c. da (4H,) receives the gradient w.r.t.
    the gate pre-activations.
    """
    hid = dh.shape[0]
    for j in range(hid):
        gi = act[j]
        gf = act[hid + j]
        gg = act[2 * hid + j]
        go = act[3 * hid + j]
        t = tc1[j]
        dhj = dh[j]
        dct = dc[j] + dhj * go * (_ONE - t * t)
        da[j] = dct * gg * gi * (_ONE - gi)
        da[hid + j] = dct * c0[j] * gf * (_ONE - gf)
        da[2 * hid + j] = dct * gi * (_ONE - gg * gg)
        da[3 * hid + j] = dhj * t * go * (_ONE - go)
        dc[j] = dct * gf


@njit(**_JIT)
def _outer_acc(g, u, da, assign):
    """g (n, 4H) += u (n,) ⊗ da (4H,)  (or = when assign)."""
    gates = da.shape[0]
    for j in range(u.shape[0]):
        uj = u[j]
        row = g[j]
        if assign:
            for r in range(gates):
                row[r] = uj * da[r]
        else:
            for r in range(gates):
                row[r] += uj * da[r]


@njit(**_JIT)
def _vec_acc(g, da, assign):
    if assign:
        for r in range(da.shape[0]):
            g[r] = da[r]
    else:
        for r in range(da.shape[0]):
            g[r] += da[r]


@njit(**_JIT)
def _adam_consts(step, hyper, coef):
    """The float32 scalars of one torch Adam step (as torch rounds them), and the flags.

    Returns ((coef, wd, decay, w1, 1 - w1, beta2, 1 - beta2, sqrt(bc2), eps, -lr/bc1),
    (scale the grad?, weight-decay mode, lerp weight < 0.5?)). As in torch, the bias
    corrections are Python floats: pow(beta, float(step)).
    """
    lr, beta1, beta2, eps, wd, mode = hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[6]
    bc1 = 1.0 - beta1 ** np.float64(step)
    bc2 = 1.0 - beta2 ** np.float64(step)
    w1 = np.float32(1.0 - beta1)
    cst = (
        coef,
        np.float32(wd),
        np.float32(1.0 - lr * wd),
        w1,
        _ONE - w1,
        np.float32(beta2),
        np.float32(1.0 - beta2),
        np.float32(bc2**0.5),
        np.float32(eps),
        np.float32(-(lr / bc1)),
    )
    flg = (np.int64(coef != _ONE), np.int64(mode), np.int64(w1 < np.float32(0.5)))
    return cst, flg


@njit(**_JIT)
def _consts_at(step, step0, cst0, flg0, hyper, coef):
    """_adam_consts for this step, reusing those of step0 (every tensor's step is usually the
    same, and the bias corrections cost two pow() calls each)."""
    if step == step0:
        return cst0, flg0
    return _adam_consts(step, hyper, coef)


@njit(**_JIT)
def _adam_elem(p, m, v, g, cst, flg, div_bc2):
    """torch's _single_tensor_adam for one float32 element, after clip_grad_norm_.

    Weight-decay mode 0: none; 1: Adam (L2, grad += wd * param); 2: AdamW (param *= decay).
    """
    coef, wd, decay, w1, omw1, b2, omb2, bc2s, eps, nss = cst
    if flg[0]:
        g = g * coef
    if flg[1] == 1:
        g = g + wd * p
    elif flg[1] == 2:
        p = p * decay
    # torch.lerp(m, g, w1) has two formulas depending on the weight
    m = m + w1 * (g - m) if flg[2] else g - (g - m) * omw1
    v = v * b2 + (omb2 * g) * g
    s = math.sqrt(v)
    if div_bc2:  # x / 1.0 == x: skipping the division is exact and saves a third of the cost
        s = s / bc2s
    return p + (nss * m) / (s + eps), m, v


@njit(**_JIT)
def _adam_flat(p, g, m, v, cst, flg):
    """Adam on one tensor whose gradient g is stored (1-D views)."""
    if cst[7] != _ONE:
        for i in range(p.shape[0]):
            pn, mn, vn = _adam_elem(p[i], m[i], v[i], g[i], cst, flg, True)
            p[i] = pn
            m[i] = mn
            v[i] = vn
    else:
        for i in range(p.shape[0]):
            pn, mn, vn = _adam_elem(p[i], m[i], v[i], g[i], cst, flg, False)
            p[i] = pn
            m[i] = mn
            v[i] = vn


@njit(**_JIT)
def _adam_outer(p, m, v, u, w, cst, flg):
    """Adam on one tensor (rows, cols) whose gradient is the outer product u ⊗ w.

    The gradient of a one-step chunk is such a product; computing it on the fly rounds
    exactly as storing it would, and saves writing and reading it.
    """
    for j in range(u.shape[0]):
        uj = u[j]
        pr = p[j]
        mr = m[j]
        vr = v[j]
        if cst[7] != _ONE:
            for r in range(pr.shape[0]):
                pn, mn, vn = _adam_elem(pr[r], mr[r], vr[r], uj * w[r], cst, flg, True)
                pr[r] = pn
                mr[r] = mn
                vr[r] = vn
        else:
            for r in range(pr.shape[0]):
                pn, mn, vn = _adam_elem(pr[r], mr[r], vr[r], uj * w[r], cst, flg, False)
                pr[r] = pn
                mr[r] = mn
                vr[r] = vn


@njit(**_JIT)
def _views(theta, lay, n_in, hid, n_layers):
    """The flat parameter (or gradient, or Adam moment) vector seen as the kernel's
    matrices: W_ih^T of layer 0 (I, 4H), of the other layers (L-1, H, 4H), W_hh^T
    (L, H, 4H), b_ih and b_hh (L, 4H), fc.weight (K, H), fc.bias (K, 1), for K outputs."""
    gates = 4 * hid
    n_out = (lay[6] - lay[5]) // hid
    wih0 = theta[lay[0] : lay[0] + n_in * gates].reshape((n_in, gates))
    wihr = theta[lay[1] : lay[1] + (n_layers - 1) * hid * gates].reshape((n_layers - 1, hid, gates))
    whh = theta[lay[2] : lay[2] + n_layers * hid * gates].reshape((n_layers, hid, gates))
    bih = theta[lay[3] : lay[3] + n_layers * gates].reshape((n_layers, gates))
    bhh = theta[lay[4] : lay[4] + n_layers * gates].reshape((n_layers, gates))
    fcw = theta[lay[5] : lay[5] + n_out * hid].reshape((n_out, hid))
    fcb = theta[lay[6] : lay[6] + n_out].reshape((n_out, 1))
    return wih0, wihr, whh, bih, bhh, fcw, fcb


@njit(**_JIT)
def _segments(lay, n_in, hid, n_layers, size):
    """Flat offsets of the tensors in torch's parameter order (per-tensor norms, Adam steps)."""
    gates = 4 * hid
    n_seg = 4 * n_layers + 2
    seg = np.empty(n_seg + 1, dtype=np.int64)
    seg[0] = lay[0]
    for layer in range(1, n_layers):
        seg[layer] = lay[1] + (layer - 1) * hid * gates
    for layer in range(n_layers):
        seg[n_layers + layer] = lay[2] + layer * hid * gates
        seg[2 * n_layers + layer] = lay[3] + layer * gates
        seg[3 * n_layers + layer] = lay[4] + layer * gates
    seg[4 * n_layers] = lay[5]
    seg[4 * n_layers + 1] = lay[6]
    seg[n_seg] = size
    return seg


@njit(**_JIT)
def _train_kernel(
    x,
    y,
    bounds,
    resets,
    theta,
    exp_avg,
    exp_avg_sq,
    steps,
    lay,
    hid,
    n_layers,
    h_state,
    c_state,
    hyper,
    max_bad,
    chunk_loss,
    chunk_gn,
    chunk_good,
    chunk_hn,
    chunk_cn,
    counters,
    class_w,
):
    """One epoch of the reference loop over the chunks [bounds[c], bounds[c+1]).

    Updates theta, exp_avg, exp_avg_sq, steps (one per tensor, flat order), h_state and
    c_state in place; fills the per-chunk arrays and the counters. hyper (float64): lr,
    beta1, beta2, eps, weight_decay, clip (negative: off), weight-decay mode. The loss is
    the MSE over the chunk's N·K values when class_w is empty; otherwise torch's
    cross_entropy(logits, y[:, 0], weight=class_w) (mean: Σ w_y·nll / Σ w_y).
    """
    ce = class_w.shape[0] > 0
    n_in = x.shape[1]
    gates = 4 * hid
    n_chunks = bounds.shape[0] - 1
    kmax = 1
    for c in range(n_chunks):
        kmax = max(kmax, bounds[c + 1] - bounds[c])
    clip_on = hyper[5] >= 0.0
    clip = np.float32(hyper[5])

    grad = np.zeros_like(theta)
    wih0, wihr, whh, bih, bhh, fcw, fcb = _views(theta, lay, n_in, hid, n_layers)
    gwih0, gwihr, gwhh, gbih, gbhh, gfcw, gfcb = _views(grad, lay, n_in, hid, n_layers)
    mwih0, mwihr, mwhh, mbih, mbhh, mfcw, mfcb = _views(exp_avg, lay, n_in, hid, n_layers)
    vwih0, vwihr, vwhh, vbih, vbhh, vfcw, vfcb = _views(exp_avg_sq, lay, n_in, hid, n_layers)
    n_seg = 4 * n_layers + 2
    seg = _segments(lay, n_in, hid, n_layers, theta.shape[0])  # flat offsets, flat order

    hb = np.zeros((kmax + 1, n_layers, hid), dtype=np.float32)
    cb = np.zeros((kmax + 1, n_layers, hid), dtype=np.float32)
    tcb = np.zeros((kmax, n_layers, hid), dtype=np.float32)
    act = np.zeros((kmax, n_layers, gates), dtype=np.float32)
    n_out = fcw.shape[0]
    err = np.zeros((kmax, n_out), dtype=np.float32)
    dh = np.zeros((n_layers, hid), dtype=np.float32)
    dc = np.zeros((n_layers, hid), dtype=np.float32)
    da = np.zeros((n_layers, gates), dtype=np.float32)
    one = np.ones(1, dtype=np.float32)
    dout = np.zeros(n_out, dtype=np.float32)
    norms = np.zeros(n_seg, dtype=np.float32)

    consecutive_bad = 0
    for c in range(n_chunks):
        a = bounds[c]
        n = bounds[c + 1] - a
        if resets[c]:
            h_state[:] = _ZERO
            c_state[:] = _ZERO
        hb[0] = h_state
        cb[0] = c_state

        # ---- forward through the chunk
        se = _ZERO
        wsum = _ONE
        for t in range(n):
            for layer in range(n_layers):
                if layer == 0:
                    inp = x[a + t]
                    wih = wih0
                else:
                    inp = hb[t + 1, layer - 1]
                    wih = wihr[layer - 1]
                _cell_forward(
                    wih,
                    whh[layer],
                    bih[layer],
                    bhh[layer],
                    inp,
                    hb[t, layer],
                    cb[t, layer],
                    act[t, layer],
                    cb[t + 1, layer],
                    tcb[t, layer],
                    hb[t + 1, layer],
                )
            if ce:  # logits for now; log-softmax after the chunk's forward
                for k in range(n_out):
                    err[t, k] = _dot(fcw[k], hb[t + 1, n_layers - 1]) + fcb[k, 0]
                continue
            for k in range(n_out):
                e = (_dot(fcw[k], hb[t + 1, n_layers - 1]) + fcb[k, 0]) - y[a + t, k]
                err[t, k] = e
                se += e * e
        if ce:
            # log_softmax, weighted NLL; err[t] becomes the probabilities exp(log p)
            wsum = _ZERO
            for t in range(n):
                m = err[t, 0]
                for k in range(1, n_out):
                    m = max(m, err[t, k])
                z = _ZERO
                for k in range(n_out):
                    z += math.exp(err[t, k] - m)
                lse = np.float32(math.log(z))
                cls = int(y[a + t, 0])
                w = class_w[cls]
                se += -(w * ((err[t, cls] - m) - lse))
                wsum += w
                for k in range(n_out):
                    err[t, k] = math.exp((err[t, k] - m) - lse)
            loss = se / wsum
        else:
            loss = se / np.float32(n * n_out)

        # ---- backward through the chunk (the state entering it is detached).
        # A one-step chunk keeps its gradient factored (outer products); a longer one sums
        # the outer products of its steps into grad.
        inv_n = _ONE / np.float32(n * n_out)
        cls = 0
        g = _ZERO
        dh[:] = _ZERO
        dc[:] = _ZERO
        factored = n == 1
        for t in range(n - 1, -1, -1):
            first = t == n - 1
            top = hb[t + 1, n_layers - 1]
            if ce:
                cls = int(y[a + t, 0])
                g = class_w[cls] / wsum
            for k in range(n_out):
                if ce:
                    d = g * (err[t, k] - _ONE) if k == cls else g * err[t, k]
                else:
                    d = inv_n * (_TWO * err[t, k])
                dout[k] = d
                for j in range(hid):
                    dh[n_layers - 1, j] += d * fcw[k, j]
            if not factored:
                _outer_acc(gfcw, dout, top, first)
                for k in range(n_out):
                    gfcb[k, 0] = dout[k] if first else gfcb[k, 0] + dout[k]
            for layer in range(n_layers - 1, -1, -1):
                dal = da[layer]
                _cell_backward(
                    act[t, layer], cb[t, layer], tcb[t, layer], dh[layer], dc[layer], dal
                )
                if layer > 0:
                    w = wihr[layer - 1]
                    for j in range(hid):
                        dh[layer - 1, j] += _dot(w[j], dal)
                if t > 0:
                    w = whh[layer]
                    for j in range(hid):
                        dh[layer, j] = _dot(w[j], dal)
                if factored:
                    continue
                _vec_acc(gbih[layer], dal, first)
                _vec_acc(gbhh[layer], dal, first)
                if layer == 0:
                    _outer_acc(gwih0, x[a + t], dal, first)
                else:
                    _outer_acc(gwihr[layer - 1], hb[t + 1, layer - 1], dal, first)
                _outer_acc(gwhh[layer], hb[t, layer], dal, first)

        # ---- per-tensor L2 norms and their L2 norm, as clip_grad_norm_
        if factored:  # |u ⊗ w| = |u| |w|
            nd = np.float32(abs(dout[0])) if n_out == 1 else np.float32(math.sqrt(_sumsq(dout)))
            norms[0] = math.sqrt(_sumsq(x[a])) * math.sqrt(_sumsq(da[0]))
            for layer in range(n_layers):
                nda = math.sqrt(_sumsq(da[layer]))
                if layer > 0:
                    norms[layer] = math.sqrt(_sumsq(hb[1, layer - 1])) * nda
                norms[n_layers + layer] = math.sqrt(_sumsq(hb[0, layer])) * nda
                norms[2 * n_layers + layer] = nda
                norms[3 * n_layers + layer] = nda
            norms[4 * n_layers] = nd * math.sqrt(_sumsq(hb[1, n_layers - 1]))
            norms[4 * n_layers + 1] = nd
        else:
            for s in range(n_seg):
                norms[s] = math.sqrt(_sumsq(grad[seg[s] : seg[s + 1]]))
        gn = math.sqrt(_sumsq(norms))

        # ---- the state leaves the chunk (detached)
        h_state[:] = hb[n]
        c_state[:] = cb[n]

        good = math.isfinite(loss) and math.isfinite(gn)
        chunk_loss[c] = loss
        chunk_gn[c] = gn
        chunk_good[c] = good
        counters[_CNT_CHUNKS] = c + 1
        if not good:
            counters[_CNT_BAD] += 1
            consecutive_bad += 1
            finite = True
            for layer in range(n_layers):
                for j in range(hid):
                    if not (math.isfinite(h_state[layer, j]) and math.isfinite(c_state[layer, j])):
                        finite = False
            if not finite:  # a poisoned state would poison every later step
                h_state[:] = _ZERO
                c_state[:] = _ZERO
            chunk_hn[c] = np.nan
            chunk_cn[c] = np.nan
            if consecutive_bad >= max_bad:
                counters[_CNT_STOPPED] = 1
                break
            continue
        consecutive_bad = 0

        # ---- clip_grad_norm_ (grad *= min(clip / (total + 1e-6), 1)) and the Adam step
        coef = _ONE
        if clip_on:
            coef = (_ONE / (gn + _CLIP_EPS)) * clip
            if coef > _ONE:
                coef = _ONE
            if gn > clip:
                counters[_CNT_CLIPPED] += 1
        for s in range(n_seg):
            steps[s] += 1
        s0 = steps[0]
        c0, f0 = _adam_consts(s0, hyper, coef)
        if factored:
            cst, flg = c0, f0
            _adam_outer(wih0, mwih0, vwih0, x[a], da[0], cst, flg)
            for layer in range(n_layers):
                dal = da[layer]
                if layer > 0:
                    cst, flg = _consts_at(steps[layer], s0, c0, f0, hyper, coef)
                    u = hb[1, layer - 1]
                    _adam_outer(
                        wihr[layer - 1], mwihr[layer - 1], vwihr[layer - 1], u, dal, cst, flg
                    )
                cst, flg = _consts_at(steps[n_layers + layer], s0, c0, f0, hyper, coef)
                _adam_outer(whh[layer], mwhh[layer], vwhh[layer], hb[0, layer], dal, cst, flg)
                cst, flg = _consts_at(steps[2 * n_layers + layer], s0, c0, f0, hyper, coef)
                lo = layer
                hi = layer + 1
                _adam_outer(bih[lo:hi], mbih[lo:hi], vbih[lo:hi], one, dal, cst, flg)
                cst, flg = _consts_at(steps[3 * n_layers + layer], s0, c0, f0, hyper, coef)
                _adam_outer(bhh[lo:hi], mbhh[lo:hi], vbhh[lo:hi], one, dal, cst, flg)
            cst, flg = _consts_at(steps[4 * n_layers], s0, c0, f0, hyper, coef)
            _adam_outer(fcw, mfcw, vfcw, dout, hb[1, n_layers - 1], cst, flg)
            cst, flg = _consts_at(steps[4 * n_layers + 1], s0, c0, f0, hyper, coef)
            _adam_outer(fcb, mfcb, vfcb, dout, one, cst, flg)
        else:
            for s in range(n_seg):
                lo = seg[s]
                hi = seg[s + 1]
                cst, flg = _consts_at(steps[s], s0, c0, f0, hyper, coef)
                _adam_flat(theta[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], cst, flg)
        counters[_CNT_UPDATES] += 1
        counters[_CNT_ROWS] += n
        chunk_hn[c] = math.sqrt(_sumsq(h_state.ravel()))
        chunk_cn[c] = math.sqrt(_sumsq(c_state.ravel()))


@njit(**_JIT)
def _forward_kernel(x, resets, theta, lay, hid, n_layers, out, h_state, c_state):
    """Frozen forward pass over all rows; state zeroed where resets[row] is set."""
    n_in = x.shape[1]
    gates = 4 * hid
    wih0, wihr, whh, bih, bhh, fcw, fcb = _views(theta, lay, n_in, hid, n_layers)
    act = np.zeros(gates, dtype=np.float32)
    tc = np.zeros(hid, dtype=np.float32)
    h_new = np.zeros((n_layers, hid), dtype=np.float32)
    c_new = np.zeros((n_layers, hid), dtype=np.float32)
    for row in range(x.shape[0]):
        if resets[row]:
            h_state[:] = _ZERO
            c_state[:] = _ZERO
        for layer in range(n_layers):
            if layer == 0:
                inp = x[row]
                wih = wih0
            else:
                inp = h_new[layer - 1]
                wih = wihr[layer - 1]
            _cell_forward(
                wih,
                whh[layer],
                bih[layer],
                bhh[layer],
                inp,
                h_state[layer],
                c_state[layer],
                act,
                c_new[layer],
                tc,
                h_new[layer],
            )
        h_state[:] = h_new
        c_state[:] = c_new
        for k in range(fcw.shape[0]):
            out[row, k] = _dot(fcw[k], h_new[n_layers - 1]) + fcb[k, 0]


# numpy computes (and caches) its float limits on first use; computed under flush-to-zero they
# would warn that the smallest subnormal is zero. Compute them now, before any kernel runs.
np.finfo(np.float32), np.finfo(np.float64)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush float32 denormals to zero (the CPU's FTZ/DAZ, via torch) while a kernel runs.

    Adam's moments of a weight whose gradient is always 0 (the one-hot column of a frequency
    the rows never select, for a thousand steps and more) decay geometrically into the
    denormal range, where every operation on them is far slower: the reference loop's
    epochs grew from 0.6 s to 10 s over 30 epochs of the default experiment. Flushed, those
    moments become 0 instead of < 1.2e-38, which moves a weight by less than 1e-30 (far below
    a float32 ulp of any weight), and epochs keep their speed. The setting is per thread and
    is switched off again afterwards (torch's default).
    """
    import torch

    on = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if on:
            torch.set_flush_denormal(False)


# ------------------------------------------------------------------------- torch interface
@dataclass
class EpochResult:
    """What one native epoch did; the same quantities the torch reference loop reports.

    ``loss`` is the online MSE over the rows of the applied (finite) steps, ``rows`` those
    rows; skipped steps count in ``bad_steps`` only. ``state_norms`` is the mean over applied
    steps of the L2 norms of h and of c (all layers) as they leave each chunk.
    """

    loss: float
    rows: int
    updates: int
    grad_norm_mean: float
    clipped_fraction: float
    bad_steps: int
    stopped_early: bool
    state_norms: tuple[float, float]
    final_state: tuple[np.ndarray, np.ndarray]
    chunk_losses: np.ndarray = field(repr=False)  # per chunk processed, float32
    chunk_grad_norms: np.ndarray = field(repr=False)  # total norm before clipping
    chunk_applied: np.ndarray = field(repr=False)  # bool: the step was taken


@dataclass
class _Layout:
    """Where each torch tensor lives in the flat float32 vector the kernels use."""

    n_in: int
    hid: int
    n_layers: int
    n_out: int
    size: int
    lay: np.ndarray  # offsets: wih0, wih rest, whh, b_ih, b_hh, fc.weight, fc.bias
    entries: list  # (param, offset, transposed) in flat order


def _layout(model) -> _Layout:
    lstm = model.lstm
    n_in, hid, n_layers = lstm.input_size, lstm.hidden_size, lstm.num_layers
    n_out = model.fc.out_features
    gates = 4 * hid
    sizes = [
        n_in * gates,
        (n_layers - 1) * hid * gates,
        n_layers * hid * gates,
        n_layers * gates,
        n_layers * gates,
        n_out * hid,
        n_out,
    ]
    lay = np.zeros(7, dtype=np.int64)
    lay[1:] = np.cumsum(sizes)[:-1]
    entries = [(lstm.weight_ih_l0, int(lay[0]), True)]
    off = int(lay[1])
    for layer in range(1, n_layers):
        entries.append((getattr(lstm, f"weight_ih_l{layer}"), off, True))
        off += hid * gates
    for layer in range(n_layers):
        entries.append(
            (getattr(lstm, f"weight_hh_l{layer}"), int(lay[2]) + layer * hid * gates, True)
        )
    for layer in range(n_layers):
        entries.append((getattr(lstm, f"bias_ih_l{layer}"), int(lay[3]) + layer * gates, False))
    for layer in range(n_layers):
        entries.append((getattr(lstm, f"bias_hh_l{layer}"), int(lay[4]) + layer * gates, False))
    entries.append((model.fc.weight, int(lay[5]), False))
    entries.append((model.fc.bias, int(lay[6]), False))
    return _Layout(n_in, hid, n_layers, n_out, sum(sizes), lay, entries)


def _pack(layout: _Layout, tensors) -> np.ndarray:
    """Torch-shaped tensors (one per layout entry) → the flat float32 vector."""
    flat = np.empty(layout.size, dtype=np.float32)
    for (_, off, transposed), t in zip(layout.entries, tensors, strict=True):
        a = t.detach().cpu().numpy()
        if transposed:
            a = a.T
        flat[off : off + a.size] = a.ravel()
    return flat


def _unpack_into(layout: _Layout, flat: np.ndarray, tensors) -> None:
    import torch

    for (p, off, transposed), t in zip(layout.entries, tensors, strict=True):
        shape = tuple(p.shape)
        if transposed:
            a = flat[off : off + p.numel()].reshape(shape[::-1]).T
        else:
            a = flat[off : off + p.numel()].reshape(shape)
        t.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def _model_support(model) -> str:
    """Empty when the kernels can run this model, else why not (one sentence)."""
    if NUMBA_ERROR:
        return NUMBA_ERROR
    try:
        import torch

        from .model import FrequencyLSTM
    except Exception as exc:  # pragma: no cover
        return f"torch or the model cannot be imported ({exc})"
    if not isinstance(model, FrequencyLSTM):
        return f"the native kernel implements FrequencyLSTM only, not {type(model).__name__}"
    lstm, fc = getattr(model, "lstm", None), getattr(model, "fc", None)
    if not isinstance(lstm, torch.nn.LSTM) or not isinstance(fc, torch.nn.Linear):
        return "the model's lstm/fc submodules are not nn.LSTM/nn.Linear"
    if not lstm.batch_first or not lstm.bias or lstm.bidirectional or lstm.proj_size:
        return "the native kernel needs a batch_first, biased, unidirectional LSTM"
    if lstm.dropout and lstm.num_layers > 1:
        return "the native kernel does not implement dropout between LSTM layers"
    if fc.out_features < 1 or fc.in_features != lstm.hidden_size or fc.bias is None:
        return "the native kernel needs fc = Linear(hidden_size, outputs) with a bias"
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        return "the native kernel needs float32 parameters on the CPU"
    return ""


def supports(model, optimizer, *, tbptt_steps=1, state_reset="epoch", clip_grad_norm=1.0):
    """(True, "") when train_epoch reproduces the reference loop for these options, else
    (False, the reason in one sentence)."""
    why = _model_support(model)
    if why:
        return False, why
    import torch

    params = list(model.parameters())
    if not all(p.requires_grad for p in params):
        return False, "the native kernel trains every parameter; some have requires_grad=False"
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return False, (
            f"the native kernel implements Adam and AdamW only, not {type(optimizer).__name__}"
        )
    if len(optimizer.param_groups) != 1:
        return False, "the native kernel needs exactly one optimizer param group"
    group = optimizer.param_groups[0]
    same = {id(p) for p in group["params"]} == {id(p) for p in params}
    if not same or len(group["params"]) != len(params):
        return False, "the optimizer's parameters are not exactly the model's parameters"
    for flag in ("amsgrad", "maximize", "capturable", "differentiable", "fused"):
        if group.get(flag):
            return False, f"the native kernel does not implement Adam with {flag}=True"
    try:
        values = [float(group["lr"]), *map(float, group["betas"]), float(group["eps"])]
        values.append(float(group["weight_decay"]))
    except (TypeError, ValueError, KeyError) as exc:
        return False, f"the optimizer's hyperparameters cannot be read as numbers ({exc})"
    if not all(math.isfinite(v) for v in values):
        return False, "the optimizer's hyperparameters are not all finite"
    if not isinstance(tbptt_steps, (int, np.integer)) or tbptt_steps < 1:
        return False, f"tbptt_steps must be an integer >= 1, got {tbptt_steps!r}"
    if state_reset not in ("epoch", "stream"):
        return False, f"state_reset must be 'epoch' or 'stream', got {state_reset!r}"
    if clip_grad_norm is not None and not (
        math.isfinite(float(clip_grad_norm)) and float(clip_grad_norm) >= 0
    ):
        return False, f"clip_grad_norm must be None or a finite number >= 0, got {clip_grad_norm}"
    return True, ""


def _starts_array(stream_starts, n_rows: int) -> np.ndarray:
    if stream_starts is None:
        return np.zeros(1, dtype=np.int64)
    starts = np.asarray(stream_starts, dtype=np.int64).ravel()
    if (
        starts.size == 0
        or starts[0] != 0
        or np.any(np.diff(starts) <= 0)
        or starts[-1] >= max(n_rows, 1)
    ):
        raise ValueError(
            "stream_starts must be strictly increasing row indices that begin at 0 and lie "
            f"below the number of rows ({n_rows}); got {starts[:10]}..."
        )
    return starts


def _chunk_bounds(n_rows: int, stream_starts, tbptt_steps: int, state_reset: str):
    """(bounds, resets): chunk c is rows [bounds[c], bounds[c+1]); resets[c] zeroes the state
    before it. The same chunks as the reference loop."""
    k = int(tbptt_steps)
    if state_reset == "epoch":
        firsts = np.arange(0, n_rows, k, dtype=np.int64)
        resets = firsts == 0
    else:
        starts = _starts_array(stream_starts, n_rows)
        ends = np.append(starts[1:], n_rows)
        parts = [np.arange(s, e, k, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
        firsts = np.concatenate(parts)
        resets = np.isin(firsts, starts)
    # a chunk ends where the next one begins: k rows later, or at the next stream start
    bounds = np.append(firsts, np.int64(n_rows)).astype(np.int64)
    return bounds, resets.astype(np.bool_)


def _as_inputs(x, y=None, n_out: int = 1):
    # C-contiguous, aligned and writeable: a read-only array is another numba type (recompile)
    x = np.require(x, dtype=np.float32, requirements=("C", "A", "W"))
    if x.ndim != 2:
        raise ValueError(f"x must be (N, input_size), got shape {x.shape}")
    if y is None:
        return x, None
    y = np.asarray(y, dtype=np.float32)
    if y.size != x.shape[0] * n_out or (y.ndim == 2 and y.shape[1] != n_out) or y.ndim > 2:
        raise ValueError(
            f"x has {x.shape[0]} rows and the model {n_out} output(s), so y must be "
            f"({x.shape[0]},{' ' + str(n_out) if n_out > 1 else ''}); got shape {y.shape}"
        )
    y = np.require(y.reshape(x.shape[0], n_out), requirements=("C", "A", "W"))
    return x, y


@dataclass
class AdamState:
    """A model's parameters and its Adam/AdamW state as the kernels' flat float32 vectors.

    ``of`` reads them from the torch objects (a tensor without state yet counts as zeros at
    step 0, as torch creates it on the first step); ``write_back`` puts them back in torch's
    own format, so a later torch step, ``optimizer.state_dict()`` or a checkpoint sees no
    difference. Both kernels (the reference loop's and the window kernel) go through it.
    """

    layout: _Layout
    params: list
    theta: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    steps: np.ndarray  # one per tensor, flat order
    hyper: np.ndarray  # float64: lr, beta1, beta2, eps, weight_decay, clip (<0: off), wd mode

    @classmethod
    def of(cls, model, optimizer, clip_grad_norm: float | None) -> AdamState:
        import torch

        layout = _layout(model)
        params = [e[0] for e in layout.entries]
        states = [optimizer.state.get(p, {}) for p in params]
        pairs = list(zip(states, params, strict=True))
        zeros = torch.zeros_like
        group = optimizer.param_groups[0]
        decoupled = bool(group.get("decoupled_weight_decay", False)) or isinstance(
            optimizer, torch.optim.AdamW
        )
        wd = float(group["weight_decay"])
        hyper = [float(group["lr"]), *(float(b) for b in group["betas"]), float(group["eps"])]
        hyper += [wd, -1.0 if clip_grad_norm is None else float(clip_grad_norm)]
        hyper.append(0 if wd == 0 else (2 if decoupled else 1))
        return cls(
            layout=layout,
            params=params,
            theta=_pack(layout, params),
            exp_avg=_pack(layout, [st["exp_avg"] if st else zeros(p) for st, p in pairs]),
            exp_avg_sq=_pack(layout, [st["exp_avg_sq"] if st else zeros(p) for st, p in pairs]),
            steps=np.array([int(float(st["step"])) if st else 0 for st in states], np.int64),
            hyper=np.array(hyper, dtype=np.float64),
        )

    def write_back(self, optimizer) -> None:
        """Parameters always; the Adam state once a step has been taken (torch creates a
        tensor's state on its first step)."""
        import torch

        with torch.no_grad():
            _unpack_into(self.layout, self.theta, [p.data for p in self.params])
            if not np.all(self.steps > 0):
                return
            for p in self.params:
                if not optimizer.state.get(p):
                    optimizer.state[p] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [optimizer.state[p] for p in self.params]
            _unpack_into(self.layout, self.exp_avg, [st["exp_avg"] for st in states])
            _unpack_into(self.layout, self.exp_avg_sq, [st["exp_avg_sq"] for st in states])
            for st, step in zip(states, self.steps, strict=True):
                if isinstance(st["step"], torch.Tensor):
                    st["step"].fill_(float(step))
                else:  # an old checkpoint's plain number
                    st["step"] = torch.tensor(float(step), dtype=torch.float32)


def train_epoch(
    model,
    optimizer,
    x,
    y,
    stream_starts=None,
    *,
    tbptt_steps: int = 1,
    state_reset: str = "epoch",
    clip_grad_norm: float | None = 1.0,
    max_bad_steps: int = 100,
    class_weights=None,
) -> EpochResult:
    """One epoch of the reference loop, natively; parameters and Adam state updated in place.

    x (N, input_size) and y (N,) (or (N, K) for a model of K outputs) float32 rows in time
    order; with ``class_weights`` (K,) the loss is torch's weighted cross-entropy of the K
    logits instead, and y (N,) holds class indices; stream_starts the rows where a
    stream begins (needed for ``state_reset="stream"``). Raises ValueError when
    ``supports()`` refuses the options.
    """

    ok, why = supports(
        model,
        optimizer,
        tbptt_steps=tbptt_steps,
        state_reset=state_reset,
        clip_grad_norm=clip_grad_norm,
    )
    if not ok:
        raise ValueError(f"the native engine cannot run this configuration: {why}")
    if int(max_bad_steps) < 1:
        raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
    layout = _layout(model)
    if class_weights is None:
        class_w = np.zeros(0, dtype=np.float32)
        x, y = _as_inputs(x, y, layout.n_out)
    else:
        class_w = np.require(
            np.asarray(class_weights, dtype=np.float32).reshape(-1), None, ("C", "A", "W")
        )
        x, y = _as_inputs(x, y, 1)
        if class_w.shape[0] != layout.n_out or layout.n_out < 2:
            raise ValueError(
                f"{class_w.shape[0]} class weights for a model of {layout.n_out} outputs; give "
                "one weight per class (at least two classes)"
            )
        if not np.all(np.isfinite(class_w)) or np.any(class_w <= 0):
            raise ValueError("class weights must be finite and positive")
        labels = y[:, 0]
        if np.any((labels < 0) | (labels >= layout.n_out) | (labels != np.floor(labels))):
            raise ValueError(f"y must hold class indices 0..{layout.n_out - 1}")
    if x.shape[1] != layout.n_in:
        raise ValueError(f"x has {x.shape[1]} columns but the model takes {layout.n_in} inputs")
    n_rows = x.shape[0]
    bounds, resets = _chunk_bounds(n_rows, stream_starts, tbptt_steps, state_reset)
    n_chunks = len(bounds) - 1

    adam = AdamState.of(model, optimizer, clip_grad_norm)
    theta, exp_avg, exp_avg_sq, steps = adam.theta, adam.exp_avg, adam.exp_avg_sq, adam.steps

    h_state = np.zeros((layout.n_layers, layout.hid), dtype=np.float32)
    c_state = np.zeros_like(h_state)
    chunk_loss = np.zeros(n_chunks, dtype=np.float32)
    chunk_gn = np.zeros(n_chunks, dtype=np.float32)
    chunk_good = np.zeros(n_chunks, dtype=np.bool_)
    chunk_hn = np.zeros(n_chunks, dtype=np.float32)
    chunk_cn = np.zeros(n_chunks, dtype=np.float32)
    counters = np.zeros(6, dtype=np.int64)
    with flush_denormals():
        _train_kernel(
            x,
            y,
            bounds,
            resets,
            theta,
            exp_avg,
            exp_avg_sq,
            steps,
            layout.lay,
            layout.hid,
            layout.n_layers,
            h_state,
            c_state,
            adam.hyper,
            int(max_bad_steps),
            chunk_loss,
            chunk_gn,
            chunk_good,
            chunk_hn,
            chunk_cn,
            counters,
            class_w,
        )

    updates = int(counters[_CNT_UPDATES])
    adam.write_back(optimizer)

    done = int(counters[_CNT_CHUNKS])
    good = chunk_good[:done]
    losses = chunk_loss[:done]
    sizes = np.diff(bounds)[:done]
    rows = int(counters[_CNT_ROWS])
    sq_err = float(np.sum(losses[good].astype(np.float64) * sizes[good]))
    grad_norms = chunk_gn[:done][good]
    n_good = max(updates, 1)
    shape = (layout.n_layers, 1, layout.hid)
    return EpochResult(
        loss=sq_err / max(rows, 1),
        rows=rows,
        updates=updates,
        grad_norm_mean=float(np.mean(grad_norms, dtype=np.float64)) if updates else float("nan"),
        clipped_fraction=int(counters[_CNT_CLIPPED]) / n_good,
        bad_steps=int(counters[_CNT_BAD]),
        stopped_early=bool(counters[_CNT_STOPPED]),
        state_norms=(
            float(np.sum(chunk_hn[:done][good], dtype=np.float64)) / n_good,
            float(np.sum(chunk_cn[:done][good], dtype=np.float64)) / n_good,
        ),
        final_state=(h_state.reshape(shape).copy(), c_state.reshape(shape).copy()),
        chunk_losses=losses.copy(),
        chunk_grad_norms=chunk_gn[:done].copy(),
        chunk_applied=good.copy(),
    )


def evaluate(model, x, stream_starts=None, *, state_reset: str = "epoch") -> np.ndarray:
    """Frozen predictions (N,) float32 ((N, K) for a model of K > 1 outputs): no updates, the
    state carried from zero through all rows (``"epoch"``) or zeroed at every stream start
    (``"stream"``)."""
    why = _model_support(model)
    if why:
        raise ValueError(f"the native engine cannot evaluate this model: {why}")
    if state_reset not in ("epoch", "stream"):
        raise ValueError(f"state_reset must be 'epoch' or 'stream', got {state_reset!r}")
    x, _ = _as_inputs(x)
    layout = _layout(model)
    if x.shape[1] != layout.n_in:
        raise ValueError(f"x has {x.shape[1]} columns but the model takes {layout.n_in} inputs")
    resets = np.zeros(x.shape[0], dtype=np.bool_)
    if x.shape[0]:
        resets[0] = True
        if state_reset == "stream":
            resets[_starts_array(stream_starts, x.shape[0])] = True
    theta = _pack(layout, [e[0] for e in layout.entries])
    out = np.zeros((x.shape[0], layout.n_out), dtype=np.float32)
    h_state = np.zeros((layout.n_layers, layout.hid), dtype=np.float32)
    c_state = np.zeros_like(h_state)
    _forward_kernel(
        x, resets, theta, layout.lay, layout.hid, layout.n_layers, out, h_state, c_state
    )
    return out[:, 0] if layout.n_out == 1 else out


def warmup() -> None:
    """Compile (or load from the disk cache) both kernels on tiny inputs."""
    if NUMBA_ERROR:
        return
    import torch

    from .model import FrequencyLSTM

    model = FrequencyLSTM(input_size=2, hidden_size=2, num_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = np.zeros((4, 2), dtype=np.float32)
    y = np.zeros(4, dtype=np.float32)
    train_epoch(model, opt, x, y, [0, 2], tbptt_steps=2, state_reset="stream")
    two = FrequencyLSTM(input_size=2, hidden_size=2)
    two.fc = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(two.parameters(), lr=1e-3)
    train_epoch(two, opt, x, y, [0, 2], state_reset="stream", class_weights=[1.0, 1.0])
    evaluate(model, x, [0, 2], state_reset="stream")
