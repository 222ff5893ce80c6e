"""Every fast kernel equals its reference: forward and every gradient, in float64, over 300 seeded random
cases each (odd and non-square shapes, every option, ties in max pooling, the convolution by im2col and
by Winograd), and the sweep catches a fast kernel broken by one part in a million."""

import inspect

import numpy as np
import pytest

from cifar_scratch.nn import fast, kernels, reference
from cifar_scratch.nn.fast import conv

CASES = 300
#: A mismatch: a difference beyond float64 rounding of a different summation order.
TOLERANCE = 1e-9


def _conv(rng):
    while True:
        n, h, w, c, f = rng.integers(1, 4), rng.integers(1, 10), rng.integers(1, 10), rng.integers(1, 5), rng.integers(1, 5)
        kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = ["same", "valid", 0, 1, 2, 3][rng.integers(6)]
        try:
            out, _ = reference.conv2d_forward(np.zeros((n, h, w, c)), np.zeros((*kernel, c, f)), None, stride, padding)
        except ValueError:
            continue
        if out.size:
            break
    args = (
        rng.standard_normal((n, h, w, c)),
        rng.standard_normal((*kernel, c, f)),
        rng.standard_normal(f) if rng.random() < 0.7 else None,
    )
    return "conv2d", args + (stride, padding), {}, [True, False][rng.integers(2)]


def _winograd(rng):
    """Stride-1 3x3 convolutions, 'same' or 'valid', the ones Winograd computes: outputs that fill their
    tiles (4x4 or 5x5: both come up), overhang them (the last tiles partly outside) or fall short of one; and a third of other
    convolutions, which must go by im2col whatever the algorithm asked for."""
    if rng.random() < 1 / 3:
        return _conv(rng)
    padding = ["same", 1, "valid", 0][rng.integers(4)]
    smallest = 1 if padding in ("same", 1) else 3
    n, h, w = rng.integers(1, 4), rng.integers(smallest, 11), rng.integers(smallest, 11)
    c, f = rng.integers(1, 6), rng.integers(1, 6)
    args = (
        rng.standard_normal((n, h, w, c)),
        rng.standard_normal((3, 3, c, f)),
        rng.standard_normal(f) if rng.random() < 0.7 else None,
    )
    return "conv2d", args + (1, padding), {}, [True, False][rng.integers(2)]


def _maxpool(rng):
    while True:
        n, h, w, c = rng.integers(1, 4), rng.integers(1, 10), rng.integers(1, 10), rng.integers(1, 4)
        size = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        stride = None if rng.random() < 0.4 else (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        if size[0] <= h and size[1] <= w:
            break
    # Half the cases in small integers: ties, as after a ReLU, where the first maximum must win.
    x = rng.integers(0, 3, (n, h, w, c)).astype(np.float64) if rng.random() < 0.5 else rng.standard_normal((n, h, w, c))
    return "maxpool", (x, size, stride), {}, None


def _batchnorm(rng):
    shape = tuple(int(d) for d in rng.integers(1, 6, rng.choice([2, 4])))
    shape = (max(shape[0], 2), *shape[1:])
    c = shape[-1]
    affine = rng.random() < 0.7
    gamma, beta = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    running = (rng.standard_normal(c), rng.random(c) + 0.5)
    training = bool(rng.random() < 0.8)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 5) + rng.uniform(-3, 3)
    return (
        "batchnorm",
        (x, gamma, beta, *running, training, float(rng.uniform(0.01, 1)), float(10 ** rng.uniform(-12, -1))),
        {},
        None,
    )


def _elementwise(name):
    def case(rng):
        shape = tuple(int(d) for d in rng.integers(1, 7, rng.integers(1, 5)))
        x = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 4.0])
        x.flat[rng.integers(x.size)] = 0.0  # the kink of ReLU, the seam of the erf approximation
        return name, (x,), {}, None

    return case


FAMILIES = {
    "relu": _elementwise("relu"),
    "gelu": _elementwise("gelu"),
    "gelu_erf": _elementwise("gelu_erf"),
    "conv2d": _conv,
    "conv2d_winograd": _winograd,
    "maxpool": _maxpool,
    "batchnorm": _batchnorm,
}
#: The fast kernels each family checks (forward, backward).
CHECKED = {
    "relu": ("relu_forward", "relu_backward"),
    "gelu": ("gelu_forward", "gelu_backward"),
    "gelu_erf": ("gelu_erf_forward", "gelu_backward"),
    "conv2d": ("conv2d_forward", "conv2d_backward"),
    "conv2d_winograd": ("conv2d_forward", "conv2d_backward"),
    "maxpool": ("maxpool_forward", "maxpool_backward"),
    "batchnorm": ("batchnorm_forward", "batchnorm_backward"),
}


#: The fast engine's convolution algorithm per family (the others keep the default, im2col).
ALGORITHM = {"conv2d_winograd": "winograd"}


def run(engine, family, args, input_grad, dout_seed):
    """Forward and backward of one case with ``engine``'s kernels -> every output array, in order."""
    previous = conv.use_algorithm(ALGORITHM.get(family, "im2col"))
    try:
        return _run(engine, family, args, input_grad, dout_seed)
    finally:
        conv.use_algorithm(previous)


def _run(engine, family, args, input_grad, dout_seed):
    forward_name, backward_name = CHECKED[family]
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]  # batch norm updates its running stats
    out, cache = getattr(engine, forward_name)(*args)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape)
    results = [out]
    if family == "batchnorm":
        results += [args[3], args[4]]  # the running statistics after the update
        if not args[5]:  # evaluation: no backward pass
            return results
    extra = (input_grad,) if input_grad is not None else ()
    grads = getattr(engine, backward_name)(dout, cache, *extra)
    return results + list(grads if isinstance(grads, tuple) else (grads,))


def mismatches(family: str, cases: int = CASES, seed: int = 0) -> list[str]:
    rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    found = []
    for case in range(cases):
        _, args, _, input_grad = FAMILIES[family](rng)
        ours = run(fast, family, args, input_grad, case)
        theirs = run(reference, family, args, input_grad, case)
        for position, (a, b) in enumerate(zip(ours, theirs)):
            if a is None or b is None:
                if a is not b:
                    found.append(f"case {case}: output {position} is None on one side only")
                continue
            scale = max(1.0, float(np.abs(b).max(initial=0.0)))
            if a.shape != b.shape or a.dtype != b.dtype or np.abs(a - b).max(initial=0.0) > TOLERANCE * scale:
                found.append(f"case {case}: output {position} differs")
    return found


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_fast_kernel_equals_its_reference(family):
    assert mismatches(family) == []


@pytest.mark.parametrize("family, name", [(family, name) for family, names in CHECKED.items() for name in names])
def test_the_sweep_catches_a_fast_kernel_off_by_one_part_in_a_million(family, name, monkeypatch):
    original = getattr(fast, name)

    def broken(*args, **kwargs):
        result = original(*args, **kwargs)
        first = next(r for r in (result if isinstance(result, tuple) else (result,)) if r is not None)
        first *= 1 + 1e-6  # a planted bug: the first output a millionth too large
        return result

    monkeypatch.setattr(fast, name, broken)
    assert mismatches(family, cases=20), f"a broken {name} went unnoticed"


def test_every_fast_kernel_has_a_reference_with_its_signature():
    assert set(fast.FAST) <= set(kernels.KERNELS)
    assert {name for names in CHECKED.values() for name in names} == set(fast.FAST), "every fast kernel is swept"
    for name in kernels.KERNELS:
        assert hasattr(reference, name), f"fast kernel {name} has no reference"
        ours, theirs = inspect.signature(getattr(fast, name)), inspect.signature(getattr(reference, name))
        assert list(ours.parameters) == list(theirs.parameters), name


@pytest.mark.parametrize(
    "name, algorithm",
    [(name, "im2col") for name in ("cifar_cnn", "speedrun93", "resnet_small", "mlp10")]
    + [("cifar_cnn", "winograd"), ("speedrun93", "winograd")],
)
def test_the_engines_agree_on_the_shipped_models_in_float32(name, algorithm):
    """A training step of a shipped model, float32: every layer, given the input and the output gradient
    it got in the reference engine's step, gives the same output, input gradient and parameter gradients
    in the fast engine, within float32 rounding (they sum in different orders; Winograd rounds
    differently again). Layer by layer, not end to end: where two roundings straddle a ReLU's zero or a
    tie in a max-pooling window, they route a whole gradient value differently, and in a step of 4
    images of this size that happens by chance (about once per 10^5 values)."""
    from cifar_scratch.builders import build_model, model_input_shape, num_classes
    from cifar_scratch.config import load_config
    from cifar_scratch.nn import layers
    from tests.conftest import REPO

    config = load_config(REPO / "configs" / f"{name}.yaml")
    models, calls = {}, []
    for engine in kernels.ENGINES:
        rng = np.random.default_rng(0)
        models[engine] = build_model(config.model, model_input_shape(config), num_classes(config), rng, batch_size=4)
        x = rng.standard_normal((4, *models[engine].input_shape)).astype(np.float32)
        labels = rng.integers(0, num_classes(config), 4)
    leaves = {layer_name: m for layer_name, m in models["fast"].named_modules() if isinstance(m, layers.Layer)}
    for layer_name, layer in models["reference"].named_modules():
        if isinstance(layer, layers.Layer):  # keep what every layer is given and gives, in call order

            def forward(x, _method=layer.forward, _name=layer_name):
                out = _method(x)
                calls.append((_name, "forward", x.copy(), {}, out.copy()))
                return out

            def backward(dout, _method=layer.backward, _name=layer_name, **options):
                dx = _method(dout, **options)
                calls.append((_name, "backward", dout.copy(), options, None if dx is None else dx.copy()))
                return dx

            layer.forward, layer.backward = forward, backward
    with kernels.using("reference", algorithm):
        _, dlogits = reference.softmax_cross_entropy(models["reference"].forward(x), labels)
        models["reference"].backward(dlogits)

    def agree(ours, theirs, what):
        assert ours.dtype == theirs.dtype == np.float32, what
        assert np.abs(ours - theirs).max() <= 1e-4 * (float(np.abs(theirs).max(initial=0.0)) or 1.0), what

    with kernels.using("fast", algorithm):
        for layer_name, phase, given, options, gave in calls:
            got = getattr(leaves[layer_name], phase)(given, **options)
            assert (got is None) == (gave is None), (layer_name, phase)
            if got is not None:
                agree(got, gave, (layer_name, phase))
    for key, value in models["fast"].grads.items():
        agree(value, models["reference"].grads[key], key)
