"""Layer state in fgm.nn: BatchNorm and spectral norm as an explicit second pytree, against torch's modules.

Every reference is the torch module itself (``nn.BatchNorm*d``,
``torch.nn.utils.parametrizations.spectral_norm``), run in float64 with
ordinary in-place buffers; fgm's pure apply must give the same outputs,
the same new buffers and the same gradients, and never write into its
arguments.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fgm import ensemble, random
from fgm import nn as fnn
from fgm.tree import tree_allclose, tree_clone, tree_equal

TOL = {"rtol": 1e-10, "atol": 1e-12}


def twin(build, seed=0):
    """A float64 torch module and fgm's (template, apply) of the same architecture, with the module's values."""
    torch.manual_seed(seed)  # the reference module's own init; fgm's code never reads the global RNG
    module = build().double()
    template, apply = fnn.stateful(build)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    state = {k: v.detach().clone() for k, v in module.named_buffers()}
    return module, apply, params, state


def torch_step(module, x, weights):
    """One forward/backward of the reference: output, d(Σ w·y)/d(x, params), buffers after."""
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    (y * weights).sum().backward()
    grads = {k: p.grad.clone() for k, p in module.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    return y.detach(), x.grad, grads, buffers


def fgm_step(apply, params, state, x, weights, train):
    def objective(params, x):
        y, new_state = apply(params, state, x, train=train)
        return (y * weights).sum(), (y, new_state)

    (grad_params, grad_x), (y, new_state) = torch.func.grad(objective, argnums=(0, 1), has_aux=True)(params, x)
    return y, grad_x, grad_params, new_state


# --------------------------------------------------------------------------- BatchNorm


BATCH_NORMS = {
    "2d": (lambda: nn.BatchNorm2d(3), (6, 3, 4, 5)),
    "2d_cumulative": (lambda: nn.BatchNorm2d(3, momentum=None), (6, 3, 4, 5)),
    "2d_no_affine": (lambda: nn.BatchNorm2d(3, affine=False, momentum=0.3), (6, 3, 4, 5)),
    "1d_features": (lambda: nn.BatchNorm1d(5), (7, 5)),
    "1d_sequence": (lambda: nn.BatchNorm1d(4), (3, 4, 6)),
    "untracked": (lambda: nn.BatchNorm2d(3, track_running_stats=False), (6, 3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(BATCH_NORMS))
def test_batch_norm_equals_torch_in_training_then_evaluation(name):
    build, shape = BATCH_NORMS[name]
    module, apply, params, state = twin(build)
    # A non-trivial affine map, so that a swapped weight and bias would show.
    params = {k: v + torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype) for k, v in params.items()}
    with torch.no_grad():
        for k, p in module.named_parameters():
            p.copy_(params[k])
    for t in range(3):  # three training steps: the running statistics accumulate (and count, for momentum=None)
        x = random.normal(random.key(t), shape, dtype=torch.float64) * (t + 1) + t
        weights = random.normal(random.key(100 + t), shape, dtype=torch.float64)
        before = tree_clone((params, state, x))
        y, gx, gp, new_state = fgm_step(apply, params, state, x, weights, train=True)
        ry, rgx, rgp, rbuffers = torch_step(module.train(), x, weights)
        assert tree_equal(before, (params, state, x))  # pure: nothing written into the arguments
        assert torch.allclose(y, ry, **TOL) and torch.allclose(gx, rgx, **TOL)
        assert tree_allclose(gp, rgp, **TOL)
        assert tree_allclose(new_state, rbuffers, **TOL)
        state = new_state
    x = random.normal(random.key(9), shape, dtype=torch.float64) * 3 + 2
    weights = random.normal(random.key(10), shape, dtype=torch.float64)
    y, gx, gp, eval_state = fgm_step(apply, params, state, x, weights, train=False)
    ry, rgx, rgp, rbuffers = torch_step(module.eval(), x, weights)
    assert torch.allclose(y, ry, **TOL) and torch.allclose(gx, rgx, **TOL) and tree_allclose(gp, rgp, **TOL)
    assert all(eval_state[k] is state[k] for k in state)  # evaluation changes no statistic


def test_batch_norm_running_variance_is_unbiased_and_counts_batches():
    """The update written out: m·mean and m·unbiased variance; the batch count grows by one."""
    template, apply = fnn.stateful(lambda: nn.BatchNorm1d(2, momentum=0.25))
    params = fnn.init_params(template, random.key(0))
    state = fnn.init_state(template, params, random.key(1))
    x = torch.tensor([[1.0, 10.0], [2.0, 10.0], [6.0, 13.0]])
    _, new = apply(params, state, x, train=True)
    assert torch.allclose(new["running_mean"], 0.75 * torch.zeros(2) + 0.25 * torch.tensor([3.0, 11.0]))
    unbiased = torch.tensor([((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2, (1 + 1 + 4) / 2])
    assert torch.allclose(new["running_var"], 0.75 * torch.ones(2) + 0.25 * unbiased)
    assert new["num_batches_tracked"].dtype == torch.long and int(new["num_batches_tracked"]) == 1


def test_init_state_is_torchs_fresh_buffers():
    module, _, _, torch_state = twin(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    template, _ = fnn.stateful(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    params = fnn.init_params(template, random.key(0))
    state = fnn.init_state(template, params, random.key(1))
    assert tree_equal(state, {k: v.float() if v.is_floating_point() else v for k, v in torch_state.items()})
    assert params["1.weight"].eq(1).all() and params["1.bias"].eq(0).all()  # torch's BatchNorm init


# --------------------------------------------------------------------------- spectral norm


SPECTRAL = {
    "linear": (lambda: spectral_norm(nn.Linear(6, 4)), (5, 6)),
    "conv": (lambda: nn.Sequential(spectral_norm(nn.Conv2d(2, 3, 3)), nn.Flatten()), (4, 2, 5, 5)),
    "conv_transpose": (lambda: spectral_norm(nn.ConvTranspose2d(3, 2, 4, 2, 1)), (4, 3, 3, 3)),  # dim = 1
    "three_iterations": (lambda: spectral_norm(nn.Linear(6, 4), n_power_iterations=3), (5, 6)),
}


def _sigma(module):
    """torch's σ: the original weight over the normalised one (any non-zero entry)."""
    layer = module[0] if isinstance(module, nn.Sequential) else module
    original = layer.parametrizations.weight.original
    return (original.flatten()[0] / layer.weight.flatten()[0]).detach()


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_spectral_norm_equals_torch_in_training_then_evaluation(name):
    build, shape = SPECTRAL[name]
    module, apply, params, state = twin(build, seed=3)
    for t in range(3):
        x = random.normal(random.key(t), shape, dtype=torch.float64)
        weights = random.normal(random.key(50 + t), (shape[0], *module.train()(x).shape[1:]), dtype=torch.float64)
        before = tree_clone((params, state, x))
        # the line above ran torch's forward once: rewind its vectors to fgm's state first
        with torch.no_grad():
            for k, b in module.named_buffers():
                b.copy_(state[k])
        y, gx, gp, new_state = fgm_step(apply, params, state, x, weights, train=True)
        ry, rgx, rgp, rbuffers = torch_step(module.train(), x, weights)
        assert tree_equal(before, (params, state, x))
        assert not tree_allclose(new_state, state)  # the power iteration moved u and v
        assert tree_allclose(new_state, rbuffers, **TOL)
        assert torch.allclose(y, ry, **TOL) and torch.allclose(gx, rgx, **TOL) and tree_allclose(gp, rgp, **TOL)
        state = new_state
        # σ = uᵀ W v after n iterations, read off fgm's function and off torch's normalised weight.
        (key,) = [k for k in params if k.endswith("original")]
        u, v = (state[key.replace("original", f"0._{c}")] for c in "uv")
        dim = 1 if name == "conv_transpose" else 0
        _, sigma = fnn.spectral_normalize(params[key], u, v, dim)
        module.eval()
        assert torch.allclose(sigma, _sigma(module), **TOL)
    x = random.normal(random.key(7), shape, dtype=torch.float64)
    y, _ = apply(params, state, x, train=False)
    assert torch.allclose(y, module.eval()(x), **TOL)


def test_spectral_norm_sigma_converges_to_the_largest_singular_value():
    """Against an SVD: fgm's initial state (15 iterations, as torch) plus training steps estimate ‖W‖₂."""
    template, apply = fnn.stateful(lambda: spectral_norm(nn.Linear(8, 5)))
    params = {k: v.double() for k, v in fnn.init_params(template, random.key(0)).items()}
    state = fnn.init_state(template, params, random.key(1))
    weight = params["parametrizations.weight.original"]
    true = torch.linalg.matrix_norm(weight, ord=2)
    for _ in range(50):
        _, state = apply(params, state, torch.zeros(1, 8, dtype=torch.float64), train=True)
    _, sigma = fnn.spectral_normalize(
        weight, state["parametrizations.weight.0._u"], state["parametrizations.weight.0._v"]
    )
    assert torch.allclose(sigma, true, rtol=1e-6)
    y, _ = apply(params, state, torch.eye(8, dtype=torch.float64), train=False)
    assert torch.allclose(torch.linalg.matrix_norm(y.T - params["bias"][:, None], ord=2), torch.tensor(1.0).double())


def test_spectral_norm_init_state_follows_torchs_construction():
    """Given the same start vectors, fgm's init equals torch's 15 power iterations at construction."""
    template, _ = fnn.stateful(lambda: spectral_norm(nn.Conv2d(2, 3, 3)))
    params = fnn.init_params(template, random.key(0))
    state = fnn.init_state(template, params, random.key(1))
    assert set(state) == {"parametrizations.weight.0._u", "parametrizations.weight.0._v"}
    assert state["parametrizations.weight.0._u"].shape == (3,) and state["parametrizations.weight.0._v"].shape == (18,)
    assert tree_equal(state, fnn.init_state(template, params, random.key(1)))
    assert not tree_allclose(state, fnn.init_state(template, params, random.key(2)), rtol=1e-3)
    # torch's constructor: normalise N(0, I) draws, then 15 iterations on the initial weight
    matrix = params["parametrizations.weight.original"].flatten(1)
    index = [n for n, _ in template.named_modules()].index("parametrizations.weight.0")  # fgm folds in the module index
    k_u, k_v = random.split(random.fold_in(random.key(1), index))
    u = torch.nn.functional.normalize(random.normal(k_u, (3,)), dim=0)
    v = torch.nn.functional.normalize(random.normal(k_v, (18,)), dim=0)
    layer = spectral_norm(nn.Conv2d(2, 3, 3))
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(params["parametrizations.weight.original"])
        layer.parametrizations.weight[0]._u.copy_(u)
        layer.parametrizations.weight[0]._v.copy_(v)
        layer.parametrizations.weight[0]._power_method(matrix, 15)
    assert tree_allclose(state, dict(layer.named_buffers()), rtol=1e-5, atol=1e-7)
    assert params["bias"].abs().max() > 0  # the bias finds its fan-in through the parametrized weight


# --------------------------------------------------------------------------- the mechanism


def test_stateless_modules_have_an_empty_state_and_the_same_outputs():
    build = lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh())  # noqa: E731
    template, apply = fnn.stateful(build)
    _, plain = fnn.functional(build)
    params = fnn.init_params(template, random.key(0))
    assert fnn.init_state(template, params, random.key(1)) == {}
    x = random.normal(random.key(2), (2, 3))
    y, state = apply(params, {}, x, train=True)
    assert torch.equal(y, plain(params, x)) and state == {}


def test_functional_points_to_stateful_and_unknown_buffers_are_refused():
    with pytest.raises(ValueError, match="fgm.nn.stateful"):
        fnn.functional(lambda: nn.BatchNorm2d(3))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(1))

        def forward(self, x):
            return x * self.scale

    with pytest.raises(ValueError, match="scale"):
        fnn.stateful(Scaled)


def test_missing_state_is_an_error_not_a_silent_default():
    template, apply = fnn.stateful(lambda: nn.BatchNorm1d(2))
    params = fnn.init_params(template, random.key(0))
    with pytest.raises(RuntimeError, match="running_mean"):
        apply(params, {}, torch.zeros(3, 2), train=True)


def test_merge_split_and_describe():
    build = lambda: nn.Sequential(spectral_norm(nn.Conv2d(1, 2, 3)), nn.BatchNorm2d(2), nn.Flatten())  # noqa: E731
    template, apply = fnn.stateful(build)
    params = fnn.init_params(template, random.key(0))
    state = fnn.init_state(template, params, random.key(1))
    variables = fnn.merge(params, state)
    assert fnn.split(template, variables) == (params, state)
    rows = fnn.describe(template, (1, 1, 5, 5))
    assert [(r[0], r[3]) for r in rows] == [("0", 2 * 9 + 2), ("1", 4), ("2", 0)]
    assert sum(r[3] for r in rows) == fnn.count_params(params)


def test_vmap_over_stacked_params_and_state_equals_each_member():
    """A seed ensemble: params and state stacked alike, gradient and new state per member."""
    build = lambda: nn.Sequential(  # noqa: E731
        spectral_norm(nn.Conv2d(1, 3, 3)), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 1)
    )
    template, apply = fnn.stateful(build)

    def objective(params, state, x):
        y, new_state = apply(params, state, x, train=True)
        return y.square().mean(), new_state

    grad = torch.func.grad(objective, has_aux=True)
    members = []
    for seed in range(2):
        params = fnn.init_params(template, random.key(seed))
        members.append(
            (
                params,
                fnn.init_state(template, params, random.key(10 + seed)),
                random.normal(random.key(20 + seed), (4, 1, 5, 5)),
            )
        )
    stacked = ensemble.stack(members)
    grads, states = torch.func.vmap(grad)(*stacked)
    for i, (params, state, x) in enumerate(members):
        g, s = grad(params, state, x)
        assert tree_allclose(ensemble.member(grads, i), g, rtol=1e-4, atol=1e-6)
        assert tree_allclose(ensemble.member(states, i), s, rtol=1e-5, atol=1e-7)
