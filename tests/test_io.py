"""hqg.data.io: reading/writing 8/16-bit PNG, JPEG, BMP, TIFF and DICOM; clear errors for bad files."""
import pickle
import struct
import sys
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import hqg.data.io as hio
from hqg.data.io import (ImageInfo, ImageReadError, OptionalDependencyError, image_info, list_images, read_dicom,
                    read_image, write_image)

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

RNG = np.random.default_rng(0)
Q16, Q8 = 0.5 / 65535 + 1e-7, 0.5 / 255 + 1e-7  # half a quantisation step (+ float32 slack)


def codes(x, bits):
    "Integer codes of a [0,1] tensor at `bits` bits."
    return np.rint(x.double().numpy() * (2**bits - 1)).astype(np.int64)


def chw(v):
    "uint (H,W) or (H,W,C) array -> (C,H,W) int64."
    v = np.asarray(v).astype(np.int64)
    return v[None] if v.ndim == 2 else v.transpose(2, 0, 1)


def assert_read_error(path, *contains):
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    msg = str(e.value)
    assert path.name in msg, msg
    for c in contains:
        assert c in msg, msg
    return e.value


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("c", [1, 3])
def test_tiff16_roundtrip_exact(tmp_path, c):
    x = torch.rand(c, 17, 23)
    p = write_image(tmp_path / "a.tif", x, bits=16)
    stored = tifffile.imread(p)  # independent decoder: the file holds round(x * 65535)
    assert stored.dtype == np.uint16 and (chw(stored) == codes(x, 16)).all()
    y = read_image(p)
    assert y.shape == (c, 17, 23) and y.dtype == torch.float32
    assert (y - x).abs().max() <= Q16
    assert (codes(y, 16) == codes(x, 16)).all()
    assert torch.equal(read_image(write_image(tmp_path / "b.tiff", y, bits=16)), y)   # exact: 16-bit values are a fixed point


@pytest.mark.parametrize("c", [1, 3])
def test_png16_roundtrip_exact(tmp_path, c):
    x = torch.rand(c, 19, 13)
    p = write_image(tmp_path / "a.png", x, bits=16)
    y = read_image(p)
    assert y.shape == (c, 19, 13) and y.dtype == torch.float32
    assert (y - x).abs().max() <= Q16
    assert (codes(y, 16) == codes(x, 16)).all()
    assert torch.equal(read_image(write_image(tmp_path / "b.PNG", y, bits=16)), y)   # exact: 16-bit values are a fixed point
    with Image.open(p) as im:  # Pillow as an independent decoder: exact for gray, high byte only for RGB
        got = np.asarray(im).astype(np.int64)
    want = codes(x, 16)
    assert (chw(got) == (want if c == 1 else want >> 8)).all()


# An independent 16-bit PNG encoder for reader tests (every row filter, Adam7 interlacing): hqg itself encodes and
# decodes 16-bit PNG with imagecodecs, so these files come from code that shares nothing with it.
_SIG = b"\x89PNG\r\n\x1a\n"
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(typ: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(x, bpp, filters):
    "PNG row filters 0-4 (PNG spec, section 9) of raw rows x (H, W*bpp) uint8; each row's filter byte first."
    f = np.asarray(filters, np.uint8)
    a = np.zeros_like(x); a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x); b[1:] = x[:-1]
    c = np.zeros_like(x); c[1:, bpp:] = x[:-1, :-bpp]
    ai, bi, ci = (t.astype(np.int32) for t in (a, b, c))
    pred = {0: 0 * ai, 1: ai, 2: bi, 3: (ai + bi) >> 1, 4: _paeth(ai, bi, ci)}
    out = np.stack([(x[r].astype(np.int32) - pred[int(k)][r]) & 0xFF for r, k in enumerate(f)]).astype(np.uint8)
    return np.concatenate([f[:, None], out], axis=1)


def _encode16(v, filters=(0, 1, 2, 3, 4), interlace=False):
    "uint16 (H,W) or (H,W,C) as a 16-bit PNG with the given row filters (cycled), optionally Adam7-interlaced."
    h, w = v.shape[:2]
    spp = 1 if v.ndim == 2 else v.shape[2]
    stream = b""
    for x0, y0, dx, dy in (_ADAM7 if interlace else ((0, 0, 1, 1),)):
        sub = v[y0::dy, x0::dx]
        if sub.size == 0: continue
        raw = np.ascontiguousarray(sub, ">u2").view(np.uint8).reshape(sub.shape[0], -1)
        stream += _filter_rows(raw, 2 * spp, np.resize(np.asarray(filters), sub.shape[0])).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[spp], 0, 0, int(interlace))
    return _SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(stream)) + _chunk(b"IEND", b"")


def test_png16_extremes_and_full_range(tmp_path):
    v = np.array([[0, 1, 255, 256], [32767, 32768, 65534, 65535]], np.uint16)
    (tmp_path / "e.png").write_bytes(hio._png_encode16(v))
    y = read_image(tmp_path / "e.png")
    assert (codes(y, 16) == chw(v)).all()
    assert abs(y.min().item()) < 1e-7 and abs(y.max().item() - 1.0) < 1e-7


def test_png16_reads_pillow_encoded_file(tmp_path):
    """Pillow writes 16-bit gray PNGs with its own filter choices (Sub and Paeth): an independent encoder."""
    g = (RNG.random((37, 29)) * 65535).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "pil.png")
    assert (hio._png_read16(tmp_path / "pil.png") == g).all()
    assert (codes(read_image(tmp_path / "pil.png"), 16) == chw(g)).all()


@pytest.mark.parametrize("spp", [1, 2, 3, 4])
def test_png16_all_filters_all_colour_types(tmp_path, spp):
    v = RNG.integers(0, 65536, (11, 9, spp), dtype=np.uint16)
    v = v[..., 0] if spp == 1 else v
    (tmp_path / "f.png").write_bytes(_encode16(v, filters=range(5)))
    want = v if spp == 1 else v[..., 0] if spp == 2 else v[..., :3]  # alpha dropped
    y = read_image(tmp_path / "f.png")
    assert y.shape[0] == (1 if spp <= 2 else 3)
    assert (codes(y, 16) == chw(want)).all()


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (9, 13), (16, 16)])
def test_png16_adam7_interlaced(tmp_path, shape):
    v = RNG.integers(0, 65536, shape, dtype=np.uint16)
    (tmp_path / "i.png").write_bytes(_encode16(v, filters=(4,), interlace=True))  # every pass with Paeth rows
    assert (hio._png_read16(tmp_path / "i.png") == v).all()
    with Image.open(tmp_path / "i.png") as im:  # Pillow decodes interlaced 16-bit gray too
        assert (np.asarray(im).astype(np.uint16) == v).all()


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
@pytest.mark.parametrize("c", [1, 3])
def test_8bit_roundtrip_exact(tmp_path, ext, c):
    x = torch.rand(c, 10, 7)
    y = read_image(write_image(tmp_path / f"a.{ext}", x))
    assert y.shape == (c, 10, 7)
    assert (y - x).abs().max() <= Q8
    assert (codes(y, 8) == codes(x, 8)).all()


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_within_tolerance(tmp_path, c):
    ramp = torch.linspace(0, 1, 32)
    x = (ramp[None, :, None] * 0.7 + ramp[None, None, :] * 0.3).expand(c, 32, 32).contiguous()
    if c == 3:
        x = x * torch.tensor([1.0, 0.7, 0.4])[:, None, None]
    y = read_image(write_image(tmp_path / "a.jpg", x))
    assert y.shape == (c, 32, 32)
    assert (y - x).abs().mean() < 0.005 and (y - x).abs().max() < 0.03
    assert image_info(tmp_path / "a.jpg") == ImageInfo(tmp_path / "a.jpg", "jpeg", 8, c, 32, 32)


def test_float32_tiff_exact_and_range_checked(tmp_path):
    x = torch.rand(1, 6, 5)
    assert torch.equal(read_image(write_image(tmp_path / "f.tif", x, bits=32)), x)   # exact: float32 stored as is
    tifffile.imwrite(tmp_path / "big.tif", np.array([[0.0, 2.0], [4.0, 1.0]], np.float32))
    assert_read_error(tmp_path / "big.tif", "outside [0,1]", "window=")
    y = read_image(tmp_path / "big.tif", window="minmax")
    assert torch.allclose(y, torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]))


def test_signed_tiff_needs_window(tmp_path):
    hu = np.array([[-1000, 0], [40, 240]], np.int16)
    tifffile.imwrite(tmp_path / "ct.tif", hu)
    assert_read_error(tmp_path / "ct.tif", "int16", "no natural [0,1] scale")
    y = read_image(tmp_path / "ct.tif", window=(40.5, 401))  # (v - 40)/400 + 1/2
    assert torch.allclose(y, torch.tensor([[[0.0, 0.4], [0.5, 1.0]]]), atol=1e-6)


def test_tiff_miniswhite_is_inverted(tmp_path):
    v = np.array([[0, 65535], [1000, 30000]], np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", v, photometric="miniswhite")
    assert (codes(read_image(tmp_path / "w.tif"), 16) == chw(65535 - v.astype(np.int64))).all()


def test_tiff_palette(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, 1] = (65535, 0, 0)
    cmap[:, 2] = (0, 32768, 65535)
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    y = read_image(tmp_path / "p.tif")
    assert y.shape == (3, 2, 2)
    assert (codes(y, 16)[:, 1, 0] == [0, 32768, 65535]).all() and (codes(y, 16)[:, 0, 1] == [65535, 0, 0]).all()


def test_rgba_alpha_dropped(tmp_path):
    v = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    v[..., 3] = 0  # fully transparent: the colour must still come back unchanged
    Image.fromarray(v, "RGBA").save(tmp_path / "a.png")
    y = read_image(tmp_path / "a.png")
    assert y.shape == (3, 5, 6) and (codes(y, 8) == chw(v[..., :3])).all()
    tifffile.imwrite(tmp_path / "a.tif", v, photometric="rgb", extrasamples=["unassalpha"])
    assert (codes(read_image(tmp_path / "a.tif"), 8) == chw(v[..., :3])).all()


def test_gray_alpha(tmp_path):
    v = RNG.integers(0, 256, (4, 7, 2), dtype=np.uint8)
    Image.fromarray(v, "LA").save(tmp_path / "la.png")
    y = read_image(tmp_path / "la.png")
    assert y.shape == (1, 4, 7) and (codes(y, 8) == chw(v[..., 0])).all()
    v16 = RNG.integers(0, 65536, (4, 7, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "la.tif", v16, photometric="minisblack", extrasamples=["unassalpha"])
    assert (codes(read_image(tmp_path / "la.tif"), 16) == chw(v16[..., 0])).all()
    assert image_info(tmp_path / "la.tif").channels == 1


def test_palette_png(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([10, 20, 30, 200, 100, 0, 255, 255, 255])
    im.save(tmp_path / "p.png")
    y = read_image(tmp_path / "p.png")
    pal = np.array([[10, 20, 30], [200, 100, 0], [255, 255, 255]])
    assert y.shape == (3, 2, 3) and (codes(y, 8) == chw(pal[idx])).all()
    gray = Image.fromarray(idx, "P")
    gray.putpalette([0, 0, 0, 128, 128, 128, 255, 255, 255])
    gray.save(tmp_path / "g.png")
    yg = read_image(tmp_path / "g.png")  # an all-gray palette reads as gray
    assert yg.shape == (1, 2, 3) and (codes(yg, 8) == chw(np.array([0, 128, 255])[idx])).all()
    assert image_info(tmp_path / "g.png").channels == 1 and image_info(tmp_path / "p.png").channels == 3


def test_bilevel_png(tmp_path):
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "b.png")
    torch.testing.assert_close(read_image(tmp_path / "b.png"), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), rtol=0, atol=1e-7)


def test_channels_conversion(tmp_path):
    x = torch.rand(3, 6, 6)
    p = write_image(tmp_path / "c.png", x, bits=16)
    rgb = read_image(p)
    g = read_image(p, channels=1)
    assert g.shape == (1, 6, 6)
    assert torch.allclose(g[0], 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], atol=1e-6)
    gp = write_image(tmp_path / "g.png", x[:1])
    g3 = read_image(gp, channels=3)
    # exact: gray -> RGB repeats the channel, and an RGB image is returned unchanged
    assert g3.shape == (3, 6, 6) and torch.equal(g3[0], g3[2]) and torch.equal(g3[1], read_image(gp)[0])
    assert torch.equal(read_image(p, channels=3), rgb)
    with pytest.raises(ValueError, match="channels: expected None, 1 or 3"):
        read_image(p, channels=4)


def test_mislabelled_jpeg_named_png_still_reads(tmp_path):
    Image.fromarray(np.full((4, 4), 100, np.uint8)).save(tmp_path / "x.png", format="JPEG")
    y = read_image(tmp_path / "x.png")
    assert y.shape == (1, 4, 4) and abs(y.mean().item() - 100 / 255) < 0.01
    assert image_info(tmp_path / "x.png").format == "jpeg"


# ---------------------------------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("name,hw", [("CT_small.dcm", (128, 128)), ("MR_small.dcm", (64, 64))])
def test_pydicom_test_files(name, hw):
    x = read_image(get_testdata_file(name))
    assert x.shape == (1, *hw) and x.dtype == torch.float32
    assert x.min().item() >= 0.0 and x.max().item() <= 1.0 and x.std() > 0.1


def test_ct_small_percentile_window_by_value():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds  # so 'auto' falls back to the percentile window
    v = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lo, hi = np.percentile(v, [0.5, 99.5])
    want = np.clip((v - lo) / (hi - lo), 0, 1)
    assert np.allclose(read_image(path)[0].numpy(), want, atol=1e-6)
    mm = read_image(path, window="minmax")[0].numpy()
    assert np.allclose(mm, (v - v.min()) / (v.max() - v.min()), atol=1e-6)


def test_mr_small_file_window_by_value():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)  # 600, 1600
    want = np.clip((ds.pixel_array - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    x = read_image(path)
    assert np.allclose(x[0].numpy(), want, atol=1e-6)
    torch.testing.assert_close(read_image(path, window=(c, w)), x, rtol=0, atol=1e-6)


S = np.array([[0, 50, 75], [100, 125, 200]], np.uint16)
RESCALED_WINDOW = [[0.0, 0.0, 0.25], [0.5, 0.75, 1.0]]  # v = 2s - 100, window (100.5, 201): (v - 100)/200 + 1/2


def test_tiny_dicom_rescale_and_window(tmp_path):
    p = hio._tiny_dicom(tmp_path / "t.dcm", S, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=100.5,
                        WindowWidth=201)
    assert torch.allclose(read_image(p), torch.tensor([RESCALED_WINDOW]), atol=1e-6)
    assert torch.allclose(read_image(p, window=(0.5, 201)), torch.tensor([[[0, .5, .75], [1., 1., 1.]]]), atol=1e-6)


def test_tiny_dicom_monochrome1_inverts(tmp_path):
    kw = dict(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=100.5, WindowWidth=201)
    p = hio._tiny_dicom(tmp_path / "m1.dcm", S, PhotometricInterpretation="MONOCHROME1", **kw)
    assert torch.allclose(read_image(p), 1 - torch.tensor([RESCALED_WINDOW]), atol=1e-6)
    nowin = hio._tiny_dicom(tmp_path / "m1p.dcm", S, PhotometricInterpretation="MONOCHROME1")
    assert torch.allclose(read_image(nowin, window="minmax"), 1 - torch.from_numpy(S[None] / 200.0).float())


def test_tiny_dicom_multivalued_window_uses_first(tmp_path):
    p = hio._tiny_dicom(tmp_path / "mv.dcm", S, WindowCenter=[100.5, 40], WindowWidth=[201, 400])
    assert torch.allclose(read_image(p), torch.tensor([[[0, .25, .375], [.5, .625, 1.]]]), atol=1e-6)


def test_tiny_dicom_percentile_without_window(tmp_path):
    s = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    p = hio._tiny_dicom(tmp_path / "pc.dcm", s, RescaleIntercept=-500)
    x = read_image(p)[0].numpy()
    lo, hi = np.percentile(s - 500.0, [0.5, 99.5])  # 4.995 - 500, 994.005 - 500
    assert np.allclose(x, np.clip((s - 500.0 - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert x[0, 0] == 0 and x[-1, -1] == 1 and (x == 0).sum() == 5 and (x == 1).sum() == 5   # exact: clipped to the bounds


def test_tiny_dicom_voi_functions(tmp_path):
    s = np.array([[0, 100, 200]], np.uint16)
    p = hio._tiny_dicom(tmp_path / "le.dcm", s, WindowCenter=100, WindowWidth=200, VOILUTFunction="LINEAR_EXACT")
    assert torch.allclose(read_image(p), torch.tensor([[[0.0, 0.5, 1.0]]]))
    p = hio._tiny_dicom(tmp_path / "sg.dcm", s, WindowCenter=100, WindowWidth=200, VOILUTFunction="SIGMOID")
    assert torch.allclose(read_image(p), torch.tensor([[[1 / (1 + np.e**2), 0.5, 1 / (1 + np.e**-2)]]]))


def test_dicom_by_preamble_without_extension(tmp_path):
    p = hio._tiny_dicom(tmp_path / "1.2.840.113619.2.55.3", S, WindowCenter=100.5, WindowWidth=201)
    assert torch.allclose(read_image(p), torch.tensor([[[0, .25, .375], [.5, .625, 1.]]]), atol=1e-6)
    assert image_info(p) == ImageInfo(p, "dicom", 16, 1, 2, 3)
    assert list_images(tmp_path) == []  # not listed: no .dcm extension


def test_dicom_colour_and_palette():
    rgb = read_image(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert rgb.shape == (3, 100, 100)
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # top band is red
    pal = read_image(get_testdata_file("examples_palette.dcm"))
    assert pal.shape == (3, 350, 800) and 0 <= pal.min() and pal.max() <= 1 and pal.std() > 0.05
    assert image_info(get_testdata_file("examples_palette.dcm")).channels == 3


def test_dicom_without_pydicom(tmp_path, monkeypatch):
    p = hio._tiny_dicom(tmp_path / "scan.dcm", S)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    for fn in (read_image, read_dicom, image_info):
        with pytest.raises(ImageReadError) as e:
            fn(p)
        assert isinstance(e.value, ImportError) and isinstance(e.value, OptionalDependencyError)
        assert "scan.dcm" in str(e.value) and 'pip install "hqg[dicom]"' in str(e.value)


# ----------------------------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    assert_read_error(tmp_path / "nothere.png", "file not found")
    with pytest.raises(ImageReadError, match="nothere.png"):
        image_info(tmp_path / "nothere.png")


def test_zero_byte_file(tmp_path):
    for name in ["z.png", "z.jpg", "z.tif", "z.dcm"]:
        (tmp_path / name).write_bytes(b"")
        assert_read_error(tmp_path / name, "file is empty (0 bytes)")


def test_unsupported_extension(tmp_path):
    (tmp_path / "scan.gif").write_bytes(b"GIF89a....")
    assert_read_error(tmp_path / "scan.gif", "unsupported file extension '.gif'")
    (tmp_path / "noext").write_bytes(b"\0" * 200)
    assert_read_error(tmp_path / "noext", "unsupported file extension ''")


def test_folder_instead_of_file(tmp_path):
    (tmp_path / "dir.png").mkdir()
    assert_read_error(tmp_path / "dir.png", "not a regular file")


def test_truncated_png16(tmp_path):
    data = hio._png_encode16(RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    (tmp_path / "t16.png").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t16.png", "truncated PNG")
    # header intact: image_info reads it without touching the pixels, read_image refuses the data
    assert image_info(tmp_path / "t16.png") == ImageInfo(tmp_path / "t16.png", "png", 16, 3, 32, 32)


def test_truncated_png8(tmp_path):
    write_image(tmp_path / "full.png", torch.rand(3, 32, 32))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "t8.png").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t8.png")


def test_truncated_jpeg(tmp_path):
    write_image(tmp_path / "full.jpg", torch.rand(3, 64, 64))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t.jpg", "truncated")


def test_truncated_tiff(tmp_path):
    write_image(tmp_path / "full.tif", torch.rand(3, 64, 64), bits=16)
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t.tif")


def test_truncated_bmp(tmp_path):
    write_image(tmp_path / "full.bmp", torch.rand(3, 32, 32))
    data = (tmp_path / "full.bmp").read_bytes()
    (tmp_path / "t.bmp").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t.bmp")


def test_truncated_dicom(tmp_path):
    p = tmp_path / "MR_cut.dcm"
    p.write_bytes(open(get_testdata_file("MR_truncated.dcm"), "rb").read())
    assert_read_error(p, "DICOM pixel data")


def test_corrupt_png_crc(tmp_path):
    for name, bits in [("c16.png", 16), ("c8.png", 8)]:
        write_image(tmp_path / name, torch.rand(3, 16, 16), bits=bits)
        data = bytearray((tmp_path / name).read_bytes())
        data[60] ^= 0xFF  # a byte inside the IDAT data
        (tmp_path / name).write_bytes(bytes(data))
        e = assert_read_error(tmp_path / name)
        assert any(w in str(e) for w in ("CRC", "checksum", "broken", "corrupt"))


def test_garbage_with_image_extension(tmp_path):
    (tmp_path / "g.png").write_bytes(b"this is not an image" * 10)
    assert_read_error(tmp_path / "g.png", "corrupt, truncated or unreadable")
    (tmp_path / "g.dcm").write_bytes(b"this is not a DICOM file" * 10)
    assert_read_error(tmp_path / "g.dcm")


def test_dicom_without_image(tmp_path):
    p = tmp_path / "plan.dcm"
    p.write_bytes(open(get_testdata_file("rtplan.dcm"), "rb").read())
    assert_read_error(p, "no pixel data")


def test_packed_12bit_tiff_needs_imagecodecs(tmp_path):
    "A bit-packed 12-bit TIFF (rare; most 12-bit data sit in 16-bit samples) needs imagecodecs in tifffile."
    h, w = 2, 3
    rows = b"".join(int("".join(f"{x:012b}" for x in r) + "0000", 2).to_bytes(5, "big") for r in [[0, 4095, 7]] * h)
    tags = [(256, 3, w), (257, 3, h), (258, 3, 12), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1),
            (278, 3, h), (279, 4, len(rows))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, 4, 1, v) if ty == 4 else
                                                  struct.pack("<HHIHH", t, 3, 1, v, 0) for t, ty, v in tags)
    (tmp_path / "p12.tif").write_bytes(b"II*\0" + struct.pack("<I", 8 + len(rows)) + rows + ifd + b"\0" * 4)
    assert image_info(tmp_path / "p12.tif") == ImageInfo(tmp_path / "p12.tif", "tiff", 16, 1, h, w)
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        assert_read_error(tmp_path / "p12.tif", "imagecodecs")
    else:
        assert (codes(read_image(tmp_path / "p12.tif"), 12) == [[[0, 4095, 7]] * h]).all()


# ------------------------------------------------------------------------------------------ multi-frame volumes
def test_multipage_tiff_is_volume(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 8), np.uint16))
    assert_read_error(tmp_path / "stack.tif", "multi-frame volume (5 frames); expected a 2-D image")
    with pytest.raises(ImageReadError, match="5 frames"):
        image_info(tmp_path / "stack.tif")


def test_multichannel_tiff_is_volume(tmp_path):
    tifffile.imwrite(tmp_path / "ch5.tif", np.zeros((8, 8, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    assert_read_error(tmp_path / "ch5.tif", "volume", "5 samples per pixel")


def test_multiframe_dicom_is_volume(tmp_path):
    p = tmp_path / "dose.dcm"
    p.write_bytes(open(get_testdata_file("rtdose.dcm"), "rb").read())
    assert_read_error(p, "multi-frame volume (15 frames)")
    with pytest.raises(ImageReadError, match="15 frames"):
        image_info(p)


def test_animated_png_is_volume(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), i * 60, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    assert_read_error(tmp_path / "anim.png", "multi-frame volume (3 frames)")
    data = hio._png_encode16(np.zeros((4, 4), np.uint16))  # a 16-bit APNG: acTL says 2 frames
    actl = _chunk(b"acTL", struct.pack(">II", 2, 0))
    (tmp_path / "anim16.png").write_bytes(data[:33] + actl + data[33:])
    assert_read_error(tmp_path / "anim16.png", "multi-frame volume (2 frames)")


# ------------------------------------------------------------------------------------------------ write_image
def test_write_bits16_only_png_tiff(tmp_path):
    x = torch.rand(3, 4, 4)
    for name in ["a.jpg", "a.JPEG", "a.bmp"]:
        with pytest.raises(ValueError, match="bits="):
            write_image(tmp_path / name, x, bits=16)
    with pytest.raises(ValueError, match="bits"):
        write_image(tmp_path / "a.png", x, bits=32)
    with pytest.raises(ValueError, match="cannot write '.dcm'"):
        write_image(tmp_path / "a.dcm", x)
    assert list(tmp_path.iterdir()) == []


def test_write_creates_folder_returns_path_and_accepts_batch(tmp_path):
    p = write_image(str(tmp_path / "a" / "b" / "x.png"), torch.rand(1, 1, 5, 6))
    assert p == tmp_path / "a" / "b" / "x.png" and p.is_file()
    assert read_image(p).shape == (1, 5, 6)
    with pytest.raises(ValueError, match=r"\(2, 1, 5, 6\)"):
        write_image(tmp_path / "y.png", torch.rand(2, 1, 5, 6))
    with pytest.raises(ValueError, match="channels"):
        write_image(tmp_path / "y.png", torch.rand(2, 5, 6))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "y.png", torch.full((1, 2, 2), float("nan")))


def test_write_clips_and_rounds(tmp_path):
    x = torch.tensor([[[-0.5, 0.0, 0.3 / 255, 0.6 / 255, 1.0, 7.0]]])
    y = read_image(write_image(tmp_path / "c.png", x))
    assert (codes(y, 8) == [[[0, 0, 0, 1, 255, 255]]]).all()


def test_write_is_atomic(tmp_path, monkeypatch):
    target = write_image(tmp_path / "keep.png", torch.zeros(1, 4, 4))
    before = target.read_bytes()

    def half_then_crash(self, fp, *a, **k):
        fp.write(b"\x89PNG\r\n\x1a\n half an image")
        raise RuntimeError("disk full")
    monkeypatch.setattr(Image.Image, "save", half_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(target, torch.ones(1, 4, 4))
    assert target.read_bytes() == before  # the old image is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ list_images
def test_list_images(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.TIF", "f.tiff", "g.dcm", "notes.txt", ".hidden.png",
                 "sub/h.png", ".cache/i.png", "sub/.j.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.TIF", "f.tiff", "g.dcm"]
    rec = list_images(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in rec][-1] == "sub/h.png" and len(rec) == 8
    assert all(isinstance(p, type(tmp_path)) for p in rec)


def test_list_images_order_is_by_path_components(tmp_path):
    for name in ["img10.png", "img2.png", "Img3.png", "a/z.png", "a.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)]
    assert got == ["Img3.png", "a/z.png", "a.png", "img10.png", "img2.png"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        list_images(tmp_path / "no_such_dir")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        list_images(tmp_path / "f.png")


# ------------------------------------------------------------------------------------------------- image_info
@pytest.mark.parametrize("ext", ["png", "tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("c", [1, 3])
def test_image_info_png_tiff(tmp_path, ext, bits, c):
    p = write_image(tmp_path / f"x.{ext}", torch.rand(c, 7, 9), bits=bits)
    assert image_info(p) == ImageInfo(p, "png" if ext == "png" else "tiff", bits, c, 7, 9)


def test_image_info_matches_read_image(tmp_path):
    paths = [write_image(tmp_path / "a.bmp", torch.rand(3, 5, 4)), write_image(tmp_path / "g.bmp", torch.rand(1, 5, 4)),
             write_image(tmp_path / "f.tif", torch.rand(1, 3, 2), bits=32),
             get_testdata_file("CT_small.dcm"), get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")]
    Image.fromarray(RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    paths.append(tmp_path / "rgba.png")
    for p in paths:
        info = image_info(p)
        assert (info.channels, info.height, info.width) == tuple(read_image(p).shape), p
    assert [image_info(p).bits for p in paths] == [8, 8, 32, 16, 8, 8]
    assert [image_info(p).format for p in paths] == ["bmp", "bmp", "tiff", "dicom", "dicom", "png"]


# --------------------------------------------------------------------------------------------------- errors
def test_image_read_error_is_value_error_and_pickles():
    e = ImageReadError("/data/x.png", "file is empty (0 bytes)")
    assert isinstance(e, ValueError) and str(e) == "cannot read image '/data/x.png': file is empty (0 bytes)"
    e2 = pickle.loads(pickle.dumps(e))
    assert (type(e2), e2.path, e2.reason, str(e2)) == (ImageReadError, e.path, e.reason, str(e))
    assert str(ImageReadError("message only")) == "message only"  # how torch's DataLoader re-raises


def test_bad_window_argument(tmp_path):
    p = write_image(tmp_path / "w.png", torch.rand(1, 3, 3))
    for bad in ["hounsfield", (40, -1), (40,), (np.nan, 10)]:
        with pytest.raises(ValueError, match="window: expected"):
            read_image(p, window=bad)
