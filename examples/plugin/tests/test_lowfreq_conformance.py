"""The plugin keeps bench's defense contract: one line per component."""

from benchmark.testing import check_defense


def test_lowfreq_noise_keeps_the_defense_contract():
    check_defense("lowfreq_noise")
