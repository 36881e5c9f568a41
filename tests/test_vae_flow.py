"""vae_flow: the flow prior trains, with the right sign, and reduces to vae_std at identity."""

import torch

from experiments import models as registry
from fgm import bijectors as B
from fgm import data as fdata
from fgm import random, train
from fgm.models import vae as V
from fgm.tree import tree_clone, tree_equal, tree_map

CONFIG = {
    "latent_dim": 4,
    "hidden": [32, 16],
    "width": 4,
    "flow_layers": 4,
    "flow_hidden": [16],
    "lr": 1e-3,
    "lr_schedule": "constant",
    "lr_final_fraction": 0.1,
    "total_steps": 100,
}


def models():
    spec = fdata.get_spec("mnist")
    flow = B.realnvp(CONFIG["latent_dim"], CONFIG["flow_layers"], tuple(CONFIG["flow_hidden"]))
    return registry.build_vae(spec, CONFIG), registry.build_vae(spec, CONFIG, prior=V.flow_prior(flow))


def batch(key, n=8):
    return random.bernoulli(key, torch.full((n, 1, 28, 28), 0.3))


def test_identity_flow_vae_equals_vae_std_on_the_same_key(key):
    std, flow = models()
    p_std, p_flow = V.init(std, key), V.init(flow, key)
    assert tree_equal(p_std["encoder"], p_flow["encoder"]) and tree_equal(p_std["decoder"], p_flow["decoder"])
    x, eps = batch(key), random.normal(random.fold_in(key, 1), (8, CONFIG["latent_dim"]))
    a = V.elbo_terms(std, p_std, x, eps, analytic_kl=False)
    b = V.elbo_terms(flow, p_flow, x, eps)
    assert torch.equal(a.log_likelihood, b.log_likelihood) and torch.equal(a.kl, b.kl)
    # and the Monte-Carlo KL is an unbiased estimate of the analytic one
    many = random.normal(key, (20000, CONFIG["latent_dim"]))
    x1 = x[:1].expand(20000, -1, -1, -1)
    mc = V.elbo_terms(flow, p_flow, x1, many).kl.mean()
    exact = V.elbo_terms(std, p_std, x1[:1], many[:1]).kl[0]
    assert abs(mc - exact) < 0.05 * max(1.0, exact.item())


def test_loss_gradient_wrt_the_prior_is_minus_the_gradient_of_log_prior():
    """Sign: raising log p(z) at the posterior samples must lower the loss, one for one."""
    _, flow_vae = models()
    key = random.key(3)
    params = V.init(flow_vae, key)
    params["prior"] = tree_map(
        lambda t: t + 0.1 * random.normal(random.fold_in(key, t.numel()), t.shape), params["prior"]
    )
    x, eps = batch(key), random.normal(random.fold_in(key, 2), (8, CONFIG["latent_dim"]))
    mean, log_var = flow_vae.encode(params["encoder"], x)
    z = V.reparameterize(mean, log_var, eps).detach()

    def loss_of_prior(prior_params):
        return V.loss(flow_vae, {**params, "prior": prior_params}, x, eps)[0]

    def mean_log_prior(prior_params):
        return flow_vae.prior.log_prob(prior_params, z).mean()

    g_loss = torch.func.grad(loss_of_prior)(params["prior"])
    g_logp = torch.func.grad(mean_log_prior)(params["prior"])
    for a, b in zip(torch.utils._pytree.tree_leaves(g_loss), torch.utils._pytree.tree_leaves(g_logp), strict=True):
        assert torch.allclose(a, -b, atol=1e-6)
    # a step that makes the aggregate posterior more likely lowers the loss
    stepped = tree_map(lambda p, g: p + 1e-2 * g, params["prior"], g_logp)
    assert mean_log_prior(stepped) > mean_log_prior(params["prior"])
    assert loss_of_prior(stepped) < loss_of_prior(params["prior"])


def test_flow_parameters_get_gradients_and_change_after_a_step(key):
    spec = fdata.get_spec("mnist")
    trainer = registry.vae_flow(spec, dict(CONFIG)).trainer
    step = train.step_from_update(trainer.make_update(), trainer.inputs)
    state = trainer.init(key)
    first = state  # the step is pure: this state must still hold the initial values afterwards
    before = tree_clone(state.params)
    x = batch(key)
    # the first step moves the zero-initialised output layers; the second moves everything
    for _ in range(2):
        state, metrics = step(state, x, train.step_key(state))
    assert torch.isfinite(metrics["loss"])
    prior_before = torch.utils._pytree.tree_leaves(before["prior"])
    prior_after = torch.utils._pytree.tree_leaves(state.params["prior"])
    assert len(prior_after) == 4 * 4  # 4 couplings x (2 weights + 2 biases)
    assert all(not torch.equal(a, b) for a, b in zip(prior_before, prior_after, strict=True))
    # the optimizer state tracks the prior too
    adam_state = state.opt_state[0]
    assert set(adam_state.mu) == {"encoder", "decoder", "prior"}
    assert tree_equal(first.params, before)  # inputs untouched
    assert not tree_equal(before["prior"], state.params["prior"])


def test_flow_prior_sampling_matches_its_density():
    """Samples pushed through the flow have the mean log-density the prior assigns them."""
    flow = B.realnvp(2, 4, (16,), identity_init=False)
    params = tree_map(lambda t: t.double(), flow.init(random.key(5)))
    prior = V.flow_prior(flow)
    eps = random.normal(random.key(6), (50000, 2), dtype=torch.float64)
    z = prior.sample(params, eps)
    # E_p[-log p(z)] estimated two ways: through the density and through the base + forward log-det
    _, log_det_fwd = flow.forward_and_log_det(params, eps)
    from fgm import distributions as D

    assert torch.allclose(prior.log_prob(params, z), D.std_normal_log_prob(eps) - log_det_fwd, atol=1e-8)
