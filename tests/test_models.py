"""The two models: D2L's MLPScratch and concise MLP, which compute the same function given the same weights."""

import pytest
import torch
from torch import nn

from mlp_cli.activations import BookReLU, relu
from mlp_cli.models import MLPConcise, MLPScratch, build_model, parameter_shapes


def copy_scratch_into_concise(scratch: MLPScratch, concise: nn.Module) -> None:
    """nn.Linear stores W transposed: (out, in) where the book's W is (in, out)."""
    linears = [layer for layer in concise if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for layer, linear in enumerate(linears, start=1):
            linear.weight.copy_(getattr(scratch, f"W{layer}").T)
            linear.bias.copy_(getattr(scratch, f"b{layer}"))


def test_scratch_parameters_are_the_books_w1_b1_w2_b2() -> None:
    torch.manual_seed(0)
    model = MLPScratch(784, [256], 10, sigma=0.01)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert torch.count_nonzero(model.b1) == 0 and torch.count_nonzero(model.b2) == 0
    assert model.W1.mean().abs() < 1e-3
    assert model.W1.std().item() == pytest.approx(0.01, rel=0.02)


def test_sigma_sets_the_spread_of_the_initial_weights() -> None:
    torch.manual_seed(0)
    assert MLPScratch(784, [256], 10, sigma=0.5).W1.std().item() == pytest.approx(0.5, rel=0.02)


def test_relu_is_max_of_x_and_zero_and_matches_torch_relu() -> None:
    X = torch.randn(1000, requires_grad=True)
    ours = relu(X)
    assert torch.equal(ours, torch.where(X > 0, X, torch.zeros_like(X)))
    (grad,) = torch.autograd.grad(ours.sum(), X)
    assert torch.equal(grad, (X > 0).float())


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The float32 tensor's bit patterns: equal bits tell NaN from NaN and -0.0 from 0.0."""
    return tensor.contiguous().view(torch.int32)


@pytest.mark.parametrize("ties", [False, True])
def test_the_scratch_relus_gradient_has_the_bits_autograd_derives_for_max(ties: bool) -> None:
    """BookReLU's two-kernel backward gives what autograd gives for torch.max(X, zeros): grad / 2 at exact ties,
    grad at NaN, 0 (never -0.0, never NaN from an infinite grad) below zero."""
    torch.manual_seed(0)
    X, grad = torch.randn(64, 32), torch.randn(64, 32)
    grad[0, :4] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0])
    X[0, :4] = -1.0  # infinite and NaN gradients meet negative inputs
    if ties:
        X[1, :3] = torch.tensor([0.0, -0.0, float("nan")])
        X[2, 5] = 0.0
    gradients = {}
    for name, function in (("autograd", relu), ("BookReLU", BookReLU.apply)):
        inputs = X.clone().requires_grad_(True)
        outputs = function(inputs)
        outputs.backward(grad)
        gradients[name] = (outputs.detach(), inputs.grad)
    assert torch.equal(bits(gradients["BookReLU"][0]), bits(gradients["autograd"][0]))
    assert torch.equal(bits(gradients["BookReLU"][1]), bits(gradients["autograd"][1]))
    if ties:
        assert gradients["BookReLU"][1][2, 5] == grad[2, 5] / 2


def test_scratch_forward_uses_the_hand_written_relu(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scratch model must not use torch's relu")

    monkeypatch.setattr(torch, "relu", forbidden)
    monkeypatch.setattr(torch.nn.functional, "relu", forbidden)
    model = MLPScratch(784, [32], 10, sigma=0.01)
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_scratch_weights_hold_the_books_draw_in_nn_linears_memory_order() -> None:
    """Column-major W, as nn.Linear stores its weight, so that both impls run the same matrix kernels; the values
    are the book's randn(fan_in, fan_out) * sigma, and gradients keep the layout."""
    torch.manual_seed(0)
    model = MLPScratch(784, [256], 10, sigma=0.01)
    torch.manual_seed(0)
    expected_W1, expected_W2 = torch.randn(784, 256) * 0.01, torch.randn(256, 10) * 0.01
    assert torch.equal(model.W1, expected_W1) and torch.equal(model.W2, expected_W2)
    assert model.W1.stride() == (1, 784) and model.W2.stride() == (1, 256)
    nn.functional.cross_entropy(model(torch.rand(8, 784)), torch.arange(8)).backward()
    assert model.W1.grad.stride() == model.W1.stride() and model.W2.grad.stride() == model.W2.stride()


def test_an_init_scheme_draws_scratch_weights_in_row_order_whatever_their_layout() -> None:
    torch.manual_seed(3)
    model = build_model("scratch", 20, [8], 4, sigma=0.01, init="kaiming")
    torch.manual_seed(3)
    MLPScratch(20, [8], 4, sigma=0.01)  # the book's draw comes first, then the scheme's
    expected_W1 = torch.empty(20, 8).normal_(0.0, (2 / 20) ** 0.5)
    expected_W2 = torch.empty(8, 4).normal_(0.0, (2 / 8) ** 0.5)
    assert torch.equal(model.W1, expected_W1) and torch.equal(model.W2, expected_W2)


def test_scratch_forward_reshapes_images_to_rows_of_num_inputs() -> None:
    model = MLPScratch(784, [32], 10, sigma=0.01)
    images = torch.rand(5, 1, 28, 28)
    assert torch.equal(model(images), model(images.reshape(5, 784)))


def test_scratch_forward_is_the_books_equation() -> None:
    model = MLPScratch(784, [32], 10, sigma=0.1)
    X = torch.rand(6, 784)
    H = torch.clamp(X @ model.W1 + model.b1, min=0)
    torch.testing.assert_close(model(X), H @ model.W2 + model.b2)


def test_several_hidden_sizes_stack_hidden_layers() -> None:
    model = MLPScratch(784, [256, 128], 10, sigma=0.01)
    assert [tuple(p.shape) for name, p in model.named_parameters() if name.startswith("W")] == [
        (784, 256), (256, 128), (128, 10)]
    concise = build_model("concise", 784, [256, 128], 10, sigma=0.01)
    assert [tuple(layer.weight.shape) for layer in concise if isinstance(layer, nn.Linear)] == [
        (256, 784), (128, 256), (10, 128)]


def test_concise_is_flatten_lazylinear_relu_lazylinear() -> None:
    model = MLPConcise([256], 10)
    assert [type(layer) for layer in model] == [nn.Flatten, nn.LazyLinear, nn.ReLU, nn.LazyLinear]


def test_build_model_materializes_the_lazy_layers() -> None:
    model = build_model("concise", 784, [64], 10, sigma=0.01)
    assert sum(p.numel() for p in model.parameters()) == 784 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("hidden", [[256], [64, 32]])
def test_scratch_and_concise_agree_on_outputs_and_gradients_with_the_same_weights(hidden: list[int]) -> None:
    torch.manual_seed(0)
    scratch = build_model("scratch", 784, hidden, 10, sigma=0.01)  # D2L's init
    concise = build_model("concise", 784, hidden, 10, sigma=0.01)
    copy_scratch_into_concise(scratch, concise)
    images, labels = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    scratch_logits, concise_logits = scratch(images), concise(images)
    torch.testing.assert_close(scratch_logits, concise_logits, rtol=0, atol=1e-6)
    nn.functional.cross_entropy(scratch_logits, labels).backward()
    nn.functional.cross_entropy(concise_logits, labels).backward()
    linears = [layer for layer in concise if isinstance(layer, nn.Linear)]
    for layer, linear in enumerate(linears, start=1):
        torch.testing.assert_close(getattr(scratch, f"W{layer}").grad.T, linear.weight.grad, rtol=0, atol=1e-6)
        torch.testing.assert_close(getattr(scratch, f"b{layer}").grad, linear.bias.grad, rtol=0, atol=1e-6)


def test_the_same_seed_builds_the_same_model() -> None:
    for impl in ("scratch", "concise"):
        torch.manual_seed(7)
        first = build_model(impl, 784, [16], 10, sigma=0.01).state_dict()
        torch.manual_seed(7)
        second = build_model(impl, 784, [16], 10, sigma=0.01).state_dict()
        assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize(("name", "reference"), [
    ("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("leaky-relu", nn.functional.leaky_relu),
    ("elu", nn.functional.elu), ("gelu", nn.functional.gelu), ("silu", nn.functional.silu),
    ("softplus", nn.functional.softplus)])
def test_hand_written_activations_match_torch_even_at_extreme_inputs(name: str, reference) -> None:
    from mlp_cli.activations import ACTIVATIONS

    X = torch.cat([torch.linspace(-100, 100, 2001), torch.tensor([-1e4, 1e4])]).requires_grad_(True)
    ours = ACTIVATIONS[name](X)
    (ours_grad,) = torch.autograd.grad(ours.sum(), X)
    expected = reference(X)
    (expected_grad,) = torch.autograd.grad(expected.sum(), X)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(ours_grad).all()


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "identity", "leaky-relu", "elu", "gelu", "silu",
                                        "softplus"])
def test_scratch_and_concise_agree_for_every_activation(activation: str) -> None:
    torch.manual_seed(0)
    scratch = build_model("scratch", 784, [64], 10, 0.01, activation)
    concise = build_model("concise", 784, [64], 10, 0.01, activation)
    copy_scratch_into_concise(scratch, concise)
    images = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(scratch(images), concise(images), rtol=0, atol=1e-6)


def test_without_a_nonlinearity_the_mlp_is_one_affine_map() -> None:
    """D2L 5.1.1.2: O = (X W1 + b1) W2 + b2 = X W + b with W = W1 W2 and b = b1 W2 + b2."""
    torch.manual_seed(0)
    model = build_model("scratch", 784, [32], 10, 0.5, "identity")
    with torch.no_grad():
        model.b1.normal_()
        model.b2.normal_()
    W = model.W1 @ model.W2
    b = model.b1 @ model.W2 + model.b2
    X = torch.rand(50, 784)
    torch.testing.assert_close(model(X), X @ W + b, rtol=1e-4, atol=1e-4)


def test_dropout_zeroes_about_p_of_the_units_and_scales_the_rest() -> None:
    from mlp_cli.models.scratch import dropout_layer

    torch.manual_seed(0)
    X = torch.ones(1000, 1000)
    dropped = dropout_layer(X, 0.3)
    assert (dropped == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert torch.allclose(dropped[dropped != 0], torch.tensor(1 / 0.7))
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_dropout_acts_in_training_mode_only(impl: str) -> None:
    torch.manual_seed(0)
    model = build_model(impl, 784, [256], 10, 0.01, "relu", 0.5)
    images = torch.rand(8, 1, 28, 28)
    model.train()
    assert not torch.equal(model(images), model(images))  # a fresh mask each time
    model.eval()
    assert torch.equal(model(images), model(images))
    without = build_model(impl, 784, [256], 10, 0.01, "relu", 0.0)
    if impl == "scratch":
        without.load_state_dict(model.state_dict())
    else:
        copy_linears(model, without)
    without.eval()
    torch.testing.assert_close(model(images), without(images))  # evaluation ignores dropout


def copy_linears(source: nn.Module, target: nn.Module) -> None:
    with torch.no_grad():
        pairs = zip([m for m in source if isinstance(m, nn.Linear)], [m for m in target if isinstance(m, nn.Linear)],
                    strict=True)
        for from_layer, to_layer in pairs:
            to_layer.weight.copy_(from_layer.weight)
            to_layer.bias.copy_(from_layer.bias)


def test_the_concise_model_gets_a_dropout_layer_after_each_hidden_activation() -> None:
    model = build_model("concise", 784, [64, 32], 10, 0.01, "relu", 0.2)
    assert [type(layer) for layer in model] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU,
                                                nn.Dropout, nn.Linear]
    assert all(layer.p == 0.2 for layer in model if isinstance(layer, nn.Dropout))


@pytest.mark.parametrize("impl", ["scratch", "concise"])
@pytest.mark.parametrize(("init", "expected_std"), [("normal", 0.05), ("kaiming", (2 / 784) ** 0.5),
                                                    ("xavier", (2 / (784 + 512)) ** 0.5)])
def test_init_schemes_draw_weights_with_the_defined_spread_and_zero_biases(impl: str, init: str,
                                                                           expected_std: float) -> None:
    torch.manual_seed(0)
    model = build_model(impl, 784, [512], 10, 0.05, "relu", 0.0, init)
    weights = [p for p in model.parameters() if p.dim() == 2]
    first = weights[0] if impl == "scratch" else weights[0].T  # as (fan_in, fan_out)
    assert first.shape == (784, 512)
    assert first.std().item() == pytest.approx(expected_std, rel=0.02)
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters() if p.dim() == 1)


def test_the_book_init_keeps_each_models_own_initialisation() -> None:
    torch.manual_seed(0)
    concise = build_model("concise", 784, [512], 10, 0.05)  # torch's default: uniform, bound 1/sqrt(fan_in)
    assert concise[1].weight.abs().max().item() <= 1 / 784 ** 0.5
    assert torch.count_nonzero(concise[1].bias) > 0


@pytest.mark.parametrize("impl", ["scratch", "concise"])
@pytest.mark.parametrize("hidden", [(5,), (6, 4), (3, 2, 7)])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_parameter_shapes_are_those_build_model_makes(impl: str, hidden: tuple[int, ...], dropout: float) -> None:
    model = build_model(impl, 12, hidden, 3, 0.01, dropout=dropout)
    built = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert parameter_shapes(impl, 12, hidden, 3, dropout) == built
