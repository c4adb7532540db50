import torch

from benchmark.defenses.noise import UniformNoise
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.photoguard import PhotoGuardEncoder
from benchmark.images import release

INCEPTION = {"_target_": "benchmark.models.encoders.InceptionEncoder", "device": "cpu"}


def test_pgd_stays_in_the_eps_ball_and_in_range():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[0, :, :4] = 0.0  # pixels at the range limits must stay in [0, 1]
    x[1, :, :4] = 1.0
    pgd = LinfPGD(eps=8, step=3, iterations=5)
    x_adv = pgd.minimize(x, lambda z: -(z ** 2).flatten(1).sum(1), seeds=[1, 2])
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 7 / 255  # it used the budget


def test_pgd_is_deterministic_under_a_seed_and_varies_with_it():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    pgd = LinfPGD(eps=4, step=1, iterations=0)  # random start only
    assert torch.equal(pgd.minimize(x, lambda z: z.sum((1, 2, 3)), [5]),
                       pgd.minimize(x, lambda z: z.sum((1, 2, 3)), [5]))
    assert not torch.equal(pgd.minimize(x, lambda z: z.sum((1, 2, 3)), [5]),
                           pgd.minimize(x, lambda z: z.sum((1, 2, 3)), [6]))


def test_linear_schedule_decays_to_the_final_fraction():
    pgd = LinfPGD(eps=8, step=2.55, iterations=100, schedule="linear", final_step_fraction=0.01)
    assert abs(pgd.step_size(0) - 2.55 / 255) < 1e-12
    assert abs(pgd.step_size(100) - 0.0255 / 255) < 1e-12
    assert pgd.step_size(50) < pgd.step_size(10)


def test_photoguard_moves_the_real_encoder_more_than_noise_of_the_same_budget(portraits64):
    x = portraits64[:2]
    attack = PhotoGuardEncoder(INCEPTION, eps=8, step=2, iterations=15)
    x_adv = release(attack.protect(x, seeds=[1, 2]))
    x_noise = release(UniformNoise(eps=8).protect(x, seeds=[1, 2]))
    with torch.no_grad():
        clean, adv, noisy = (attack.encoder(v) for v in (x, x_adv, x_noise))
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    shift_attack = (adv - clean).norm(dim=1)
    shift_noise = (noisy - clean).norm(dim=1)
    assert (shift_attack > 2 * shift_noise).all(), (shift_attack, shift_noise)
    # the objective (distance to the zero target) went down
    assert (adv.norm(dim=1) < clean.norm(dim=1)).all()


def test_noise_is_seeded_and_bounded():
    x = torch.full((2, 3, 8, 8), 0.5)
    a = UniformNoise(eps=8).protect(x, [3, 4])
    assert torch.equal(a, UniformNoise(eps=8).protect(x, [3, 4]))
    assert not torch.equal(a[0], a[1])
    assert (a - x).abs().max() <= 8 / 255 + 1e-6
