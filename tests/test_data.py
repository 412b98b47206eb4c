"""hqg.data: layouts, views, seeded unpaired pairing, mask alignment, loaders, paired test sets, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hqg.data import (UnpairedDataset, PairedTestSet, EpochSampler, find_layout, load_mask,
                      random_view, seeded_generator, make_loader, set_loader_epoch, collate_same_size)
from hqg.data.io import ImageReadError


# ---------------------------------------------------------------- helpers: tiny folders written with PIL
def save(path: Path, a: np.ndarray):
    "Save a float array in [0,1], (H,W) or (H,W,3), as an 8-bit image (format from the suffix)."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(path)


def vessel_image(h, w, seed, gray=False):
    "An image whose bright pixels (0.95..1) are exactly its mask; the background stays below 0.4."
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[h // 3: h // 3 + 3, 2:-2] = True          # a horizontal bar ...
    m[4:-4, w // 4: w // 4 + 2] = True          # ... and an off-centre vertical one: no symmetry
    m[2:5, w - 6: w - 3] = True                 # ... and a corner blob
    x = rng.uniform(0, 0.4, (h, w) if gray else (h, w, 3))
    x[m] = 1.0
    return x, m.astype(float)


def make_set(root: Path, n_lq=4, n_hq=3, masks=(0, 2), layout="hqg", sizes=None):
    lq, hq, mk = {"hqg": ("lq", "hq", "masks"), "cyclegan": ("trainA", "trainB", "trainA_masks")}[layout]
    for i in range(n_lq):
        h, w = sizes[i] if sizes else (33 + 2 * i, 41 + 5 * i)
        x, m = vessel_image(h, w, i, gray=(i == 1))
        save(root / lq / f"img{i}.png", x)
        if i in masks: save(root / mk / f"img{i}.png", m)
    for j in range(n_hq):
        save(root / hq / f"good{j}.jpg", np.random.default_rng(100 + j).uniform(0, 1, (40 + j, 36, 3)))
    return root


def bright(x):
    return (x.mean(0, keepdim=True) > 0.6).float()


# ---------------------------------------------------------------- layouts, shapes, channels, sizes
def test_hqg_layout_items(tmp_path):
    ds = UnpairedDataset(make_set(tmp_path), size=24, seed=3)
    assert (len(ds), ds.layout, ds.augment) == (4, "hqg", True)
    for i in range(len(ds)):
        it = ds[i]
        assert set(it) == {"lq", "hq", "mask", "has_mask", "lq_path", "hq_path"}
        assert it["lq"].shape == it["hq"].shape == (3, 24, 24) and it["mask"].shape == (1, 24, 24)
        assert it["lq"].dtype == it["hq"].dtype == it["mask"].dtype == torch.float32
        assert it["has_mask"].dtype == torch.bool and it["has_mask"].item() == (i in (0, 2))
        assert 0 <= it["lq"].min() and it["lq"].max() <= 1 and 0 <= it["hq"].min() and it["hq"].max() <= 1
        assert Path(it["lq_path"]).name == f"img{i}.png" and Path(it["hq_path"]).parent.name == "hq"
        if i not in (0, 2): assert it["mask"].sum() == 0
    assert "lq=4, hq=3, masks=2" in repr(ds)


def test_cyclegan_layout_train_and_test(tmp_path):
    make_set(tmp_path, n_lq=3, n_hq=2, masks=(1,), layout="cyclegan")
    for sub, n in (("testA", 2), ("testB", 1)):
        for k in range(n): save(tmp_path / sub / f"t{k}.png", np.full((20, 20), 0.5))
    train = UnpairedDataset(tmp_path, size=16)
    assert (train.layout, len(train), len(train.hq_paths), sorted(train.mask_paths)) == ("cyclegan", 3, 2, [1])
    test = UnpairedDataset(tmp_path, size=16, split="test")
    assert (len(test), test.augment, test.mask_paths) == (2, False, {})
    assert Path(test[1]["lq_path"]).parent.name == "testA" and Path(test[1]["hq_path"]).parent.name == "testB"
    torch.testing.assert_close(test[0]["lq"], torch.full((3, 16, 16), 128 / 255))


def test_hqg_test_split(tmp_path):
    make_set(tmp_path / "test", n_lq=2, n_hq=2, masks=(1,))
    lay = find_layout(tmp_path, "test")
    assert (lay["layout"], lay["lq"], lay["masks"]) == ("hqg", tmp_path / "test" / "lq", tmp_path / "test" / "masks")
    assert UnpairedDataset(tmp_path, size=16, split="test")[1]["has_mask"].item()


def test_gray_to_rgb_and_rgb_to_gray(tmp_path):
    save(tmp_path / "lq" / "gray.png", np.full((20, 30), 0.6))
    save(tmp_path / "hq" / "rgb.png", np.broadcast_to(np.array([51, 153, 255]) / 255, (20, 30, 3)).copy())
    it3 = UnpairedDataset(tmp_path, size=16, channels=3, augment=False)[0]
    torch.testing.assert_close(it3["lq"], torch.full((3, 16, 16), 153 / 255))     # gray repeated
    torch.testing.assert_close(it3["hq"][:, 0, 0], torch.tensor([51, 153, 255]) / 255)
    it1 = UnpairedDataset(tmp_path, size=16, channels=1, augment=False)[0]
    luma = (0.299 * 51 + 0.587 * 153 + 0.114 * 255) / 255                          # BT.601
    assert it1["lq"].shape == it1["hq"].shape == (1, 16, 16)
    torch.testing.assert_close(it1["hq"], torch.full((1, 16, 16), luma), atol=1e-5, rtol=0)


@pytest.mark.parametrize("resize", ["short_side", "upscale_only"])
def test_odd_and_small_sizes(tmp_path, resize):
    sizes = [(17, 23), (33, 31), (7, 9), (101, 13)]
    make_set(tmp_path, n_lq=4, n_hq=1, masks=(0, 1, 2, 3), sizes=[(max(h, 9), max(w, 9)) for h, w in sizes])
    ds = UnpairedDataset(tmp_path, size=16, resize=resize, scale=(1.0, 1.3))
    for i in range(4):
        it = ds[i]
        assert (it["lq"].shape, it["mask"].shape) == ((3, 16, 16), (1, 16, 16))
        assert set(it["mask"].unique().tolist()) <= {0.0, 1.0}


def test_short_side_resize_keeps_aspect_and_centre_crop():
    x = torch.zeros(1, 40, 80); x[..., 40:] = 1                # left half dark, right half bright
    v, _ = random_view(x, 20)                                  # -> 20x40, centre crop = columns 10..29
    assert v.shape == (1, 20, 20)
    assert v[..., :8].max() < 0.05 and v[..., 12:].min() > 0.95
    same, _ = random_view(torch.rand(3, 16, 16), 16)           # already the right size: untouched
    x16 = torch.rand(3, 16, 16)
    assert torch.equal(random_view(x16, 16)[0], x16) and same.shape == (3, 16, 16)   # exact: no resampling, a copy
    up, _ = random_view(torch.rand(1, 8, 12), 16)              # upscaled to 16x24
    assert up.shape == (1, 16, 16)


# ---------------------------------------------------------------- seeded pairing and augmentation
def test_pairing_reproducible_per_seed_and_epoch(tmp_path):
    make_set(tmp_path, n_lq=8, n_hq=8, masks=())
    a, b = UnpairedDataset(tmp_path, size=16, seed=5), UnpairedDataset(tmp_path, size=16, seed=5)
    a.set_epoch(2); b.set_epoch(2)
    assert a.pairing() == b.pairing() and sorted(a.pairing()) == list(range(8))   # balanced: a permutation
    for i in (0, 5):
        assert a[i]["hq_path"] == b[i]["hq_path"]
        assert torch.equal(a[i]["lq"], b[i]["lq"]) and torch.equal(a[i]["hq"], b[i]["hq"])   # exact: same seed, same process
    assert a.pairing(3) != a.pairing(2)
    assert UnpairedDataset(tmp_path, size=16, seed=6).pairing(2) != a.pairing(2)
    b.set_epoch(3)
    assert [b[i]["hq_path"] for i in range(8)] != [a[i]["hq_path"] for i in range(8)]
    assert any(not torch.equal(a[i]["lq"], b[i]["lq"]) for i in range(8))       # new crops/flips too


def test_pairing_balanced_when_counts_differ(tmp_path):
    make_set(tmp_path, n_lq=7, n_hq=3, masks=())
    ds = UnpairedDataset(tmp_path, size=16)
    for e in range(3):
        counts = np.bincount(ds.pairing(e), minlength=3)
        assert counts.sum() == 7 and counts.max() - counts.min() <= 1


def test_item_independent_of_access_order(tmp_path):
    make_set(tmp_path, n_lq=4, n_hq=2)
    ds = UnpairedDataset(tmp_path, size=16, seed=1)
    later = ds[3]["lq"]
    fresh = UnpairedDataset(tmp_path, size=16, seed=1)
    _ = [fresh[i] for i in range(3)]
    assert torch.equal(fresh[3]["lq"], later)   # exact: same seed, same process


def test_mask_alignment_exact_under_augmentation(tmp_path):
    make_set(tmp_path, n_lq=3, n_hq=1, masks=(0, 1, 2), sizes=[(40, 52), (37, 45), (48, 33)])
    ds = UnpairedDataset(tmp_path, size=32, resize="upscale_only")   # no interpolation: exact
    views = set()
    for e in range(6):
        ds.set_epoch(e)
        for i in range(3):
            it = ds[i]
            assert torch.equal(bright(it["lq"]), it["mask"])   # exact: binary masks
            assert it["mask"].sum() > 0
            views.add(tuple(it["mask"].flatten().tolist()))
    assert len(views) > 6                                              # augmentation did change the views


def test_mask_alignment_approx_with_resize_and_affine(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=1, masks=(0, 1), sizes=[(50, 70), (45, 45)])
    ds = UnpairedDataset(tmp_path, size=32, scale=(1.0, 1.2), degrees=8, translate=0.05)
    for e in range(3):
        ds.set_epoch(e)
        for i in range(2):
            it = ds[i]
            m, b = it["mask"].bool(), bright(it["lq"]).bool()
            assert set(it["mask"].unique().tolist()) == {0.0, 1.0}          # binary
            assert (m & b).sum() / (m | b).sum() > 0.6                       # still on the bright pixels


def test_mask_label_image_0_1(tmp_path):
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).save(tmp_path / "m.png")     # labels 0/1
    torch.testing.assert_close(load_mask(tmp_path / "m.png"), torch.tensor([[[0., 1.], [1., 0.]]]))
    Image.fromarray(np.array([[0, 255], [3, 0]], np.uint8)).save(tmp_path / "n.png")   # 0/255 + noise
    torch.testing.assert_close(load_mask(tmp_path / "n.png"), torch.tensor([[[0., 1.], [0., 0.]]]))


def test_augment_false_is_deterministic_and_centred(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=2, masks=(0,), sizes=[(40, 40), (36, 50)])
    ds = UnpairedDataset(tmp_path, size=32, augment=False, resize="upscale_only")
    x0 = ds[0]["lq"]
    ds.set_epoch(4)
    assert torch.equal(ds[0]["lq"], x0)   # exact: same process, no augmentation
    raw = torch.from_numpy(np.asarray(Image.open(tmp_path / "lq" / "img0.png"), np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(x0, raw[:, 4:36, 4:36], rtol=0, atol=1e-6)   # the centre crop (values divided by 255 in two ways)


def test_seeded_generator():
    assert torch.equal(torch.rand(4, generator=seeded_generator(1, 2)), torch.rand(4, generator=seeded_generator(1, 2)))  # exact: same draws
    assert not torch.equal(torch.rand(4, generator=seeded_generator(1, 2)), torch.rand(4, generator=seeded_generator(2, 1)))


# ---------------------------------------------------------------- loaders
def test_dataloader_stacks_batches(tmp_path):
    ds = UnpairedDataset(make_set(tmp_path, n_lq=4, n_hq=2, masks=(0,)), size=16)
    batches = list(DataLoader(ds, batch_size=2))
    assert len(batches) == 2
    b = batches[0]
    assert (b["lq"].shape, b["hq"].shape, b["mask"].shape) == ((2, 3, 16, 16), (2, 3, 16, 16), (2, 1, 16, 16))
    assert b["has_mask"].dtype == torch.bool and b["has_mask"].tolist() == [True, False]
    assert b["mask"][1].sum() == 0 and b["mask"][0].sum() > 0
    assert isinstance(b["lq_path"], list) and len(b["lq_path"]) == 2


def test_make_loader_epoch_order_and_exact_resume(tmp_path):
    make_set(tmp_path, n_lq=6, n_hq=3, masks=(1,))
    run = make_loader(UnpairedDataset(tmp_path, size=16, seed=2), batch_size=2, seed=2)
    epochs = [[b for b in set_loader_epoch(run, e)] for e in range(3)]
    order = lambda bs: [p for b in bs for p in b["lq_path"]]
    assert len(epochs[0]) == 3 and sorted(order(epochs[0])) == sorted(order(epochs[1]))
    assert order(epochs[0]) != order(epochs[1]) or order(epochs[1]) != order(epochs[2])
    resumed = make_loader(UnpairedDataset(tmp_path, size=16, seed=2), batch_size=2, seed=2)
    again = list(set_loader_epoch(resumed, 2))                         # a resumed run jumps to epoch 2
    assert order(again) == order(epochs[2])
    for x, y in zip(again, epochs[2]):
        # exact: a resumed loader gives bitwise the same batches (one machine)
        assert torch.equal(x["lq"], y["lq"]) and torch.equal(x["hq"], y["hq"]) and torch.equal(x["mask"], y["mask"])


def test_make_loader_workers_match_main_process(tmp_path):
    make_set(tmp_path, n_lq=4, n_hq=2)
    ds = UnpairedDataset(tmp_path, size=16, seed=4)
    main = list(make_loader(ds, batch_size=2, seed=4))
    work = list(make_loader(ds, batch_size=2, seed=4, num_workers=2))
    for x, y in zip(main, work):
        assert x["lq_path"] == y["lq_path"] and torch.equal(x["lq"], y["lq"]) and torch.equal(x["hq"], y["hq"])  # exact: same seeds


def test_make_loader_errors_and_sampler(tmp_path):
    ds = UnpairedDataset(make_set(tmp_path, n_lq=3, n_hq=1), size=16)
    with pytest.raises(ValueError, match=r"larger than the dataset \(3 items\)"): make_loader(ds, batch_size=4)
    with pytest.raises(ValueError, match="batch_size: expected a positive int"): make_loader(ds, batch_size=0)
    assert len(make_loader(ds, batch_size=4, drop_last=False)) == 1
    s = EpochSampler(10, seed=1)
    e0 = list(s); s.set_epoch(1)
    assert sorted(e0) == list(range(10)) and list(s) != e0 and list(EpochSampler(3, shuffle=False)) == [0, 1, 2]


# ---------------------------------------------------------------- errors
def test_error_root_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as e: UnpairedDataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_error_no_lq_hq_folders(tmp_path):
    (tmp_path / "images").mkdir(); (tmp_path / "lq").mkdir()
    with pytest.raises(FileNotFoundError) as e: UnpairedDataset(tmp_path)
    msg = str(e.value)
    assert "['images/', 'lq/']" in msg and "root/hq" in msg and "root/trainA" in msg and "root/trainB" in msg


def test_error_empty_folders(tmp_path):
    (tmp_path / "lq").mkdir(); (tmp_path / "hq").mkdir()
    save(tmp_path / "hq" / "a.png", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="at least one LQ image") as e: UnpairedDataset(tmp_path)
    assert str(tmp_path / "lq") in str(e.value) and "it is empty" in str(e.value)
    save(tmp_path / "lq" / "a.png", np.zeros((8, 8))); (tmp_path / "hq" / "a.png").unlink()
    (tmp_path / "hq" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="at least one HQ image") as e: UnpairedDataset(tmp_path)
    assert "readme.txt" in str(e.value)


def test_error_orphan_mask(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=1, masks=(0,))
    save(tmp_path / "masks" / "other.png", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="other.png has no LQ image with stem 'other'"): UnpairedDataset(tmp_path)
    assert UnpairedDataset(tmp_path, masks=False).mask_paths == {}


def test_error_duplicate_stems_with_masks(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=1, masks=(0,))
    save(tmp_path / "lq" / "img0.bmp", np.zeros((8, 8)))
    with pytest.raises(ValueError, match="share the stem 'img0'"): UnpairedDataset(tmp_path)


def test_error_mask_size_mismatch(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=1, masks=(), sizes=[(33, 41), (30, 30)])
    save(tmp_path / "masks" / "img1.png", np.zeros((29, 30)))
    ds = UnpairedDataset(tmp_path, size=16)
    ds[0]                                                               # no mask: fine
    with pytest.raises(ValueError) as e: ds[1]
    msg = str(e.value)
    assert "masks/img1.png" in msg and "lq/img1.png" in msg and "(1, 29, 30)" in msg and "(3, 30, 30)" in msg
    with pytest.raises(ValueError, match=r"\(1, 29, 30\)"): ds.check()


def test_error_corrupt_image(tmp_path):
    make_set(tmp_path, n_lq=2, n_hq=1, masks=())
    (tmp_path / "lq" / "img1.png").write_bytes(b"\x89PNG broken")
    ds = UnpairedDataset(tmp_path, size=16)
    with pytest.raises(ImageReadError, match="img1.png"): ds[1]
    assert issubclass(ImageReadError, ValueError)


def test_error_bad_arguments(tmp_path):
    make_set(tmp_path, n_lq=1, n_hq=1, masks=())
    for kw, msg in [(dict(size=0), "size: expected a positive int"), (dict(channels=4), "channels: expected 1 or 3"),
                    (dict(split="val"), "'train' or 'test'"), (dict(scale=(0.8, 1.2)), r"data.scale: expected values >= 1.0"),
                    (dict(scale=(1.3, 1.2)), "1 <= a <= b"), (dict(resize="stretch"), r"data.resize: expected one of \['short_side', 'upscale_only'\]"),
                    (dict(seed=-1), "seed")]:
        with pytest.raises(ValueError, match=msg): UnpairedDataset(tmp_path, **kw)
    ds = UnpairedDataset(tmp_path, size=8)
    with pytest.raises(IndexError, match="out of range"): ds[1]
    with pytest.raises(ValueError, match="epoch"): ds.set_epoch(-1)
    with pytest.raises(FileNotFoundError, match="no LQ/HQ folder pair for split 'test'"): UnpairedDataset(tmp_path, split="test")


def test_random_view_argument_errors():
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 8, 8\)"): random_view(torch.rand(3, 8, 8), 4, torch.zeros(1, 8, 7))
    with pytest.raises(ValueError, match=r"got \(1, 3, 8, 8\)"): random_view(torch.rand(1, 3, 8, 8), 4)


# ---------------------------------------------------------------- paired test set
def make_paired(root: Path):
    t = root / "test"
    for k, (name, hw) in enumerate({"b": (20, 28), "a": (20, 28), "c": (15, 17)}.items()):
        gt = np.full((*hw, 3), 0.2 + 0.2 * k)
        save(t / "gt" / f"{name}.png", gt)
        save(t / "lq" / f"{name}.{'tif' if name == 'a' else 'png'}", gt * 0.5)
    save(t / "masks" / "a.png", np.eye(20, 28))
    return root


def test_paired_test_set_pairs_by_stem(tmp_path):
    pts = PairedTestSet(make_paired(tmp_path))
    assert [it["name"] for it in pts] == ["a", "b", "c"]
    for it in pts:
        assert set(it) == {"lq", "gt", "mask", "has_mask", "name", "lq_path", "gt_path"}
        assert Path(it["lq_path"]).stem == Path(it["gt_path"]).stem == it["name"]
        torch.testing.assert_close(it["lq"], it["gt"] * 0.5, atol=1 / 255, rtol=0)   # the right partner
    assert (pts[0]["lq"].shape, pts[2]["gt"].shape) == ((3, 20, 28), (3, 15, 17))      # native sizes
    assert pts[0]["has_mask"].item() and pts[0]["mask"].sum() == 20 and not pts[1]["has_mask"].item()
    small = PairedTestSet(tmp_path / "test", channels=1, size=12)                     # root may be test/ itself
    assert small[0]["lq"].shape == small[2]["gt"].shape == small[0]["mask"].shape == (1, 12, 12)


def test_paired_test_set_batches_and_size_mismatch_message(tmp_path):
    pts = PairedTestSet(make_paired(tmp_path))
    b = next(iter(make_loader(pts, batch_size=2, shuffle=False)))
    assert b["lq"].shape == (2, 3, 20, 28) and b["name"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"different sizes \(a: \(3, 20, 28\), b: \(3, 20, 28\), c: \(3, 15, 17\)\)"):
        next(iter(make_loader(pts, batch_size=3, shuffle=False)))
    assert collate_same_size([pts[2]])["lq"].shape == (1, 3, 15, 17)


def test_paired_test_set_errors(tmp_path):
    root = make_paired(tmp_path)
    save(root / "test" / "lq" / "d.png", np.zeros((5, 5)))
    with pytest.raises(ValueError, match="without a matching ground-truth image") as e: PairedTestSet(root)
    assert "d.png" in str(e.value)
    (root / "test" / "lq" / "d.png").unlink(); save(root / "test" / "gt" / "e.png", np.zeros((5, 5)))
    with pytest.raises(ValueError, match="without a matching LQ image") as e: PairedTestSet(root)
    assert "e.png" in str(e.value)
    (root / "test" / "gt" / "e.png").unlink(); save(root / "test" / "gt" / "c.png", np.zeros((16, 17)))
    pts = PairedTestSet(root)
    with pytest.raises(ValueError) as e: pts[2]
    assert "c.png" in str(e.value) and "(3, 15, 17)" in str(e.value) and "(3, 16, 17)" in str(e.value)
    save(root / "test" / "masks" / "zz.png", np.zeros((5, 5)))
    with pytest.raises(ValueError, match="zz.png has no LQ image"): PairedTestSet(root)
    with pytest.raises(FileNotFoundError, match="expected folders lq/ and gt/"): PairedTestSet(root / "test" / "lq")
    with pytest.raises(FileNotFoundError, match="does not exist"): PairedTestSet(root / "missing")
    with pytest.raises(ValueError, match="size: expected None or a positive int"): PairedTestSet(root, size=0)


def test_epoch_sampler_ddp_shares(tmp_path):
    shares = [list(EpochSampler(7, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3] and set(sum(shares, [])) == set(range(7))
    full = list(EpochSampler(7, seed=3))
    assert [i for t in zip(*shares) for i in t][:7] == full                 # the same permutation, dealt out
    ds = UnpairedDataset(make_set(tmp_path, n_lq=5, n_hq=1, masks=()), size=8)
    loaders = [make_loader(ds, batch_size=1, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(l) for l in loaders] == [3, 3]
    with pytest.raises(ValueError, match="3 per rank"): make_loader(ds, batch_size=4, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank: expected"): EpochSampler(5, num_replicas=2, rank=-1)
