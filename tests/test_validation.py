"""Out-of-range parameters stop a job at build time, naming the key, value and range."""

import pytest

from benchmark.build import build
from benchmark.errors import ConfigValueError

CASES = [
    ({"_target_": "benchmark.transforms.jpeg.JpegCompression", "quality": 0}, "quality", "1..100"),
    ({"_target_": "benchmark.transforms.jpeg.JpegCompression", "quality": 101}, "quality", "1..100"),
    ({"_target_": "benchmark.transforms.jpeg.JpegCompression", "subsampling": "4:1:1"},
     "subsampling", "4:2:0"),
    ({"_target_": "benchmark.transforms.resize.Rescale", "factor": 0}, "factor", "0 < factor"),
    ({"_target_": "benchmark.transforms.resize.Rescale", "factor": -0.5}, "factor", "0 < factor"),
    ({"_target_": "benchmark.transforms.resize.Rescale", "interpolation": "cubic"},
     "interpolation", "bicubic"),
    ({"_target_": "benchmark.defenses.noise.UniformNoise", "eps": -1}, "eps", "0 <= eps"),
    ({"_target_": "benchmark.defenses.photoguard.PhotoGuardEncoder", "eps": -1,
      "encoder": {"_target_": "benchmark.models.encoders.InceptionEncoder"}}, "eps", "0 <= eps"),
    ({"_target_": "benchmark.defenses.photoguard.PhotoGuardEncoder", "iterations": -3,
      "encoder": {"_target_": "benchmark.models.encoders.InceptionEncoder"}}, "iterations", ">= 0"),
    ({"_target_": "benchmark.data.portraits.PortraitsDataset", "resolution": 0}, "resolution", "from 8 to 4096"),
    ({"_target_": "benchmark.data.portraits.PortraitsDataset", "resolution": 100000}, "resolution",
     "from 8 to 4096"),
]


@pytest.mark.parametrize("cfg,key,expected", CASES)
def test_bad_value_names_key_value_and_range(cfg, key, expected):
    with pytest.raises(ConfigValueError) as e:
        build(cfg, "component")
    message = str(e.value)
    assert f"{key}=" in message and expected in message
    assert repr(cfg[key]) in message
