"""A photograph far above the training scale: `hqg enhance` works at the training scale and writes full size."""
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from hqg.app.cli import main, default_checkpoint
from hqg.data.io import read_image, write_image
from hqg.model.networks import HQGNet

ROOT = Path(__file__).resolve().parents[1]


def test_2048px_fundus_is_enhanced_at_the_training_scale_and_written_full_size(tmp_path, capsys):
    net = HQGNet.from_checkpoint(default_checkpoint()).eval()
    assert net.train_side == 192  # stored in the shipped checkpoint: the training images' short side
    x = read_image(ROOT / "data_samples/fundus/test/lq/test_00_fov.png")[None]
    big = F.interpolate(x, size=(2048, 2048), mode="bicubic", align_corners=False).clamp(0, 1)
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "big.png", big[0])
    assert main(["enhance", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out
    assert re.search(r"enhanced 1 image\(s\) into .* in [\d.]+ s \([\d.]+ s/image\), peak memory \d+ MiB; "
                     r"scale auto \(training short side 192 px\)", line), line
    y = read_image(tmp_path / "out" / "big.png")[None]
    assert y.shape == (1, 3, 2048, 2048)
    # what the model does at the training scale, brought back: the output at 192 px is the 192-px enhancement
    small_in = F.interpolate(read_image(tmp_path / "in" / "big.png")[None], size=(192, 192), mode="area")
    want = net.enhance(small_in, scale="none")
    got = F.interpolate(y, size=(192, 192), mode="area")
    fov = net.fov_mask(small_in)
    assert (got - want).abs()[fov.expand_as(got)].mean() < 0.01
    assert (y - read_image(tmp_path / "in" / "big.png")[None]).abs().mean() > 0.02  # it did change the image
    assert y[..., :40, :40].max() < 1 / 255 + 1e-6   # the corner outside the field of view is black


def test_scale_option_errors_name_the_value(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 64, 64))
    assert main(["enhance", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--scale", "big"]) == 2
    assert "--scale: expected auto, none or a factor in (0, 1], got 'big'" in capsys.readouterr().err
    assert main(["enhance", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--scale", "2"]) == 2
    assert "scale: expected 'auto', 'none' or a factor in (0, 1], got 2.0" in capsys.readouterr().err
