"""`derive variance` on the command line, and the derivation against finite NumPy networks."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from derive.blocks.presets import PRESETS
from derive.commands import variance as command
from derive.inputs.choices import ACTIVATIONS, BRANCHES, INITS, NORMS
from derive.recursions.analysis import variance


def run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from derive.commands.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, "variance", *args], capture_output=True, text=True,
        check=False,
    )


def invoke(*args: str):
    result = CliRunner().invoke(command.variance, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_choices_match_the_model() -> None:
    assert (command.INITS, command.ACTIVATIONS, command.NORMS, command.BRANCHES) == (
        INITS, ACTIVATIONS, NORMS, BRANCHES)


def test_text_output_shows_recurrence_closed_form_and_value() -> None:
    out = invoke("--init", "he", "--depth", "5")
    assert "qₖ = 2·qₖ₋₁" in out and "q_K = 2ᴷ·q₀" in out and "q_5 = 32" in out
    assert "d₀/d_K = 2ᴷ" in out and "exponential" in out


def test_no_closed_form_gives_the_reason() -> None:
    out = invoke("--activation", "tanh", "--direction", "forward", "--depth", "3")
    assert "none: the map" in out and "backward" not in out


def test_symbolic_gain_and_post_norm() -> None:
    out = invoke("--norm", "post", "--gamma", "g", "--direction", "backward")
    assert "d₀/d_K = 1 if K = 0, else g²/q₀" in out


def test_json_carries_latex_and_profile() -> None:
    data = json.loads(invoke("--init", "he", "--norm", "pre", "--format", "json", "--depth", "3"))
    assert data["forward"]["closed_form"] == "q_{K} = K + q_{0}"
    assert data["forward"]["profile"] == ["1", "2", "3", "4"]
    assert data["backward"]["profile_float"] == [4.0, 2.0, 4 / 3, 1.0]


def test_latex_and_markdown_formats() -> None:
    assert "\\begin{aligned}" in invoke("--format", "latex")
    md = invoke("--format", "markdown", "--norm", "pre")
    assert md.startswith("### Forward") and "$$" in md


def test_compare_table_is_aligned() -> None:
    lines = invoke("--init", "he", "--compare", "--depth", "4").splitlines()
    assert len(lines) == 3 + 2 * len(PRESETS)
    header, rule = lines[1], lines[2]
    assert header.index("direction") == rule.index(" ") + 2 and lines[3].split()[:2] == [
        "none", "forward"]
    assert lines[3].split()[-1] == "16"
    md = invoke("--compare", "--format", "markdown")
    assert md.count("\n|") == 2 + 2 * len(PRESETS)
    data = json.loads(invoke("--compare", "--format", "json", "--direction", "backward"))
    assert [r["norm"] for r in data] == list(PRESETS)
    assert data[3]["block"] == "(x + F(x))/sqrt(2)"


@pytest.mark.slow
def test_output_is_byte_identical_across_processes() -> None:
    import os

    args = ["--activation", "gelu", "--norm", "pre", "--format", "json"]
    code = "import sys; from derive.commands.cli import main; main(sys.argv[1:])"
    outputs = {
        subprocess.run([sys.executable, "-c", code, "variance", *args], capture_output=True,
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and b"closed_form" in outputs.pop()


@pytest.mark.parametrize("args,message", [
    (("--init", "kaiming"), "'kaiming' is not one of 'xavier', 'he', 'lecun'"),
    (("--activation", "swish"), "'swish' is not one of"),
    (("--dropout", "1"), "dropout must be in [0, 1), got 1"),
    (("--mlp-ratio", "0"), "mlp_ratio must be > 0, got 0"),
    (("--gamma", "-1"), "gamma must be > 0, got -1"),
    (("--depth", "-3"), "--depth must be an integer >= 0 and <= 10^18, got '-3'"),
])
def test_bad_input_is_one_line_exit_2(args, message) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("derive: error:") and message in lines[0]


# --- an independent check: finite NumPy networks at initialization ----------------------


def _layer_norm(x: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    centred = x - x.mean(axis=1, keepdims=True)
    std = np.sqrt((centred**2).mean(axis=1, keepdims=True))
    return gamma * centred / std, std


def _ln_backward(grad: np.ndarray, normed: np.ndarray, std: np.ndarray, gamma: float) -> np.ndarray:
    y = normed / gamma
    g = grad * gamma
    return (g - g.mean(axis=1, keepdims=True) - y * (g * y).mean(axis=1, keepdims=True)) / std


def _simulate(norm: str, depth: int, width: int, samples: int, sigma2: float,
              gamma: float, dropout: float, seed: int) -> tuple[list[float], list[float]]:
    """Single-branch ReLU stack; returns q_k (k = 0..K) and d_k/d_K, by hand-written backprop."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(samples, width))
    ws = [rng.normal(scale=np.sqrt(sigma2), size=(width, width)) for _ in range(depth)]
    masks = [(rng.random((samples, width)) >= dropout) / (1 - dropout) for _ in range(depth)]
    cache, qs = [], [float((h**2).mean())]
    for w, m in zip(ws, masks, strict=True):
        inp, std = _layer_norm(h, gamma) if norm == "pre" else (h, None)
        pre = inp
        branch = m * (np.maximum(pre, 0) @ w.T)
        total = h + branch
        out, out_std = _layer_norm(total, gamma) if norm == "post" else (total, None)
        cache.append((h, inp, std, pre, total, out, out_std))
        h = out
        qs.append(float((h**2).mean()))
    grad = rng.normal(size=h.shape)
    ds = [float((grad**2).mean())]
    for w, m, (_, inp, std, pre, _, out, out_std) in zip(ws[::-1], masks[::-1], cache[::-1],
                                                        strict=True):
        if norm == "post":
            grad = _ln_backward(grad, out, out_std, gamma)
        through = ((grad * m) @ w) * (pre > 0)
        if norm == "pre":
            through = _ln_backward(through, inp, std, gamma)
        grad = grad + through
        ds.append(float((grad**2).mean()))
    ds = ds[::-1]
    return qs, [x / ds[-1] for x in ds]


@pytest.mark.parametrize("init,norm,dropout", [
    ("he", "none", 0.0), ("xavier", "pre", 0.0), ("he", "post", 0.0), ("he", "none", 0.25),
])
def test_profiles_match_finite_networks(init, norm, dropout) -> None:
    width, depth, gamma = 512, 4, 1.5
    sigma2 = {"he": 2 / width, "xavier": 1 / width}[init]
    qs, ds = _simulate(norm, depth, width, 256, sigma2, gamma, dropout, seed=7)
    a = variance(init, "relu", norm, gamma="3/2", dropout=dropout)
    q_start = qs[0]  # the drawn input's second moment, close to 1
    want_q = [float(v) for v in a.forward.profile(depth, q0=round(q_start, 6))]
    want_d = [float(v) for v in a.backward.profile(depth, q0=round(q_start, 6))]
    assert qs == pytest.approx(want_q, rel=0.08)
    assert ds == pytest.approx(want_d, rel=0.12)
