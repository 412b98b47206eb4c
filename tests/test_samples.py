"""data_samples/ is exactly what `hqg samples` makes, and reads as the datasets expect."""
import json, math
from pathlib import Path

import pytest
import torch

from hqg.data.io import read_image, list_images
from hqg.data.samples import make_samples, make_view, STYLES
from hqg.data import UnpairedDataset, PairedTestSet

ROOT = Path(__file__).resolve().parents[1]
DS = ROOT / "data_samples"


@pytest.mark.parametrize("name", ["fundus", "vessels", "ccm"])
def test_samples_regenerate_identically(tmp_path, name):
    counts = make_samples(tmp_path, sets=(name,))
    new = sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*.png"))
    old = sorted(p.relative_to(DS / name) for p in (DS / name).rglob("*.png"))
    assert new == old and counts[name] == len(old)
    for rel in new:
        a, b = read_image(tmp_path / name / rel), read_image(DS / name / rel)
        assert a.shape == b.shape, rel
        # The bound `hqg samples` guarantees across x86 CPUs and BLAS builds (resampling and blur round
        # differently): at most 4 8-bit steps at any pixel, and PSNR against the committed file >= 50 dB.
        d = (a - b).abs()
        assert d.max() <= 4 / 255 + 1e-6, (rel, float(d.max()) * 255)
        mse = float((d ** 2).mean())
        assert mse == 0.0 or 10 * math.log10(1 / mse) >= 50.0, (rel, mse)


def test_fundus_sample_layout_and_provenance():
    man = json.loads((DS / "fundus" / "manifest.json").read_text())
    assert man["set"] == "fundus" and all(e["synthetic"] is False for e in man["files"])
    lq = [e for e in man["files"] if e["file"].startswith("lq/")]
    hq = [e for e in man["files"] if e["file"].startswith("hq/")]
    guides = [e for e in man["files"] if e["file"].startswith("guides/")]
    # HQ images in several acquisition styles, recorded per file; every style has a guide; LQ has no style
    assert len(hq) == 14 and {e["style"]["name"] for e in hq} == set(STYLES)
    assert sorted(e["style"]["name"] for e in guides) == sorted(STYLES)
    assert all("style" not in e for e in lq)
    # a paired validation split (choose settings there) beside the test split, in the reference tone
    val = [e for e in man["files"] if e["file"].startswith("val/")]
    assert len(val) == 8 and all(e.get("style", {}).get("name", "reference") == "reference" for e in val)
    assert len(list_images(DS / "fundus" / "val" / "lq")) == len(list_images(DS / "fundus" / "val" / "gt")) == 4
    assert len(lq) == 8 and all(e["degradation"]["preset"] == "fundus" for e in lq)
    kinds = {e["file"].rsplit("_", 1)[-1] for e in man["files"] if not e["file"].startswith("guides/")}
    assert kinds == {"fov.png", "crop.png"}  # whole field of view and crops
    # HQ and LQ views come from different regions (unpaired): no HQ view equals an LQ view's geometry
    geo = lambda split: {(tuple(e["view"]["center"]), e["view"]["scale"], e["view"]["angle"])
                         for e in man["files"] if e["file"].startswith(split)}
    assert not geo("hq/") & geo("lq/")
    # whole-FOV views keep a dark border after degradation
    x = read_image(DS / "fundus" / "lq" / "lq_00_fov.png")
    assert x[:, :6, :6].max() < 0.05 and x[:, 80:110, 80:110].mean() > 0.2


def test_samples_feed_the_datasets():
    ds = UnpairedDataset(DS / "vessels", size=64, channels=3, seed=0)
    item = ds[0]
    assert item["lq"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64) and bool(item["has_mask"])
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    test = PairedTestSet(DS / "fundus")
    assert len(test) == 4 and test[0]["lq"].shape == test[0]["gt"].shape == (3, 192, 192)
    ccm = UnpairedDataset(DS / "ccm", size=64, channels=1)
    assert ccm[1]["lq"].shape == (1, 64, 64)


def test_make_view_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        make_view(torch.rand(3, 16, 16), 8, scale=2.0)
