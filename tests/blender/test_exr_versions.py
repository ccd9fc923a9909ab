"""Pass EXRs as Blender 4.x writes them (one part, every channel named layer.pass.channel) read the
same as Blender 5's multi-part files."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def _write(path, parts):
    import OpenImageIO as oiio

    specs = []
    for name, chans, _ in parts:
        spec = oiio.ImageSpec(4, 3, len(chans), "float")
        spec.channelnames = tuple(chans)
        if name:
            spec.attribute("name", name)
        specs.append(spec)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), specs), oiio.geterror()
    for k, (_, _, data) in enumerate(parts):
        if k:
            assert out.open(str(path), specs[k], "AppendSubimage")
        assert out.write_image(data)
    out.close()


def test_single_part_4x_and_multi_part_5x_exrs_give_the_same_passes(addon, tmp_path):
    render = importlib.import_module("coupled_edit.scene_io.render")
    rng = np.random.default_rng(0)
    depth = rng.random((3, 4, 1)).astype(np.float32) * 10
    normal = rng.random((3, 4, 3)).astype(np.float32)
    index = np.array([[0, 1, 2, 3]] * 3, np.float32)[..., None]
    rgba = rng.random((3, 4, 4)).astype(np.float32)
    # Blender 4.x: one part; EXR keeps channels sorted by name (A, B, G, R), and the index pass is "IndexOB"
    single = [("", ["ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G", "ViewLayer.Combined.R",
                    "ViewLayer.Depth.Z", "ViewLayer.IndexOB.X", "ViewLayer.Normal.X", "ViewLayer.Normal.Y", "ViewLayer.Normal.Z"],
               np.concatenate([rgba[..., ::-1], depth, index, normal], -1))]  # fmt: skip
    _write(tmp_path / "v4.exr", single)
    multi = [("ViewLayer.Combined", ["R", "G", "B", "A"], rgba), ("ViewLayer.Depth", ["Z"], depth),
             ("ViewLayer.Normal", ["X", "Y", "Z"], normal), ("ViewLayer.Object Index", ["X"], index)]  # fmt: skip
    _write(tmp_path / "v5.exr", multi)
    for f in ("v4.exr", "v5.exr"):
        layers = render.read_multilayer_exr(tmp_path / f)
        np.testing.assert_array_equal(layers["Depth"], depth, err_msg=f)
        np.testing.assert_array_equal(layers["Normal"], normal, err_msg=f)
        np.testing.assert_array_equal(layers["Object Index"], index, err_msg=f)
        np.testing.assert_array_equal(layers["Combined"], rgba, err_msg=f)
