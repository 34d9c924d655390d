"""atrous.torch.convert on models of torchvision's exact DeepLabV3 structure (built from the
benchmarks' copies of torchvision's modules: torchvision does not import beside the CPU
torch): the report, outputs within the float32 tolerance, on a copy or in place, a second
conversion that changes nothing, the training-mode error, and non-dilated convs decided
from stored benchmark rows."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from test_aspp_structures import KERAS, PlainASPP, seeded  # noqa: E402
from test_torch_reference import ReferenceASPP  # noqa: E402
from torch import nn  # noqa: E402
from torchvision_deeplab import FCNHead, small_deeplabv3  # noqa: E402

import atrous.torch as at  # noqa: E402
from atrous.core.tolerance import compare  # noqa: E402

DILATED = ["backbone.layer3.1.conv2", "backbone.layer4.0.conv2", "backbone.layer4.1.conv2"]


def image(n: int = 2, size: int = 57, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(x)


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    result = compare(got, want.double().numpy(), "float32")
    assert result.ok, str(result)


@pytest.fixture(scope="module")
def model():
    return small_deeplabv3()


def test_the_report_and_matching_outputs(model):
    x = image()
    want = run(model, x)
    conversion = at.convert(model, convs="dilated")
    new = conversion.model
    assert new is not model and type(model.classifier).__name__ == "DeepLabHead" \
        and not isinstance(model.classifier, at.DeepLabHead)  # the original is untouched
    swapped = {e.path: e for e in conversion.swapped}
    assert set(swapped) == {"classifier", *DILATED}
    assert swapped["classifier"].into == "atrous.torch.DeepLabHead"
    assert "rates (12, 24, 36)" in swapped["classifier"].reason
    assert swapped["backbone.layer4.1.conv2"].reason == "dilation (4, 4)"
    assert isinstance(new.classifier, at.DeepLabHead)
    assert all(isinstance(new.get_submodule(p), at.Conv2d) for p in DILATED)
    kept = {e.path: e.reason for e in conversion.kept}
    assert kept["aux_classifier.0"] == "not dilated (convs='dilated')"
    assert kept["backbone.conv1"] == "not dilated (convs='dilated')"
    assert conversion.counts() == {"DeepLabHead": 1, "Conv2d": 3}
    assert "swapped classifier: DeepLabHead -> atrous.torch.DeepLabHead" in str(conversion)
    got = run(new, x)
    for key in ("out", "aux"):
        assert got[key].shape == want[key].shape
        assert_close(got[key], want[key])
    # channels-last input: the NHWC kernels, same result
    got_cl = run(new, x.to(memory_format=torch.channels_last))
    assert_close(got_cl["out"], want["out"])


def test_in_place_and_a_second_conversion_changes_nothing():
    model = small_deeplabv3(seed=1)
    x = image(1, 49, seed=1)
    want = run(model, x)
    conversion = at.convert(model, inplace=True, convs="dilated")
    assert conversion.model is model and isinstance(model.classifier, at.DeepLabHead)
    once = run(model, x)
    assert_close(once["out"], want["out"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(name, id(m)) for name, m in model.named_modules()]
    again = at.convert(model, inplace=True)
    assert again.swapped == [] and again.model is model
    assert [(name, id(m)) for name, m in model.named_modules()] == modules
    assert {e.path for e in again.kept if e.reason == "already an atrous module"} == {
        "classifier", *DILATED}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert_close(run(model, x)["out"], want["out"])


def test_training_mode_is_an_error():
    model = small_deeplabv3(seed=2)
    model.train()
    with pytest.raises(RuntimeError, match=r"eval mode.*<model> is in training mode.*eval\(\)"):
        at.convert(model)
    model.eval()
    model.aux_classifier.train()
    with pytest.raises(RuntimeError, match="aux_classifier is in training mode"):
        at.convert(model)
    with pytest.raises(ValueError, match="convs must be one of"):
        at.convert(model.eval(), convs="all")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        at.convert({"a": 1})


def test_standalone_aspps_of_either_structure():
    """An ASPP outside a DeepLabHead (torchvision's or the Keras tutorial's) is swapped;
    one atrous cannot run exactly is kept, saying why, and its dilated convs swapped."""
    tv = seeded(ReferenceASPP(6, (2, 3), 4)).float()
    keras = seeded(PlainASPP(KERAS, 4, 6)).float()
    odd = seeded(PlainASPP(KERAS, 6, 4)).float()
    odd.convs[1][0].padding = (0, 0)  # not "same": atrous cannot run it as an ASPP
    odd.convs[1][0].dilation = (2, 2)
    model = nn.Sequential(tv, keras, nn.Conv2d(6, 6, 1), odd).eval()
    x = torch.randn(2, 6, 9, 9)
    want = run(model[:3], x)
    conversion = at.convert(model, convs="dilated")
    swapped = {e.path: e for e in conversion.swapped}
    assert swapped["0"].into == swapped["1"].into == "atrous.torch.ASPP"
    assert "torchvision structure, rates (2, 3)" in swapped["0"].reason
    assert "AsppStructure(branches=((3, 1), (3, 2), (3, 5), (3, 13))" in swapped["1"].reason
    assert "3.convs.1.0" in swapped  # the odd ASPP's dilated conv, on its own
    kept = {e.path: e.reason for e in conversion.kept}
    assert "not swapped as a whole" in kept["3"] and "padding (0, 0)" in kept["3"]
    assert_close(run(conversion.model[:3], x), want)
    # the model itself an ASPP: the conversion's model is the new module
    top = at.convert(tv)
    assert isinstance(top.model, at.ASPP) and [e.path for e in top.swapped] == [""]
    assert "swapped <model>: ASPP -> atrous.torch.ASPP" in str(top)


def test_unsupported_convs_are_kept_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2, padding_mode="reflect", padding=2),
                          nn.Conv2d(4, 4, 3, dilation=2).half(), nn.Conv2d(4, 4, 3, dilation=3))
    conversion = at.convert(model.eval())
    kept = {e.path: e.reason for e in conversion.kept}
    assert kept["0"] == "padding_mode='reflect' (atrous pads with zeros)"
    assert kept["1"].startswith("float16 weights on cpu")
    assert [e.path for e in conversion.swapped] == ["2"]


def test_converted_conv_falls_back_for_gradients():
    conv = at.Conv2d.from_module(nn.Conv2d(3, 5, 3, padding=2, dilation=2).eval())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        fast = conv(x)
    conv.weight.requires_grad_(True)
    slow = conv(x)
    slow.sum().backward()
    assert conv.weight.grad is not None
    assert_close(fast, slow.detach())


# ---- non-dilated convs: the stored benchmark rows decide --------------------------------

def bench_rows(db, conv: nn.Conv2d, atrous_ms: float, torch_ms: float) -> None:
    """Rows as `atrous bench` stores them beside ``db``: the plain call and PyTorch's on
    one problem of ``conv`` on this machine."""
    from atrous.autotune.hardware import fingerprint
    from atrous.kernels.conv.spec import make_problem
    from atrous.report.rows import BenchRow
    from atrous.report.store import append_rows, bench_path

    p = make_problem((1, conv.in_channels, 16, 16), tuple(conv.weight.shape), None, "float32",
                     stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    base = BenchRow(
        run="r1", timestamp="2026-01-01T00:00:00", fingerprint=fingerprint("numba")["id"],
        device="cpu", name="c", op=p.op, backend="numba", implementation="", shape="",
        out_shape="", layout=p.layout, dtype=p.dtype, problem_key=p.key, config="",
        config_source="", median_ms=None, p20_ms=None, p80_ms=None, gbps=None, gflops=None,
        bound="compute", ceiling_fraction=None, flops=p.flops, work_flops=p.flops,
        bytes=p.bytes, policy="test", note="", atrous_version="0", numba_version="0",
        triton_version="", torch_version="0", onnxruntime_version="")
    append_rows(bench_path(db), [
        dataclasses.replace(base, implementation="atrous-numba-plain", median_ms=atrous_ms),
        dataclasses.replace(base, implementation="torch", backend="torch", median_ms=torch_ms)])


@pytest.mark.parametrize("atrous_ms,swapped", [(1.0, True), (3.0, False)])
def test_plain_convs_follow_the_stored_benchmarks(tmp_path, atrous_ms, swapped):
    head = seeded(FCNHead(8, 3)).float()
    db = tmp_path / "tuning.json"
    bench_rows(db, head[0], atrous_ms, 2.0)
    conversion = at.convert(head, tuning=db)
    if swapped:
        entry = conversion.swapped[0]
        assert entry.path == "0" and "stored benchmarks: 1 stored problem(s)" in entry.reason
        assert "speedup 2.00x" in entry.reason
    else:
        assert conversion.swapped == []
    kept = {e.path: e.reason for e in conversion.kept}
    assert (kept.get("0") or "").endswith("" if swapped else "speedup 0.67x at worst")
    assert kept["4"] == "not dilated; no stored benchmark of this convolution on this machine"
    x = torch.randn(1, 8, 7, 7)
    assert_close(run(conversion.model, x), run(head, x))


def test_no_stored_rows(tmp_path):
    head = seeded(FCNHead(8, 3)).float()
    conversion = at.convert(head, tuning=tmp_path / "tuning.json")
    assert conversion.swapped == []
    assert "no stored benchmark rows" in conversion.kept[0].reason
