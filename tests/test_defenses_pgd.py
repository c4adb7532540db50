"""The shared PGD engine: norms, steps, schedules, random start, EOT, early stop, masks."""

import itertools

import pytest
import torch

from benchmark.defenses.pgd import PGD, LinfPGD
from benchmark.errors import ConfigValueError


def images(n=2, size=8, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def pull_up(z):
    """Minimised by brightening every pixel."""
    return -z.flatten(1).sum(1)


def test_l2_budget_and_range_hold():
    x = images()
    pgd = PGD(eps=200, step=60, iterations=10, norm="l2")
    x_adv = pgd.minimize(x, pull_up, seeds=[1, 2])
    norms = ((x_adv - x) * 255).flatten(1).norm(dim=1)
    assert (norms <= 200 + 1e-3).all() and (norms > 199).all(), norms
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_l2_steps_follow_the_normalised_gradient():
    x = torch.full((1, 1, 2, 2), 0.5)
    weights = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 2, 2)
    pgd = PGD(eps=1000, step=51, iterations=1, norm="l2", random_start=False)
    x_adv = pgd.minimize(x, lambda z: -(z * weights).flatten(1).sum(1), [0])
    expected = x + 0.2 * weights / 5  # step 51/255 = 0.2 along (3, 4)/5
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_linf_sign_step_and_descent_direction():
    x = torch.full((1, 1, 1, 2), 0.5)
    pgd = PGD(eps=10, step=2, iterations=1, random_start=False)
    x_adv = pgd.minimize(x, lambda z: (z * torch.tensor([1.0, -5.0])).sum((1, 2, 3)), [0])
    assert torch.allclose(x_adv.flatten(), torch.tensor([0.5 - 2 / 255, 0.5 + 2 / 255]))
    x_up = pgd.maximize(x, lambda z: (z * torch.tensor([1.0, -5.0])).sum((1, 2, 3)), [0])
    assert torch.allclose(x_up.flatten(), torch.tensor([0.5 + 2 / 255, 0.5 - 2 / 255]))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decaying_schedules_go_from_step_to_the_final_fraction(schedule):
    pgd = PGD(eps=8, step=2, iterations=50, schedule=schedule, final_step_fraction=0.1)
    sizes = [pgd.step_size(i) for i in range(51)]
    assert abs(sizes[0] - 2 / 255) < 1e-12 and abs(sizes[50] - 0.2 / 255) < 1e-12
    assert all(a >= b for a, b in itertools.pairwise(sizes))
    assert PGD(eps=8, step=2, iterations=50).step_size(40) == 2 / 255


def test_random_start_is_seeded_inside_the_ball_and_independent_of_batch_mates():
    x = images(3)
    for norm, eps in (("linf", 8), ("l2", 100)):
        pgd = PGD(eps=eps, step=1, iterations=0, norm=norm)
        a = pgd.minimize(x, pull_up, [5, 6, 7])
        assert torch.equal(a, pgd.minimize(x, pull_up, [5, 6, 7]))
        assert torch.equal(a[1:2], pgd.minimize(x[1:2], pull_up, [6]))
        assert not torch.equal(a[0], a[1])
        delta = (a - x) * 255
        size = delta.abs().amax((1, 2, 3)) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert (size <= eps + 1e-3).all() and (size > 0).all()
    assert torch.equal(PGD(eps=8, step=1, iterations=0, random_start=False).minimize(
        x, pull_up, [1, 2, 3]), x)


def test_eot_averages_the_loss_through_differentiable_transforms():
    x = torch.full((1, 1, 1, 4), 0.5)
    weights = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
    calls = []

    def flip(z, seeds):
        calls.append(list(seeds))
        return z.flip(-1)

    loss = lambda z: -(z * weights).flatten(1).sum(1)
    plain = PGD(eps=8, step=1, iterations=3, random_start=False).minimize(x, loss, [3])
    eot = PGD(eps=8, step=1, iterations=3, random_start=False, transforms=[flip],
              grad_samples=2).minimize(x, loss, [3])
    # without EOT the weighted (left) pixels brighten; through the flip the right ones do
    assert (plain[..., :2] > 0.5).all() and (plain[..., 2:] == 0.5).all()
    assert (eot[..., 2:] > 0.5).all() and (eot[..., :2] == 0.5).all()
    assert len(calls) == 3 * 2 and len({c[0] for c in calls}) == 6  # a fresh seed per sample


def test_eot_draws_one_transform_per_image_from_its_seed():
    x = images(4)
    seen = []

    def tag(value):
        def t(z, seeds):
            seen.append((value, len(seeds)))
            return z * 0 + value
        return t

    pgd = PGD(eps=8, step=1, iterations=1, transforms=[tag(0.0), tag(1.0)], random_start=False)
    pgd.minimize(x, pull_up, [0, 1, 2, 3])
    assert sum(n for _, n in seen) == 4  # every image went through exactly one transform
    batch = PGD(eps=8, step=1, iterations=4, transforms=[lambda z, s: z.flip(-1), lambda z, s: z])
    weights = torch.linspace(-1, 2, 8)
    whole = batch.minimize(x, lambda z: (z * weights).flatten(1).sum(1), [0, 1, 2, 3])
    alone = batch.minimize(x[2:3], lambda z: (z * weights).flatten(1).sum(1), [2])
    assert torch.equal(whole[2:3], alone)


def test_grad_samples_average_a_stochastic_loss():
    x = torch.full((1, 1, 1, 2), 0.5)
    draws = iter([2.0, -1.0])  # mean gradient +0.5, last sample's -1

    def noisy(z):
        return (z * next(draws)).flatten(1).sum(1)

    x_adv = PGD(eps=8, step=1, iterations=1, random_start=False, grad_samples=2).minimize(
        x, noisy, [0])
    assert (x_adv < 0.5).all()  # the step follows the mean, not the last sample


def test_early_stop_freezes_images_that_reached_the_target_loss():
    x = torch.full((2, 1, 1, 1), 0.5)
    x[1] = 0.1
    pgd = PGD(eps=150, step=5, iterations=40, random_start=False, early_stop=-0.55)
    x_adv = pgd.minimize(x, lambda z: -z.flatten(1).sum(1), [0, 1])
    assert 0.55 <= x_adv[0].item() < 0.55 + 5 / 255 + 1e-6
    assert 0.55 <= x_adv[1].item() < 0.55 + 5 / 255 + 1e-6
    assert len(pgd.history) < 40  # the loop ended once both had stopped
    up = PGD(eps=150, step=5, iterations=40, random_start=False, early_stop=0.55)
    assert up.maximize(x, lambda z: z.flatten(1).sum(1), [0, 1]).min() >= 0.55
    assert up.history[0] < up.history[-1]


def test_mask_keeps_pixels_outside_it_clean():
    x = images(2)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    x_adv = PGD(eps=8, step=2, iterations=3).minimize(x, pull_up, [1, 2], mask=mask)
    assert torch.equal(x_adv * (1 - mask), x * (1 - mask))
    assert ((x_adv - x) * mask).abs().max() > 7 / 255


def test_adam_without_budget_stays_in_range():
    x = images(1)
    pgd = PGD(eps=None, step=0.255, iterations=30, norm="none", optimizer="adam")
    x_adv = pgd.minimize(x, pull_up, [0])
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # Adam moves each pixel by about the learning rate (1e-3 here) per step
    assert 0.02 < (x_adv - x).mean() <= 0.03 + 1e-6


def test_linfpgd_keeps_its_signature_and_results():
    x = images(2)
    old_style = LinfPGD(8, 2, 5, True, "linear", 0.01, component="photoguard")
    new_style = PGD(eps=8, step=2, iterations=5, schedule="linear", final_step_fraction=0.01)
    assert torch.equal(old_style.minimize(x, pull_up, [1, 2]), new_style.minimize(x, pull_up, [1, 2]))


@pytest.mark.parametrize("kwargs", [
    {"eps": 8, "step": 1, "iterations": 1, "norm": "l3"},
    {"eps": -1, "step": 1, "iterations": 1, "norm": "l2"},
    {"eps": 8, "step": 1, "iterations": 1, "norm": "none"},
    {"eps": 8, "step": 0, "iterations": 1},
    {"eps": 8, "step": 1, "iterations": 1, "schedule": "exp"},
    {"eps": 8, "step": 1, "iterations": 1, "grad_samples": 0},
    {"eps": 8, "step": 1, "iterations": 1, "optimizer": "sgd"},
    {"eps": 8, "step": 1, "iterations": 1, "transforms": ["blur"]},
])
def test_bad_engine_settings_are_rejected(kwargs):
    with pytest.raises(ConfigValueError):
        PGD(**kwargs)


def test_penalty_sees_the_untransformed_image_and_on_step_every_iteration():
    x = torch.full((1, 1, 1, 2), 0.5)
    steps, seen = [], []

    def penalty(z):
        seen.append(z.detach().clone())
        return 10 * (z[..., 1] - 0.5).abs().flatten()

    pgd = PGD(eps=20, step=2, iterations=3, random_start=False,
              transforms=[lambda z, s: z.flip(-1)])
    x_adv = pgd.minimize(x, pull_up, [0], penalty=penalty, on_step=steps.append)
    assert steps == [0, 1, 2]
    assert all(torch.equal(s, x) or s[..., 0] > 0.5 for s in seen)  # never the flipped image
    assert x_adv[..., 0] > 0.5 and abs(x_adv[..., 1].item() - 0.5) <= 2 / 255 + 1e-6


def test_maximize_keeps_the_penalty_small():
    """maximize ascends loss - penalty: the penalised pixel stays put while the loss rises."""
    x = torch.full((1, 1, 1, 2), 0.5)

    def brightness(z):
        return z.flatten(1).sum(1)

    def penalty(z):
        return 10 * (z[..., 1] - 0.5).abs().flatten()

    pgd = PGD(eps=20, step=2, iterations=4, random_start=False)
    x_adv = pgd.maximize(x, brightness, [0], penalty=penalty)
    assert x_adv[..., 0] > 0.5 + 7 / 255  # the free pixel climbed
    assert abs(x_adv[..., 1].item() - 0.5) <= 2 / 255 + 1e-6  # the penalised one did not run off
    final = (brightness(x_adv) - penalty(x_adv)).item()
    assert final > brightness(x).item()
    assert pgd.history[0] == pytest.approx(brightness(x).item())  # history holds loss - penalty
