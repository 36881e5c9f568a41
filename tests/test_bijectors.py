"""Bijectors: round trips, log-dets against autograd Jacobians, the flow prior's density."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fgm import bijectors as B
from fgm import distributions as D
from fgm import random
from fgm.models import vae as V
from fgm.tree import tree_map


def random_flow(dim, layers=4, seed=0, hidden=(16,)):
    """A RealNVP flow with non-trivial (non-identity) float64 parameters."""
    flow = B.realnvp(dim, layers, hidden, identity_init=False)
    params = tree_map(lambda t: t.double(), flow.init(random.key(seed)))
    return flow, params


@given(
    dim=st.integers(2, 7),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**31),
    scale=st.floats(0.1, 5.0),
)
@settings(max_examples=30, deadline=None)
def test_round_trip_and_opposite_log_dets(dim, batch, seed, scale):
    flow, params = random_flow(dim, seed=seed)
    x = scale * random.normal(random.key(seed + 1), (batch, dim), dtype=torch.float64)
    y, log_det_fwd = flow.forward_and_log_det(params, x)
    x_back, log_det_inv = flow.inverse_and_log_det(params, y)
    assert log_det_fwd.shape == (batch,) and log_det_inv.shape == (batch,)
    assert torch.allclose(x_back, x, atol=1e-9, rtol=1e-9)
    assert torch.allclose(log_det_fwd, -log_det_inv, atol=1e-9)
    assert torch.allclose(B.inverse(flow, params, B.forward(flow, params, x)), x, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 5, 8])
def test_log_det_equals_slogdet_of_autograd_jacobian(dim):
    flow, params = random_flow(dim, layers=3, seed=dim)
    xs = random.normal(random.key(dim), (4, dim), dtype=torch.float64)
    for x in xs:
        f = lambda v: B.forward(flow, params, v[None])[0]  # noqa: E731 - a one-line function beside its only use
        jac = torch.func.jacrev(f)(x)
        _, expected = torch.linalg.slogdet(jac)
        _, log_det = flow.forward_and_log_det(params, x[None])
        assert torch.allclose(log_det[0], expected, atol=1e-9)
        y = f(x)
        g = lambda v: B.inverse(flow, params, v[None])[0]  # noqa: E731 - a one-line function beside its only use
        _, expected_inv = torch.linalg.slogdet(torch.func.jacfwd(g)(y))
        assert torch.allclose(flow.inverse_and_log_det(params, y[None])[1][0], expected_inv, atol=1e-9)


def test_every_dimension_is_transformed():
    flow, params = random_flow(6, layers=2)
    x = random.normal(random.key(0), (3, 6), dtype=torch.float64)
    assert torch.all((B.forward(flow, params, x) - x).abs() > 1e-6)


def test_chain_applies_the_first_bijector_first():
    shift = B.Bijector(
        lambda k: {}, lambda p, x: (x + 1, x.new_zeros(x.shape[0])), lambda p, y: (y - 1, y.new_zeros(y.shape[0]))
    )
    double = B.Bijector(
        lambda k: {},
        lambda p, x: (2 * x, x.new_full((x.shape[0],), x.shape[1] * math.log(2))),
        lambda p, y: (y / 2, y.new_full((y.shape[0],), -y.shape[1] * math.log(2))),
    )
    flow = B.chain([shift, double])  # double(shift(x))
    x = torch.zeros(1, 3)
    assert torch.equal(B.forward(flow, flow.init(random.key(0)), x), torch.full((1, 3), 2.0))
    assert torch.allclose(B.inverse(flow, {"0": {}, "1": {}}, torch.full((1, 3), 2.0)), x)


def test_permute_round_trip():
    perm = B.permute([2, 0, 1])
    x = torch.arange(6.0).view(2, 3)
    y, ld = perm.forward_and_log_det({}, x)
    assert torch.equal(y, x[:, [2, 0, 1]]) and torch.equal(ld, torch.zeros(2))
    assert torch.equal(B.inverse(perm, {}, y), x)


def test_flow_prior_density_integrates_to_one_in_2d():
    flow, params = random_flow(2, layers=4, seed=3)
    prior = V.flow_prior(flow)
    lim, n = 12.0, 801
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    zz = torch.cartesian_prod(grid, grid)
    density = prior.log_prob(params, zz).exp()
    integral = density.sum() * (grid[1] - grid[0]) ** 2
    assert abs(integral.item() - 1) < 0.01


def test_flow_prior_log_prob_is_the_change_of_variables_formula():
    """log p(z) = log N(f⁻¹(z)) + log|det J_{f⁻¹}(z)|, log-det added once per sample."""
    dim = 5
    flow, params = random_flow(dim, seed=7)
    prior = V.flow_prior(flow)
    z = random.normal(random.key(1), (6, dim), dtype=torch.float64)
    expected = []
    for zi in z:
        g = lambda v: B.inverse(flow, params, v[None])[0]  # noqa: E731 - a one-line function beside its only use
        u = g(zi)
        _, log_det = torch.linalg.slogdet(torch.func.jacrev(g)(zi))
        base = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum()
        expected.append(base + log_det)
    assert prior.log_prob(params, z).shape == (6,)
    assert torch.allclose(prior.log_prob(params, z), torch.stack(expected), atol=1e-9)


def test_identity_flow_is_exactly_the_standard_normal_prior():
    flow = B.realnvp(6, 4, (16,))  # identity_init=True by default
    params = flow.init(random.key(0))
    prior = V.flow_prior(flow)
    z = random.normal(random.key(1), (10, 6))
    assert torch.equal(prior.log_prob(params, z), D.std_normal_log_prob(z))
    assert torch.equal(prior.sample(params, z), z)


def test_realnvp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="dim >= 2"):
        B.realnvp(1)
    # one coupling leaves the masked half of the dimensions untouched: not a flow over all of them
    for layers in (0, 1):
        with pytest.raises(ValueError, match="num_layers >= 2"):
            B.realnvp(4, num_layers=layers)
    assert len(B.realnvp(4, num_layers=2).init(random.key(0))) == 2


def test_two_realnvp_layers_move_every_dimension():
    flow = B.realnvp(5, 2, (8,), identity_init=False)
    params = flow.init(random.key(2))
    x = random.normal(random.key(3), (7, 5))
    y = B.forward(flow, params, x)
    assert ((y - x).abs() > 1e-6).all()


def test_alternating_masks_are_even_then_odd_dimensions():
    even, odd = torch.tensor([1.0, 0, 1, 0, 1]), torch.tensor([0.0, 1, 0, 1, 0])
    masks = B.alternating_masks(5, 4)
    assert [m.dtype for m in masks] == [torch.float32] * 4
    assert all(torch.equal(m, want) for m, want in zip(masks, [even, odd, even, odd], strict=True))


def test_default_layers_and_log_scale_bound():
    """realnvp defaults to 4 couplings; a coupling's log-scale is bounded by 2 unless told otherwise."""
    assert len(B.realnvp(3).init(random.key(0))) == 4
    x = torch.full((1, 4), 1.0)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])

    def huge_log_det(bijector, **kwargs):
        """Log-det of a coupling whose conditioner outputs a log-scale of +1000 on both free dims."""
        params = bijector.init(random.key(1))
        params = {k: torch.zeros_like(v) for k, v in params.items()}
        params[f"{len(kwargs.get('hidden', (128,))) * 2}.bias"] = torch.tensor([1000.0] * 4 + [0.0] * 4)
        return bijector.forward_and_log_det(params, x)[1]

    torch.testing.assert_close(huge_log_det(B.affine_coupling(mask)), torch.tensor([4.0]))  # 2 dims x 2
    torch.testing.assert_close(huge_log_det(B.affine_coupling(mask, scale_bound=3.0)), torch.tensor([6.0]))
    flow = B.realnvp(4, 2, hidden=(8,))
    params = {n: {k: torch.zeros_like(v) for k, v in p.items()} for n, p in flow.init(random.key(2)).items()}
    for p in params.values():
        p["2.bias"] = torch.tensor([1000.0] * 4 + [0.0] * 4)
    torch.testing.assert_close(flow.forward_and_log_det(params, x)[1], torch.tensor([8.0]))  # 4 dims x 2


def test_coupling_starts_as_identity_by_default_with_zero_output_layer():
    bijector = B.affine_coupling(torch.tensor([1.0, 0.0, 1.0]), hidden=(8,))
    params = bijector.init(random.key(0))
    assert set(params) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(isinstance(v, torch.Tensor) for v in params.values())
    assert torch.equal(params["2.weight"], torch.zeros(6, 8)) and torch.equal(params["2.bias"], torch.zeros(6))
    x = random.normal(random.key(1), (4, 3))
    y, log_det = bijector.forward_and_log_det(params, x)
    assert torch.equal(y, x) and torch.equal(log_det, torch.zeros(4))


def test_conditioner_with_two_hidden_layers():
    """Every hidden width makes a layer: (8, 6) is Linear(d, 8), ELU, Linear(8, 6), ELU, Linear(6, 2d)."""
    bijector = B.affine_coupling(torch.tensor([1.0, 0.0, 1.0, 0.0]), hidden=(8, 6), identity_init=False)
    params = bijector.init(random.key(0))
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    assert shapes == {
        "0.weight": (8, 4),
        "0.bias": (8,),
        "2.weight": (6, 8),
        "2.bias": (6,),
        "4.weight": (8, 6),
        "4.bias": (8,),
    }
    x = random.normal(random.key(1), (3, 4), dtype=torch.float64)
    params = tree_map(lambda t: t.double(), params)
    y, log_det = bijector.forward_and_log_det(params, x)
    x_back, log_det_inv = bijector.inverse_and_log_det(params, y)
    assert torch.allclose(x_back, x, atol=1e-12) and torch.allclose(log_det, -log_det_inv, atol=1e-12)
    assert not torch.allclose(y, x)


def test_flow_keeps_a_low_precision_dtype():
    """The masks follow the input's dtype: a bfloat16 flow computes and returns bfloat16."""
    flow = B.realnvp(4, 2, (8,), identity_init=False)
    params = tree_map(lambda t: t.to(torch.bfloat16), flow.init(random.key(0)))
    x = random.normal(random.key(1), (3, 4)).to(torch.bfloat16)
    y, log_det = flow.forward_and_log_det(params, x)
    x_back, log_det_inv = flow.inverse_and_log_det(params, y)
    assert {y.dtype, log_det.dtype, x_back.dtype, log_det_inv.dtype} == {torch.bfloat16}


def test_permute_has_no_parameters_and_per_example_log_dets():
    perm = B.permute([2, 0, 1])
    assert perm.init(random.key(0)) == {}
    x = random.normal(random.key(1), (5, 3))
    y, log_det = perm.forward_and_log_det({}, x)
    assert torch.equal(y, x[:, [2, 0, 1]]) and torch.equal(log_det, torch.zeros(5))
    x_back, log_det_inv = perm.inverse_and_log_det({}, y)
    assert torch.equal(x_back, x) and torch.equal(log_det_inv, torch.zeros(5))
