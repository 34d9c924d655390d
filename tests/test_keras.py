"""atrous.keras: each layer against the stock Keras layer, the ASPP converter on both
structures, .keras round trips, the keras.ops fallback, training and gradients.

Keras runs its torch backend here (set before Keras is first imported), with its config
folder in a temporary directory so the user's ~/.keras is never touched.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="atrous-keras-home-"))
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":  # Keras was imported earlier with another backend
    pytest.skip(f"Keras runs the {keras.backend.backend()} backend in this process",
                allow_module_level=True)

from support import assert_close, seeded  # noqa: E402

import atrous  # noqa: E402
import atrous.keras as ak  # noqa: E402
from atrous.keras import runtime  # noqa: E402

#: Keras 3.15's torch backend converts tensors with np.array(x, copy=False) (its warning).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
L = keras.layers
FORMATS = ["channels_last", "channels_first"]


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return seeded(shape, seed).astype(np.float32)


def shape_of(fmt: str, n: int, h: int, w: int, c: int) -> tuple[int, ...]:
    return (n, h, w, c) if fmt == "channels_last" else (n, c, h, w)


def stock(layer: object, x: np.ndarray, **kwargs: object) -> np.ndarray:
    """A stock layer's inference output, float64 (the layer runs in float32)."""
    with ak.fallback(), torch.no_grad():
        return np.asarray(keras.ops.convert_to_numpy(layer(x, **kwargs)), dtype=np.float64)


def infer(layer: object, x: np.ndarray, **kwargs: object) -> object:
    with torch.no_grad():
        return layer(x, **kwargs)


@pytest.fixture
def calls(monkeypatch):
    """Counts of the atrous kernels the layers called (proving the kernel path)."""
    counts: dict[str, int] = {}
    for name in ("global_avg_pool", "dilated_conv2d", "upsample_bilinear", "aspp"):
        original = getattr(atrous, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            if kwargs.get("backend") != "numpy":  # the float64 reference is no kernel
                counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(atrous, name, spy)
    return counts


# ---- the single layers ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling(fmt, keepdims, calls):
    x = images(shape_of(fmt, 2, 7, 5, 6))
    ours = ak.GlobalAveragePooling2D(data_format=fmt, keepdims=keepdims)
    ref = stock(L.GlobalAveragePooling2D(data_format=fmt, keepdims=keepdims), x)
    out = infer(ours, x)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == ref.shape
    assert_close(out, ref, "float32")
    assert calls == {"global_avg_pool": 1}


CONVS = [
    dict(filters=5, kernel_size=3, dilation_rate=2, padding="same", activation="relu"),
    dict(filters=4, kernel_size=1, padding="valid", use_bias=False),
    dict(filters=6, kernel_size=(3, 2), strides=2, padding="same"),  # odd padding: padded
    dict(filters=6, kernel_size=3, strides=(2, 1), padding="valid", groups=2),
    dict(filters=3, kernel_size=3, dilation_rate=(1, 3), padding="same",
         activation="sigmoid"),  # not fused: applied after the kernel
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", CONVS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_conv_matches_keras_conv2d(fmt, config, calls):
    x = images(shape_of(fmt, 2, 9, 8, 4), seed=1)
    ref_layer = L.Conv2D(data_format=fmt, bias_initializer="random_normal", **config)
    ref = stock(ref_layer, x)
    ours = ak.AtrousConv2D(data_format=fmt, **config)
    ours.build(x.shape)
    ours.set_weights(ref_layer.get_weights())  # Keras's HWIO kernel and bias, as they are
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in ref_layer.get_weights()]
    out = infer(ours, x)
    assert tuple(out.shape) == ref.shape
    assert_close(out, ref, "float32")
    assert calls == {"dilated_conv2d": 1}


def test_conv_weights_are_refreshed_after_set_weights():
    x = images((1, 6, 6, 3))
    conv = ak.AtrousConv2D(2, 3, padding="same")
    first = np.asarray(infer(conv, x))
    conv.set_weights([w * 2 for w in conv.get_weights()])
    assert_close(infer(conv, x), 2 * first.astype(np.float64), "float32")


def tf1_resize_bilinear(x: np.ndarray, size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """TF1's resize_bilinear (half_pixel_centers=False), NHWC, written out directly."""
    def coords(i_size: int, o_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if align_corners:
            scale = (i_size - 1) / (o_size - 1) if o_size > 1 else 0.0
        else:
            scale = i_size / o_size
        src = np.arange(o_size) * scale
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, i_size - 1), src - lo

    y0, y1, fy = coords(x.shape[1], size[0])
    x0, x1, fx = coords(x.shape[2], size[1])
    x = x.astype(np.float64)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] \
        + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] \
        + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", ["upsampling2d", "resize", "asymmetric", "align_corners"])
@pytest.mark.parametrize("path", ["kernels", "fallback"])
def test_bilinear_resize_conventions(fmt, case, path, calls):
    x = images(shape_of(fmt, 2, 5, 7, 3), seed=2)
    nhwc = x if fmt == "channels_last" else x.transpose(0, 2, 3, 1)
    if case == "upsampling2d":
        ours = ak.BilinearResize(scale=(2, 3), data_format=fmt)
        ref = stock(L.UpSampling2D((2, 3), data_format=fmt, interpolation="bilinear"), x)
    elif case == "resize":  # keras.ops.image.resize (= tf.image.resize), shrinking one axis
        ours = ak.BilinearResize((11, 4), data_format=fmt)
        with ak.fallback():
            ref = keras.ops.image.resize(x, (11, 4), data_format=fmt).numpy()
    else:
        ours = ak.BilinearResize((11, 4), coordinate_mode=case, data_format=fmt)
        ref = tf1_resize_bilinear(nhwc, (11, 4), align_corners=case == "align_corners")
        if fmt == "channels_first":
            ref = ref.transpose(0, 3, 1, 2)
    if path == "fallback":
        with ak.fallback():
            out = infer(ours, x)
        assert calls == {}
    else:
        out = infer(ours, x)
        assert calls == {"upsample_bilinear": 1}
    assert_close(out, np.asarray(ref, dtype=np.float64), "float32")


def test_bilinear_resize_argument_errors():
    with pytest.raises(ValueError, match="exactly one of size and scale"):
        ak.BilinearResize((4, 4), scale=2)
    with pytest.raises(ValueError, match="scale must be a positive int"):
        ak.BilinearResize(scale=1.5)
    with pytest.raises(ValueError, match="coordinate_mode must be one of"):
        ak.BilinearResize(4, coordinate_mode="nearest")
    with pytest.raises(ValueError, match="contradicts"):
        ak.BilinearResize(4, coordinate_mode="asymmetric", align_corners=True)
    assert ak.BilinearResize(4, align_corners=True).coordinate_mode == "align_corners"


# ---- stock-layer ASPP blocks and the converter -----------------------------------------

def relu_variant(x, i: int):
    """The ways Keras code writes a ReLU, in turn."""
    return [L.ReLU(), L.Activation("relu"), keras.ops.relu][i % 3](x)


def randomize(model: keras.Model, seed: int) -> None:
    """Random biases and non-trivial BatchNorm statistics for every layer that has them."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, L.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.3, layer.filters))
        elif isinstance(layer, L.BatchNormalization):
            randomize_bn(layer, int(rng.integers(1000)))


def randomize_bn(bn, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    c = bn.moving_mean.shape[0]
    bn.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.5, c),
                    rng.uniform(0.3, 2.0, c)])


def torchvision_block(shape: tuple[int, ...], filters: int, rates=(2, 3, 5),
                      fmt: str = "channels_last", pool_first: bool = False) -> keras.Model:
    """torchvision's structure in Keras: 1x1 + 3x3 per rate, no bias, BN + ReLU after each
    conv (ReLU written three ways), the pooling branch (GAP keepdims or AveragePooling2D,
    resized with keras.ops.image.resize), projection + BN + ReLU + Dropout."""
    inp = keras.Input(batch_shape=shape)
    h, w = (shape[1], shape[2]) if fmt == "channels_last" else (shape[2], shape[3])
    axis = -1 if fmt == "channels_last" else 1

    def cbr(x, k, rate, i):
        y = L.Conv2D(filters, k, dilation_rate=rate, padding="same", use_bias=False,
                     data_format=fmt)(x)
        bn = L.BatchNormalization(axis=axis, epsilon=1e-5)
        y = bn(y)
        randomize_bn(bn, seed=10 + i)
        return relu_variant(y, i)

    outs = [cbr(inp, 1, 1, 0)] + [cbr(inp, 3, r, i + 1) for i, r in enumerate(rates)]
    if pool_first:
        p = L.AveragePooling2D((h, w), data_format=fmt)(inp)
    else:
        p = L.GlobalAveragePooling2D(data_format=fmt, keepdims=True)(inp)
    p = keras.ops.image.resize(cbr(p, 1, 1, 7), (h, w), data_format=fmt)
    outs = [p, *outs] if pool_first else [*outs, p]
    y = cbr(L.Concatenate(axis=axis)(outs), 1, 1, 8)
    return keras.Model(inp, L.Dropout(0.5)(y))


@pytest.mark.parametrize("structure,fmt", [("tutorial", "channels_last"),
                                           ("tutorial", "channels_first"),
                                           ("torchvision_plain", "channels_last"),
                                           ("torchvision", "channels_last"),
                                           ("torchvision", "channels_first"),
                                           ("pool_first", "channels_last")])
def test_convert_aspp_matches_the_stock_block(structure, fmt, calls):
    keras.utils.set_random_seed(3)
    shape = shape_of(fmt, 2, 9, 10, 8)
    if structure == "tutorial":
        block = ak.keras_tutorial_block(shape, 6, data_format=fmt)
    elif structure == "torchvision_plain":
        block = ak.torchvision_block(shape, 6, rates=(2, 3, 5), data_format=fmt)
    else:
        block = torchvision_block(shape, 6, fmt=fmt, pool_first=structure == "pool_first")
    randomize(block, seed=5)
    x = images(shape, seed=5)
    ref = stock(block, x)
    aspp = ak.convert_aspp(block)
    assert aspp.batch_norm == (structure != "tutorial")
    assert aspp.branches == (((3, 1), (3, 6), (3, 12), (3, 18)) if structure == "tutorial"
                             else ((1, 1), (3, 2), (3, 3), (3, 5)))
    assert aspp.dropout == (0.0 if structure == "tutorial" else 0.5)
    out = infer(aspp, x)
    assert_close(out, ref, "float32")
    assert calls == {"aspp": 1}
    with ak.fallback():  # the layer's own keras.ops form agrees too
        assert_close(infer(aspp, x), ref, "float32")


def keras_io_dspp(shape: tuple[int, ...], filters: int) -> keras.Model:
    """keras.io's DeepLabV3+ DilatedSpatialPyramidPooling: conv (no bias) -> BN ->
    keras.ops.nn.relu everywhere, the pooling branch AveragePooling2D over the map -> 1x1
    conv WITH a bias -> BN -> ReLU -> UpSampling2D, concatenated first."""
    def convolution_block(x, kernel_size=3, dilation_rate=1, use_bias=False):
        x = L.Conv2D(filters, kernel_size, dilation_rate=dilation_rate, padding="same",
                     use_bias=use_bias, kernel_initializer=keras.initializers.HeNormal())(x)
        return keras.ops.nn.relu(L.BatchNormalization()(x))

    inp = keras.Input(batch_shape=shape)
    dims = inp.shape
    x = L.AveragePooling2D(pool_size=(dims[-3], dims[-2]))(inp)
    x = convolution_block(x, kernel_size=1, use_bias=True)
    out_pool = L.UpSampling2D(size=(dims[-3] // x.shape[1], dims[-2] // x.shape[2]),
                              interpolation="bilinear")(x)
    outs = [convolution_block(inp, kernel_size=1, dilation_rate=1)]
    outs += [convolution_block(inp, kernel_size=3, dilation_rate=r) for r in (6, 12, 18)]
    x = L.Concatenate(axis=-1)([out_pool, *outs])
    return keras.Model(inp, convolution_block(x, kernel_size=1))


def test_convert_keras_io_deeplabv3plus_block(calls):
    keras.utils.set_random_seed(8)
    block = keras_io_dspp((2, 16, 16, 8), 6)
    randomize(block, seed=9)
    x = images((2, 16, 16, 8), seed=10)
    ref = stock(block, x)
    aspp = ak.convert_aspp(block)
    assert (aspp.use_bias, aspp.pool_use_bias, aspp.batch_norm, aspp.epsilon) == \
        (False, True, True, 1e-3)
    assert_close(infer(aspp, x), ref, "float32")
    assert calls == {"aspp": 1}


def test_convert_swaps_blocks_inside_a_model_and_is_idempotent():
    keras.utils.set_random_seed(4)
    inp = keras.Input(batch_shape=(1, 12, 12, 3), name="image")
    feat = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    other = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem2")(inp)
    sub = torchvision_block((1, 6, 6, 8), 4)
    randomize(sub, seed=6)
    y = L.Add()([sub(feat), sub(other)])  # one sub-model called twice: stays shared
    y = L.Conv2D(5, 1, name="classifier")(y)
    y = L.UpSampling2D(2, interpolation="bilinear")(y)
    model = keras.Model({"image": inp}, y)
    x = images((1, 12, 12, 3), seed=6)
    ref = stock(model, {"image": x})
    converted, report = ak.convert(model)
    assert len(report.swapped) == 1 and "atrous ASPP" in report.swapped[0]
    swapped_in = [layer for layer in converted._flatten_layers() if isinstance(layer, ak.ASPP)]
    assert len(swapped_in) == 1
    x = {"image": x}
    assert_close(infer(converted, x), ref, "float32")
    again, report2 = ak.convert(converted)
    assert report2.swapped == []
    assert_close(infer(again, x), ref, "float32")


def test_convert_aspp_errors():
    inp = keras.Input(batch_shape=(1, 6, 6, 4))
    plain = keras.Model(inp, L.Conv2D(4, 3, padding="same")(inp))
    with pytest.raises(ValueError, match="holds 0 ASPP blocks"):
        ak.convert_aspp(plain)
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L.Conv2D(4, 3, padding="same", activation="sigmoid")(inp)
    cat = L.Concatenate()([a, b])
    odd = keras.Model(inp, L.Conv2D(4, 1, activation="relu")(cat))
    with pytest.raises(ValueError, match="no ReLU after"):
        ak.convert_aspp(odd)
    with pytest.raises(TypeError, match="functional keras Model"):
        ak.convert_aspp(keras.Sequential([L.Dense(2)]))


# ---- the ASPP layer ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("make", [
    lambda fmt: ak.ASPP.keras_tutorial(5, (1, 2, 4), data_format=fmt),
    lambda fmt: ak.ASPP.torchvision(5, (2, 3), data_format=fmt),
    lambda fmt: ak.ASPP(5, [(5, 2), (1, 1)], batch_norm=True, use_bias=True,
                        pool_use_bias=False, data_format=fmt),  # 5x5: composed, not fused
    lambda fmt: ak.ASPP(5, [(3, 2)], pooling=False, data_format=fmt),
], ids=["tutorial", "torchvision", "composed", "no-pooling"])
def test_aspp_layer_kernels_match_its_keras_ops_form(fmt, make, calls):
    keras.utils.set_random_seed(7)
    layer = make(fmt)
    x = images(shape_of(fmt, 2, 8, 7, 6), seed=8)
    layer.build(x.shape)
    for _, bn in layer.layers_in_order():
        if bn is not None:
            randomize_bn(bn, seed=hash(bn.name) % 100)
    for conv, _ in layer.layers_in_order():
        if conv.use_bias:
            conv.bias.assign(np.random.default_rng(1).normal(0, 0.2, conv.filters))
    ref = stock(layer, x)
    out = infer(layer, x)
    assert tuple(out.shape) == shape_of(fmt, 2, 8, 7, 5)
    assert_close(out, ref, "float32")
    # 1x1 / 3x3 branches run the fused atrous.aspp; others atrous's public ops
    fused = all(k in (1, 3) for k, _ in layer.branches)
    assert calls.get("aspp", 0) == int(fused)
    assert calls.get("dilated_conv2d", 0) == (0 if fused else len(layer.branches) + 1)


def test_aspp_argument_errors():
    with pytest.raises(ValueError, match="filters must be a positive int"):
        ak.ASPP(0)
    with pytest.raises(ValueError, match="branches must hold"):
        ak.ASPP(4, [(3, 0)])
    with pytest.raises(ValueError, match="dropout must be in"):
        ak.ASPP(4, dropout=1.0)
    with pytest.raises(TypeError, match="batch_norm must be a bool"):
        ak.ASPP(4, batch_norm="yes")


def test_save_and_load_keras_file(tmp_path):
    keras.utils.set_random_seed(9)
    inp = keras.Input(batch_shape=(2, 10, 10, 3))
    y = ak.AtrousConv2D(6, 3, padding="same", activation="relu")(inp)
    y = ak.ASPP.torchvision(4, (2, 4))(y)
    y = ak.BilinearResize(scale=2, coordinate_mode="asymmetric")(y)
    pooled = ak.GlobalAveragePooling2D()(y)
    model = keras.Model(inp, [y, pooled])
    aspp = model.layers[2]
    for i, (_, bn) in enumerate(aspp.layers_in_order()):
        randomize_bn(bn, seed=i)
    x = images((2, 10, 10, 3), seed=11)
    before = [np.asarray(t) for t in infer(model, x)]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == \
        [type(layer).__name__ for layer in model.layers]
    assert loaded.layers[2].get_config() == aspp.get_config()
    for a, b in zip(infer(loaded, x), before, strict=True):
        assert_close(a, b.astype(np.float64), "float32")


# ---- when the layers fall back ----------------------------------------------------------

def test_forced_fallback_runs_no_kernel(calls):
    layer = ak.ASPP.keras_tutorial(4, (1, 2))
    x = images((1, 6, 6, 3))
    with ak.fallback():
        infer(layer, x)
        infer(ak.GlobalAveragePooling2D(), x)
    assert calls == {}
    infer(layer, x)
    assert calls


def test_other_backends_fall_back_and_warn_once(monkeypatch, calls):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(runtime, "_warned", set())
    x = torch.from_numpy(images((1, 4, 4, 2)))
    with pytest.warns(UserWarning, match="'jax' backend runs the layers' keras.ops form"):
        assert not runtime.use_kernels(x, None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time is silent
        assert not runtime.use_kernels(x, None)


def test_training_falls_back_and_gradients_flow(calls):
    keras.utils.set_random_seed(12)
    layer = ak.ASPP.torchvision(4, (2,), dropout=0.0)
    x = torch.from_numpy(images((2, 6, 6, 3))).requires_grad_(True)
    y = layer(x, training=True)
    assert calls == {}
    y.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    kernel = layer.branch_convs[1].kernel.value
    assert kernel.grad is not None and float(kernel.grad.abs().sum()) > 0
    # inference with autograd on and trainable weights: still the differentiable path
    assert not runtime.use_kernels(x.detach(), False, layer.weights)
    with torch.no_grad():
        assert runtime.use_kernels(x.detach(), False, layer.weights)
    layer.trainable = False  # frozen weights: autograd on, but nothing wants a gradient
    assert runtime.use_kernels(x.detach(), None, layer.weights)
    assert not runtime.use_kernels(x.detach(), True, layer.weights)  # training=True still


def test_fit_trains_a_model_with_atrous_layers(calls):
    keras.utils.set_random_seed(13)
    inp = keras.Input(batch_shape=(4, 8, 8, 3))
    y = ak.ASPP.keras_tutorial(4, (1, 2))(inp)
    y = ak.AtrousConv2D(2, 1)(y)
    model = keras.Model(inp, ak.GlobalAveragePooling2D()(y))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, target = images((8, 8, 8, 3), seed=14), images((8, 2), seed=15)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, target, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert calls == {}  # training ran the keras.ops forms only
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(),
                                                         strict=True))
    # after training, inference runs the kernels on the updated weights
    with ak.fallback():
        ref = model.predict(x, verbose=0)
    assert_close(model.predict(x, verbose=0), ref.astype(np.float64), "float32")
    assert calls == {"aspp": 1, "dilated_conv2d": 1, "global_avg_pool": 1}  # one batch


def test_importing_atrous_does_not_import_keras():
    import subprocess
    import sys

    code = "import sys, atrous; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
