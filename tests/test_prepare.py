"""hqg.data.prepare: EyeQ, DRIVE, CORN and folder sets turned into hqg's layout, on tiny copies of each real layout."""
import csv, hashlib, json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hqg.data.prepare as prep
from hqg.data.prepare import PrepareConfig, PrepareError, assign_split, eyeq_counts, prepare, read_mask, split_fraction
from hqg.data.datasets import PairedTestSet, UnpairedDataset, find_layout
from hqg.data.io import read_image, write_image


def disc_image(h=40, w=52, r=17, level=0.8, seed=0):
    "A reddish textured disc on black (a fundus stand-in) as uint8 (H,W,3), and its bool mask."
    yy, xx = np.mgrid[:h, :w]
    m = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= r * r
    x = np.zeros((h, w, 3), np.float32)
    x[m] = np.array([1.0, 0.5, 0.25], np.float32) * level * (0.85 + 0.15 * np.random.default_rng(seed).random((m.sum(), 1)))
    return (x * 255).round().astype(np.uint8), m


def make_eyeq(root, train=range(10, 22), test=range(1, 5), folders=("train", "test"), ext=".jpeg", rows_fn=None):
    "EyeQ's layout: Label_EyeQ_{train,test}.csv (pandas header), <patient>_<left|right>.jpeg in train/ and test/."
    k = 0
    for split, pids, folder in (("train", train, folders[0]), ("test", test, folders[1])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        rows = [["", "image", "quality", "DR_grade"]]
        for pid in pids:
            for eye in ("left", "right"):
                img, _ = disc_image(level=0.8 if k % 4 else 0.15, seed=k)
                name = f"{pid}_{eye}.jpeg"
                Image.fromarray(img).save(root / folder / (Path(name).stem + ext), quality=95)
                rows.append([str(len(rows) - 1), name, str(k % 3), str(k % 5)]); k += 1
        if rows_fn: rows = rows_fn(split, rows)
        with open(root / f"Label_EyeQ_{split}.csv", "w", newline="") as f: csv.writer(f).writerows(rows)
    return root


def make_drive(root, train=(21, 22, 23, 24), test=(1, 2), manual_test=True):
    "DRIVE's layout: training/{images/NN_training.tif, 1st_manual/NN_manual1.gif, mask/NN_training_mask.gif}, test/..."
    for part, ids, tag in (("training", train, "training"), ("test", test, "test")):
        for sub in ("images", "mask") + (("1st_manual",) if part == "training" or manual_test else ()):
            (root / part / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            img, m = disc_image(44, 40, 18, seed=i)
            vessel = np.zeros((44, 40), np.uint8); vessel[20:23, 8:32] = 255; vessel[10:34, 19:21] = 255
            Image.fromarray(img).save(root / part / "images" / f"{i:02d}_{tag}.tif")
            Image.fromarray(m.astype(np.uint8) * 255).save(root / part / "mask" / f"{i:02d}_{tag}_mask.gif")
            if part == "training" or manual_test:
                Image.fromarray(vessel).save(root / part / "1st_manual" / f"{i:02d}_manual1.gif")
    return root


def make_folders(root, names, size=(24, 24)):
    "{folder: [file names]} of small gray images."
    for d, files in names.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        for j, n in enumerate(files): write_image(root / d / n, torch.full((1, *size), 0.2 + 0.02 * j))
    return root


def snapshot(root):
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def tree(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def eyeq(tmp_path_factory):
    "One EyeQ copy and one prepared run of it (size 32), shared by the tests that only read them."
    tmp = tmp_path_factory.mktemp("eyeq")
    src = make_eyeq(tmp / "EyeQ")
    before = snapshot(src)
    res = prepare("eyeq", src, tmp / "out", size=32)
    return tmp, src, res, before


def test_split_hash_is_the_contract():
    assert split_fraction("10") == pytest.approx(0.41707, abs=1e-5)
    assert [assign_split(str(p), 0.2) for p in (7, 10, 15, 18, 19, 20, 25)] == ["val", "train", "val", "val", "train", "val", "val"]
    assert [assign_split(str(p), 0.2, 0.1, seed=3) for p in (7, 10, 15)] == [assign_split(str(p), 0.2, 0.1, seed=3) for p in (7, 10, 15)]
    us = [split_fraction(str(i)) for i in range(4000)]
    assert 0.18 < np.mean([u < 0.2 for u in us]) < 0.22 and 0 <= min(us) and max(us) < 1


def test_eyeq_counts_grades_and_layout(eyeq):
    tmp, src, res, _ = eyeq
    # 12 train patients x 2 eyes, grades cycle 0,1,2: 8 Good, 8 Usable, 8 Reject; test 4 patients: 8 images
    assert eyeq_counts(src) == {"train": {"Good": 8, "Usable": 8, "Reject": 8, "total": 24},
                                "test": {"Good": 3, "Usable": 3, "Reject": 2, "total": 8}}
    assert res.grades == eyeq_counts(src)
    c = res.counts
    assert c["train"]["hq"] + c["val"]["hq"] == 8 and c["train"]["lq"] + c["val"]["lq"] == 8
    assert c["test"] == {"hq": 3, "lq": 3, "left out": 2}
    assert sum(v.get("left out", 0) for v in c.values()) == 10
    out = tmp / "out"
    assert {p.name for p in out.iterdir()} == {"hq", "lq", "hq_fov", "lq_fov", "val", "test", "manifest.json"}
    assert sorted(p.stem for p in (out / "hq").iterdir()) == sorted(p.stem for p in (out / "hq_fov").iterdir())
    assert "| train (published) | 8,347 | 1,876 | 2,320 | 12,543 |" in res.table()
    assert "| split | lq | hq | left out |" in res.table()


def test_eyeq_manifest_rows_and_both_eyes_together(eyeq):
    tmp, src, res, _ = eyeq
    man = manifest(tmp / "out")
    assert man["set"] == "eyeq" and man["complete"] and man["config"]["val_frac"] == 0.2
    files = {p.relative_to(tmp / "out").as_posix() for p in (tmp / "out").rglob("*.png")}
    assert {r["file"] for r in man["files"]} == files
    r = next(r for r in man["files"] if r["file"].endswith("lq/10_right.png"))
    assert (r["source"], r["group"], r["grade"], r["kind"]) == ("train/10_right.jpeg", "10", "Usable", "image")
    assert r["preprocessing"] == "crop to FOV, pad square, resize 32, 8-bit PNG"
    split_of = {}
    for r in man["files"] + man["left_out"]: split_of.setdefault(r["group"], set()).add(r["split"])
    assert all(len(v) == 1 for v in split_of.values())
    assert {g for g, v in split_of.items() if v == {"val"}} == {str(p) for p in range(10, 22) if assign_split(str(p), 0.2) == "val"} == {"15", "18", "20"}
    assert all(r["split"] == "test" for r in man["files"] if r["source"].startswith("test/"))


def test_eyeq_fov_masks_cover_the_disc(tmp_path):
    "size=0 keeps the crop: each FOV mask is a 33-35 px square (the disc is 35 across) matching the drawn disc's pixels."
    src = make_eyeq(tmp_path / "EyeQ", train=range(10, 13), test=range(1, 2))  # every 4th image is dark (level 0.15)
    prepare("eyeq", src, tmp_path / "out", size=0, val_frac=0.0, include_reject=True)
    fovs = sorted((tmp_path / "out").rglob("*_fov/*.png"))
    assert len(fovs) == 8
    for f in fovs:
        fov, x = read_mask(f)[0], read_image(f.parent.with_name(f.parent.name[:2]) / f.name)
        assert fov.shape == x.shape[-2:] and fov.shape[0] == fov.shape[1] and 33 <= fov.shape[0] <= 35
        disc = x.amax(0) > 0.3 * x.max()  # the drawn disc's pixels, bright or dark
        assert float((fov & disc).sum() / (fov | disc).sum()) >= 0.9, f


def test_eyeq_idempotent_and_source_untouched(eyeq, tmp_path):
    tmp, src, res, before = eyeq
    assert snapshot(src) == before
    first = tree(tmp / "out")
    again = prepare("eyeq", src, tmp / "out", size=32)
    assert (again.written, again.removed, again.kept) == (0, 0, res.written)
    assert tree(tmp / "out") == first
    par = prepare("eyeq", src, tmp_path / "par", size=32, workers=2)  # other processes, same bytes
    assert tree(tmp_path / "par") == first and par.written == res.written
    assert snapshot(src) == before


def test_eyeq_moves_files_when_settings_change(eyeq, tmp_path):
    _, src, _, _ = eyeq
    out = tmp_path / "out"
    prepare("eyeq", src, out, size=24, preview=True)
    res = prepare("eyeq", src, out, size=24, val_frac=0.5, include_reject=True)
    man = manifest(out)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == {r["file"] for r in man["files"]}
    assert res.removed > 0 and not man["left_out"] and "preview.png" not in on_disk
    stems = [p.stem for p in out.rglob("*.png") if p.parent.name in ("lq", "hq")]
    assert len(stems) == len(set(stems)) == 32


def _interrupt_after(monkeypatch, n):
    calls, real = [], prep._write_item
    def flaky(*a):
        if len(calls) == n: raise KeyboardInterrupt
        calls.append(1); real(*a)
    monkeypatch.setattr(prep, "_write_item", flaky)
    return lambda: monkeypatch.setattr(prep, "_write_item", real)


def test_interrupted_run_resumes(eyeq, tmp_path, monkeypatch):
    _, src, res, _ = eyeq
    out = tmp_path / "out"
    restore = _interrupt_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt): prepare("eyeq", src, out, size=32)
    assert manifest(out)["complete"] is False and len((out / ".prepare-written").read_text().splitlines()) == 10
    restore()
    again = prepare("eyeq", src, out, size=32)
    assert again.kept == 5 * 2 and manifest(out)["complete"] and not (out / ".prepare-written").exists()
    assert tree(out) == tree(res.out)
    # interrupted while changing a setting: the files not yet rewritten must not pass for new ones
    restore = _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt): prepare("eyeq", src, out, size=24)
    restore()
    resumed = prepare("eyeq", src, out, size=24)
    assert resumed.kept == 3 * 2
    prepare("eyeq", src, tmp_path / "fresh", size=24)
    assert tree(out) == tree(tmp_path / "fresh")


def test_eyeq_images_folder_and_converted_files(tmp_path):
    src = make_eyeq(tmp_path / "EyeQ", train=range(10, 13), test=range(1, 2), folders=("images", "images"), ext=".png")
    res = prepare("eyeq", src, tmp_path / "out", size=16, include_reject=True)
    assert sum(v.get("lq", 0) + v.get("hq", 0) for v in res.counts.values()) == 8
    assert manifest(tmp_path / "out")["files"][0]["source"].startswith("images/")


def _bad_quality(split, rows):
    if split == "train": rows[3][2] = "3"
    return rows


@pytest.mark.parametrize("breakage, expect", [
    ("no_test_csv", "Label_EyeQ_test.csv not found; expected EyeQ's label files"),
    ("bad_header", "header ',image,grade,DR_grade' lacks column(s) ['quality']"),
    ("bad_quality", "Label_EyeQ_train.csv line 4: unknown quality '3' for '11_left.jpeg'; expected 0 (Good), 1 (Usable) or 2 (Reject)"),
    ("missing_image", "Label_EyeQ_train.csv line 2 lists '10_left.jpeg', but no such image"),
    ("empty_folders", "eyeq: no images in"),
])
def test_eyeq_errors_are_one_line(tmp_path, breakage, expect):
    src = make_eyeq(tmp_path / "EyeQ", train=range(10, 12), test=range(1, 2),
                    rows_fn=_bad_quality if breakage == "bad_quality" else None)
    if breakage == "no_test_csv": (src / "Label_EyeQ_test.csv").unlink()
    if breakage == "bad_header":
        p = src / "Label_EyeQ_test.csv"; p.write_text(p.read_text().replace(",image,quality,", ",image,grade,"))
    if breakage == "missing_image": (src / "train" / "10_left.jpeg").unlink()
    if breakage == "empty_folders":
        for p in list(src.rglob("*.jpeg")): p.unlink()
    with pytest.raises(PrepareError) as e: prepare("eyeq", src, tmp_path / "out")
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_drive_is_a_bilevel_and_segmentation_set(tmp_path):
    from hqg.train.bilevel import SegmentationSet
    src = make_drive(tmp_path / "DRIVE")
    res = prepare("drive", src, tmp_path / "out", size=32)
    out = tmp_path / "out"
    assert res.counts == {"train": {"hq": 2, "lq": 2, "masks": 4}, "test": {"lq": 2, "masks": 2}}
    assert sorted(p.name for p in (out / "test" / "masks").iterdir()) == ["01_test.png", "02_test.png"]
    seg = SegmentationSet(out / "hq", out / "hq_masks", size=16, augment=False)
    it = seg[0]
    assert it["image"].shape == (3, 16, 16) and 0 < it["mask"].mean() < 0.3
    ds = UnpairedDataset(out, size=16, augment=False)
    assert len(ds.mask_paths) == len(ds) == 2 and bool(ds[0]["has_mask"])
    fov = read_mask(out / "test" / "lq_fov" / "01_test.png")
    given = torch.from_numpy(np.asarray(Image.open(src / "test" / "mask" / "01_test_mask.gif")) > 0)
    assert fov.shape == (1, 32, 32) and abs(fov.float().mean() - 3.1416 / 4) < 0.06 and given.float().mean() < 0.7
    m = read_mask(out / "masks" / f"{sorted(p.stem for p in (out / 'lq').iterdir())[0]}.png")
    assert (m & ~fov).sum() == 0 and m.sum() > 10  # the vessels stay inside the FOV after the crop
    assert manifest(out)["files"][1]["preprocessing"].startswith("given mask, binarised")
    from hqg.eval.evaluate import find_eval_set
    found = find_eval_set(out)
    assert (found["lq"], found["masks"], found["gt"]) == (out / "test" / "lq", out / "test" / "masks", None)


def test_drive_hq_lq_split_is_stable_and_exact(tmp_path):
    src = make_drive(tmp_path / "DRIVE", train=tuple(range(21, 41)), test=(1,), manual_test=False)
    a = prepare("drive", src, tmp_path / "a", size=8)
    assert a.counts == {"train": {"hq": 10, "lq": 10, "masks": 20}, "test": {"lq": 1}}
    hq = sorted(p.stem[:2] for p in (tmp_path / "a" / "hq").iterdir())
    prepare("drive", src, tmp_path / "b", size=8)
    assert sorted(p.stem[:2] for p in (tmp_path / "b" / "hq").iterdir()) == hq
    assert hq == sorted(sorted((str(i) for i in range(21, 41)), key=lambda i: split_fraction(f"drive:{i}"))[:10])


def test_drive_missing_mask(tmp_path):
    src = make_drive(tmp_path / "DRIVE")
    (src / "training" / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(PrepareError, match=r"22_training_mask.gif not found; expected the FOV mask of 22_training.tif"):
        prepare("drive", src, tmp_path / "out")


def test_corn_swap_preview_and_copy(tmp_path):
    src = make_folders(tmp_path / "CORN", {"trainA": ["a1.tif", "a2.tif"], "trainB": ["b1.tif"],
                                           "testA": ["t1.tif"], "testB": ["t2.tif"]})
    res = prepare("corn", src, tmp_path / "out", preview=True)
    assert res.counts == {"train": {"lq": 2, "hq": 1}, "test": {"lq": 1, "hq": 1}}
    assert (tmp_path / "out" / "lq" / "a1.tif").read_bytes() == (src / "trainA" / "a1.tif").read_bytes()
    assert Image.open(res.preview).size == (384, 224)
    sw = prepare("corn", src, tmp_path / "swapped", swap=True)
    assert sorted(p.name for p in (tmp_path / "swapped" / "hq").iterdir()) == ["a1.tif", "a2.tif"]
    assert sw.counts["test"] == {"hq": 1, "lq": 1}
    assert find_layout(tmp_path / "swapped", "test")["lq"] == tmp_path / "swapped" / "test" / "lq"
    (src / "trainB" / "b1.tif").unlink()
    with pytest.raises(PrepareError, match=r"corn trainB: folder .*trainB holds no images"):
        prepare("corn", src, tmp_path / "o2")


def test_folder_groups_keep_subjects_together(tmp_path):
    names = {"bad": [f"s{i:02d}_{v}.png" for i in range(30) for v in "ab"], "good": [f"s{i:02d}_c.png" for i in range(20, 50)],
             "labels": ["s00_a.png", "s01_b.png"]}
    src = make_folders(tmp_path / "mine", names)
    res = prepare("folder", src, tmp_path / "out", lq="bad", hq=src / "good", masks="labels", group=r"^(s\d+)_",
                  val_frac=0.2, test_frac=0.2)
    man = manifest(tmp_path / "out")
    split_of = {}
    for r in man["files"]: split_of.setdefault(r["group"], set()).add(r["split"])
    assert len(split_of) == 50 and all(len(v) == 1 for v in split_of.values())
    assert {r["split"] for r in man["files"]} == {"train", "val", "test"}
    assert sum(v.get("masks", 0) for v in res.counts.values()) == 2
    assert sum(v.get("lq", 0) for v in res.counts.values()) == 60
    with pytest.raises(PrepareError, match=r"group: '\^\(x\\\\d\+\)' finds no subject id in the file name"):
        prepare("folder", src, tmp_path / "o2", lq="bad", hq="good", group=r"^(x\d+)")
    write_image(src / "labels" / "nobody.png", torch.zeros(1, 4, 4))
    with pytest.raises(PrepareError, match="has no image with the stem 'nobody'"):
        prepare("folder", src, tmp_path / "o3", lq="bad", hq="good", masks="labels")
    with pytest.raises(PrepareError, match="masks: folder .*lables not found"):
        prepare("folder", src, tmp_path / "o3", lq="bad", hq="good", masks="lables")


def test_drive_copied_keeps_given_masks(tmp_path):
    src = make_drive(tmp_path / "DRIVE", train=(21, 22), test=(1,))
    res = prepare("drive", src, tmp_path / "out", process="copy")
    out = tmp_path / "out"
    assert (out / "test" / "lq" / "01_test.tif").read_bytes() == (src / "test" / "images" / "01_test.tif").read_bytes()
    fov = read_mask(out / "test" / "lq_fov" / "01_test.png")
    assert fov.shape == (1, 44, 40) and bool((fov[0].numpy() == (np.asarray(Image.open(src / "test" / "mask" / "01_test_mask.gif")) > 0)).all())
    assert res.counts == {"train": {"hq": 1, "lq": 1, "masks": 2}, "test": {"lq": 1, "masks": 1}}


@pytest.mark.parametrize("call, expect", [
    (lambda t: prepare("kaggle", t, t / "o"), "kind: expected one of eyeq, drive, corn, folder"),
    (lambda t: prepare("corn", t / "nowhere", t / "o"), "is not a folder"),
    (lambda t: prepare("folder", t, t / "o", size=-1), "prepare.size: expected values >= 0"),
    (lambda t: prepare("folder", t, t / "o", val_frac=0.6, test_frac=0.5), "must stay below 1"),
    (lambda t: prepare("eyeq", t, t / "o", lq="x"), "for kind 'folder' only"),
    (lambda t: prepare("folder", t, t / "o"), "folder lq: folder"),
])
def test_argument_errors(tmp_path, call, expect):
    with pytest.raises(PrepareError, match=expect): call(tmp_path)


def test_folder_without_root_and_duplicate_stems(tmp_path, monkeypatch):
    make_folders(tmp_path / "data", {"bad": ["a.png", "b.png"], "good": ["c.png"]})
    monkeypatch.chdir(tmp_path)
    res = prepare("folder", None, "out", lq="data/bad", hq="data/good", val_frac=0.0, test_frac=0.0)
    assert res.counts == {"train": {"lq": 2, "hq": 1}}
    assert sorted(r["source"] for r in manifest(tmp_path / "out")["files"]) == ["bad/a.png", "bad/b.png", "good/c.png"]
    write_image(tmp_path / "data" / "bad" / "a.tif", torch.zeros(1, 4, 4))
    with pytest.raises(PrepareError, match=r"would both be written as lq/a\.\*; expected unique file stems"):
        prepare("folder", None, "out2", lq="data/bad", hq="data/good")


def test_out_must_be_ours_and_outside_the_source(tmp_path):
    src = make_folders(tmp_path / "src", {"lq": ["a.png"], "hq": ["b.png"]})
    (tmp_path / "busy").mkdir(); (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="is not empty and holds no manifest.json written by hqg data prepare"):
        prepare("folder", src, tmp_path / "busy")
    with pytest.raises(PrepareError, match="inside the source folder"):
        prepare("folder", src, src / "prepared")
    assert PrepareConfig().val_frac is None and prep.VAL_DEFAULT["folder"] == 0.1


def test_cli_data_prepare_then_evaluate_without_reference(tmp_path, capsys):
    "`hqg data prepare eyeq` prints the count table and fits (or says why not) the no-reference model;"
    "`hqg evaluate` on the prepared set, which has no ground truth, adds the no-reference columns by itself."
    from hqg.app.cli import main
    src = make_eyeq(tmp_path / "EyeQ", train=range(10, 40), test=range(1, 4))
    out = tmp_path / "eyeq"
    assert main(["data", "prepare", "eyeq", "--root", str(src), "--out", str(out), "--size", "96"]) == 0
    text = capsys.readouterr().out
    assert "| split | lq | hq | left out |" in text and "| train (published) | 8,347 | 1,876 | 2,320 | 12,543 |" in text
    assert "no-reference model fitted on" in text and (out / "noref.json").is_file()
    assert main(["data", "prepare", "eyeq", "--root", str(src), "--out", str(out), "--size", "96", "--no-noref"]) == 0
    assert "no-reference" not in capsys.readouterr().out.split("| split |")[-1]
    ev = tmp_path / "ev"
    assert main(["evaluate", "--method", "identity", "--data", str(out), "--out", str(ev), "--no-images"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert "noref.json" in m["no_reference"] and np.isfinite(m["mean"]["niqe_hq"]) and "sharpness" in m["mean"]
    (tmp_path / "empty").mkdir(); capsys.readouterr()
    assert main(["data", "prepare", "eyeq", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hqg: error:") and "Label_EyeQ_train.csv" in err and err.count("\n") == 1


def test_benchmark_on_a_prepared_set_without_ground_truth(tmp_path):
    "`hqg benchmark --data DIR` on a prepared real-data layout: no-reference columns, and the header says so."
    from hqg.app.benchmark import benchmark
    src = make_eyeq(tmp_path / "EyeQ", train=range(10, 40), test=range(1, 4))
    res = prepare("eyeq", src, tmp_path / "eyeq", size=96)
    bench = benchmark(["identity", "clahe"], res.out, seeds=1, out=tmp_path / "bm", verbose=False)
    table = (bench / "table.md").read_text()
    assert "no ground truth" in table and "HQ-domain NIQE" in table and "PSNR (dB)" not in table
    summary = json.loads((bench / "results.json").read_text())["summary"]
    assert set(summary) == {"identity", "clahe"} and all(np.isfinite(summary[m]["sharpness"]["mean"]) for m in summary)


def test_prepared_drive_is_a_downstream_test_set_without_ground_truth(tmp_path):
    "The downstream experiment scores segmentation on a prepared DRIVE copy: LQ images and vessel masks, no gt."
    from hqg.app.downstream import acceptance, test_images
    res = prepare("drive", make_drive(tmp_path / "DRIVE"), tmp_path / "drive", size=32)
    lq, gt, mk = test_images(res.out)
    assert gt is None and lq.shape == (2, 3, 32, 32) and mk.shape == (2, 1, 32, 32)
    assert set(mk.unique().tolist()) == {0.0, 1.0} and 0.02 < mk.mean() < 0.5      # the drawn vessels, binary
    rows = [{"setting": s, "dice_mean": d} for s, d in (("S_hq on LQ", 0.5), ("S_hq on enhance-only", 0.6), ("S_hq on bi-level", 0.6))]
    assert acceptance(rows) == {"dice_above_lq": True, "dice_not_below_enhance": True}   # no PSNR/SSIM criteria without gt
