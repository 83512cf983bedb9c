"""`derive check` for blocks with Attn: the tokens of one sequence through finite
transformer stacks, against the mean-field token kernel.

Independent references: uniform attention worked by hand (every token becomes the mean
token), and the two-token softmax overlap S = E[sigmoid(u)^2 + sigmoid(-u)^2],
u ~ N(0, 2 v), by Gauss-Hermite quadrature written out here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import derive.simulation.token_check as token_module
from derive.blocks.attention import Attention, Overlap
from derive.blocks.config import variance_config
from derive.blocks.nodes import Kernel
from derive.errors import DeriveError
from derive.simulation.kernel_check import derived_kernel
from derive.simulation.networks import Draws, Network, checkable
from derive.simulation.token_check import (
    TokenDraws,
    compare_tokens,
    findings,
    measure_tokens,
    token_inputs,
)
from tests.cli_runner import invoke


def uniform_pre_ln(n: int, q0: float, rho0: float) -> tuple[float, float]:
    """x + Attn(LN(x)) with P = 1/n, W_V and W_O of variance 1/D: (q_1, rho_1)."""
    mixed = rho0 + (1 - rho0) / n  # LN: q = 1, c = rho0; the mean token's q = c
    return q0 + mixed, (rho0 * q0 + mixed) / (q0 + mixed)


def two_token_overlap(v: float) -> float:
    """S = E[P_11^2 + P_12^2] for two logits of a row, iid N(0, v): P_11 = sigmoid(u),
    u = s_11 - s_12 ~ N(0, 2 v)."""
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    u = math.sqrt(2 * 2 * v) * nodes
    p = 1 / (1 + np.exp(-u))
    return float((weights * (p * p + (1 - p) * (1 - p))).sum() / math.sqrt(math.pi))


# --- the simulation -------------------------------------------------------------------

def test_tokens_of_a_sequence_have_the_asked_moments() -> None:
    x = token_inputs(TokenDraws(1, 2048, 8, count=4), 3.0, 0.25)
    assert float((x * x).mean()) == pytest.approx(3.0, rel=0.02)
    cross = np.einsum("nid,njd->ij", x, x) / (4 * 2048)
    assert float(cross[~np.eye(8, dtype=bool)].mean()) == pytest.approx(0.75, abs=0.05)
    g = TokenDraws(1, 64, 8, count=2).upstream()
    assert np.all(g == g[:, :1])  # every token reads the same readout vector


def test_the_network_carries_its_heads() -> None:
    config = variance_config(block="Attn(x)")
    x = np.zeros((1, 4, 64), dtype=np.float32)
    assert Network(config, TokenDraws(1, 64, 4, heads=8), 0, x).heads == 8
    assert Network(config, Draws(1, 64, 4), 0, x).heads == 1


def test_heads_change_the_attention_of_a_network() -> None:
    config = variance_config(block="Attn(x)", qk_variance=4)
    seen = {}
    for heads in (1, 8):
        [m] = measure_tokens([config], depth=1, width=64, heads=heads, seeds=2, q0=2)
        seen[heads] = m.forward["q"][1]
    assert seen[1] != seen[8]  # the same draws, split into other heads


def test_uniform_attention_worked_by_hand() -> None:
    config = variance_config(block="x + Attn(LN(x))", attention="uniform", tokens=4)
    q_1, rho_1 = uniform_pre_ln(4, 2.0, 0.3)
    want = derived_kernel(config, 1, 2, "0.3")
    assert want["forward"]["q_a"][1] == pytest.approx(q_1, rel=1e-12)
    assert want["forward"]["rho"][1] == pytest.approx(rho_1, rel=1e-12)
    [m] = measure_tokens([config], depth=1, width=128, heads=2, seeds=16, q0=2, rho0="0.3")
    assert m.forward["q"][1] == pytest.approx(q_1, rel=0.05)
    assert m.forward["rho"][1] == pytest.approx(rho_1, abs=0.03)
    # the input's moments themselves, and their standard errors
    assert m.forward["q"][0] == pytest.approx(2.0, rel=0.05)
    assert 0 < m.forward_error["rho"][0] < 0.05


def test_standard_attention_of_two_tokens_against_quadrature() -> None:
    # Attn(x), q = 1, c = 1/2: row logits iid N(0, v), v = q (q - c) = 1/2
    s = two_token_overlap(0.5)
    config = variance_config(block="Attn(x)", tokens=2)
    want = derived_kernel(config, 1)
    assert want["forward"]["q_a"][1] == pytest.approx(0.5 + 0.5 * s, rel=1e-6)
    rows = compare_tokens([config], 1, 256, 4, 32)
    assert all(r.ok for r in rows), rows
    q_row = next(r for r in rows if r.quantity == "q_k")
    assert abs(q_row.measured - (0.5 + 0.5 * s)) < 4 * q_row.stderr + 1e-3


def test_a_small_transformer_agrees_with_the_derivation() -> None:
    configs = [variance_config(init="he", block=checkable(name))
               for name in ("transformer-pre", "transformer-post")]
    rows = compare_tokens(configs, 2, 128, 2, 32)
    assert [r.quantity for r in rows[:4]] == ["q_k", "rho_k", "q_k", "rho_k"]
    assert [r.quantity for r in rows[4:8]] == ["d_k/d_K", "rho^grad_k"] * 2
    assert [r.k for r in rows[:8]] == [1, 1, 2, 2, 1, 1, 0, 0]
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert findings(rows) == []


# a configuration whose logits are large (v = 4 * 2 * 1.6 = 12.8): the softmax is peaked
# and the gradient through the logits dominates d
PEAKED = {"block": "Attn(x)", "qk_variance": 4}


def test_dropping_the_q_minus_c_term_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    right = Attention.kernel

    def wrong(self, inputs, config, x):  # type: ignore[no-untyped-def]
        out = right(self, inputs, config, x)
        (state,) = inputs
        s2 = float(config.vo_variance) ** 2
        q = s2 * state.c  # q' = s2 (c + (q - c) S) without its (q - c) S
        return Kernel(q, q, out.c, out.m)

    monkeypatch.setattr(Attention, "kernel", wrong)
    rows = compare_tokens([variance_config(**PEAKED)], 1, 128, 2, 32, q0=2, rho0="0.2")
    bad = {r.quantity for r in rows if not r.ok}
    assert {"q_k", "rho_k"} <= bad
    assert all(f.beyond_noise for f in findings(rows) if f.quantity in ("q_k", "rho_k"))


def test_dropping_the_logit_path_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    right = Attention.overlap

    def wrong(self, state, config):  # type: ignore[no-untyped-def]
        found = right(self, state, config)
        return Overlap(found.same, found.others, found.per_other)  # no logit gradient

    rows = compare_tokens([variance_config(**PEAKED)], 1, 128, 2, 32, q0=2, rho0="0.2")
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    monkeypatch.setattr(Attention, "overlap", wrong)
    rows = compare_tokens([variance_config(**PEAKED)], 1, 128, 2, 32, q0=2, rho0="0.2")
    assert [r.quantity for r in rows if not r.ok] == ["d_k/d_K", "rho^grad_k"]
    [gradient, correlation] = findings(rows)
    assert gradient.beyond_noise and gradient.worst.measured > 2 * gradient.worst.derived
    assert correlation.quantity == "rho^grad_k"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"heads": 3}, "heads 3 does not divide the width 64"),
     ({"heads": 0}, "heads must be an integer >= 1 dividing the width 64, got 0"),
     ({"rho0": 2}, "rho0 must be a number in \\[0, 1\\]"),
     ({"rho0": "-1/4"}, "rho0 must be a number in \\[0, 1\\]"),
     ({"seeds": 0}, "seeds must be an integer >= 1")])
def test_bad_input_raises(kwargs: dict, message: str) -> None:
    arguments = {"heads": 2, "seeds": 2, **kwargs}
    with pytest.raises(DeriveError, match=message):
        compare_tokens([variance_config(block="Attn(x)")], 1, 64, **arguments)


@pytest.mark.parametrize(
    ("config", "message"),
    [(variance_config(block="x + F(x)"), "has none: derive check --kernel"),
     (variance_config(block="Attn(x)", tokens=1), "--tokens must be a whole number >= 2"),
     (variance_config(block="x + Attn(BN(x))"), "the token check takes no BN"),
     (variance_config(block="x + alpha*Attn(x)"), "give alpha a value")])
def test_configurations_it_cannot_simulate(config: object, message: str) -> None:
    with pytest.raises(DeriveError, match=message):
        compare_tokens([config], 1, 64, 2, 2)


# --- the command line -------------------------------------------------------------------

SMALL = ["check", "--init", "he", "--activation", "relu", "--depth", "2", "--width", "128",
         "--heads", "2", "--seeds", "16"]


def test_a_block_with_attention_goes_to_the_token_check(
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for extra in ([], ["--kernel"]):
        code, out, err = invoke(capsysbinary, *SMALL, "--block", "transformer-pre", *extra)
        assert code == 0, out + err
        lines = out.splitlines()
        assert lines[0].split() == ["configuration", "value", "k", "derived", "measured",
                                    "s.e.", "error", "ok"]
        assert [line.split()[2:4] for line in lines[2:6]] == [
            ["q_k", "2"], ["rho_k", "2"], ["d_k/d_K", "0"], ["rho^grad_k", "0"]]
        assert lines[-1].startswith("1 configuration, 8 values compared (q_k, rho_k")
        assert "2 heads of 64 units, 16 networks of one sequence (16 tokens, standard" in out


def test_transformers_runs_the_five_presets(capsysbinary: pytest.CaptureFixture[bytes]
                                            ) -> None:
    code, out, err = invoke(capsysbinary, "check", "--transformers", "--depth", "1",
                            "--width", "32", "--heads", "2", "--seeds", "2", "--tokens", "4",
                            "--tolerance", "1", "--attention", "uniform", "--format", "json")
    document = json.loads(out)
    labels = list(dict.fromkeys(r["configuration"] for r in document["rows"]))
    assert labels == ["he/relu/transformer-post/n=4 uniform", "he/relu/transformer-pre/n=4 uniform",
                      "he/relu/transformer-scaled (alpha=1/4)/n=4 uniform",
                      "he/relu/transformer-deepnorm (alpha=2, beta=1/2)/n=4 uniform",
                      "he/attention-only/n=4 uniform"]
    assert code == (0 if document["ok"] else 1), err


def test_he_and_relu_unless_told() -> None:
    from derive.commands.check_tokens import token_configs

    labels = [c.label for c in token_configs(False, (), (), ("transformer-pre", "Attn(x)"),
                                             (), {}, {})]
    assert labels == ["he/relu/transformer-pre/n=16 standard", "he/attention-only/n=16 standard"]
    labels = [c.label for c in token_configs(False, ("xavier", "he"), ("gelu",),
                                             ("Attn(x)", "transformer-post"), (), {}, {})]
    assert labels == ["xavier/attention-only/n=16 standard",
                      "xavier/gelu/transformer-post/n=16 standard",
                      "he/gelu/transformer-post/n=16 standard"]


def test_json_keys_and_reproducible(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    args = [*SMALL, "--block", "Attn(x)", "--format", "json", "--blocks", "--rho0", "0.3"]
    first, second = invoke(capsysbinary, *args), invoke(capsysbinary, *args)
    assert first == second
    document = json.loads(first[1])
    assert list(document) == ["settings", "ok", "rows", "findings", "notes"]
    assert document["settings"] == {"tokens": [16], "attention": ["standard"], "depth": 2,
                                    "width": 128, "heads": 2, "seeds": 16, "seed": 0,
                                    "q0": 1.0, "rho0": "3/10", "tolerance": 0.05,
                                    "relative": 0.1}
    assert len(document["rows"]) == 8
    assert list(document["rows"][0]) == ["configuration", "quantity", "k", "derived",
                                         "measured", "stderr", "error", "relative",
                                         "tolerance", "ok"]


def test_a_wrong_rule_gets_a_line_and_exit_1(monkeypatch: pytest.MonkeyPatch,
                                             capsysbinary: pytest.CaptureFixture[bytes]
                                             ) -> None:
    right = token_module.derived_kernel

    def wrong(config, depth, q0=1, rho0="1/2", width=256):  # type: ignore[no-untyped-def]
        profile = right(config, depth, q0, rho0, width)
        profile["backward"]["rho"] = [r / 2 for r in profile["backward"]["rho"]]
        return profile

    monkeypatch.setattr(token_module, "derived_kernel", wrong)
    code, out, _ = invoke(capsysbinary, *SMALL, "--block", "transformer-pre")
    assert code == 1
    [line] = [x for x in out.splitlines() if "differs from the mean-field model" in x]
    assert line.startswith("he/relu/transformer-pre/n=16 standard: the gradients' "
                           "correlation rho^grad_k differs from the mean-field model by ")
    assert line.endswith("outside 0.05 at k = 0, 1: beyond the finite-width noise")
    assert "2 outside 0.05 (correlations) and 10% (q_k, d_k/d_K)" in out.splitlines()[-1]
    [note] = [x for x in out.splitlines() if x.startswith("Note: ")]
    assert "falls like 1/heads" in note
    code, out, _ = invoke(capsysbinary, *SMALL, "--block", "transformer-pre", "--format",
                          "json")
    [finding] = json.loads(out)["findings"]
    assert (finding["quantity"], finding["layers"], finding["beyond_noise"]) == (
        "rho^grad_k", [0, 1], True)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--block", "transformer-pre", "--heads", "3", "--width", "256"],
      "heads 3 does not divide the width 256"),
     (["--block", "transformer-pre", "--heads", "0"],
      "heads must be an integer >= 1 dividing the width 256, got 0"),
     (["--block", "transformer-pre", "--tokens", "0"], "tokens must be a whole number of tokens"),
     (["--block", "transformer-pre", "--tokens", "1"], "--tokens must be a whole number >= 2"),
     (["--block", "transformer-pre", "--rho0", "2"], "rho0 must be a number in [0, 1]"),
     (["--transformers", "--heads", "x"], "--heads"),
     (["--transformers", "--block", "pre"], "--transformers checks the five transformer"),
     (["--block", "transformer-pre", "--block", "pre"], "pre has no Attn(.)"),
     (["--block", "transformer-pre", "--weights"], "drop --weights"),
     (["--block", "transformer-pre", "--batch", "4"], "drop --batch"),
     (["--block", "pre", "--heads", "4"], "--heads goes with blocks that hold Attn(.)")])
def test_bad_input_is_one_line_exit_2(capsysbinary: pytest.CaptureFixture[bytes],
                                      args: list[str], message: str) -> None:
    code, out, err = invoke(capsysbinary, "check", *args)
    assert code == 2, out + err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.slow
def test_the_transformer_check_passes_at_its_defaults() -> None:
    # in a process of its own: its networks' memory stays out of the test process
    done = subprocess.run([sys.executable, "-m", "derive", "check", "--transformers"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith("5 configurations, 120 values compared")
    assert summary.endswith("all within 0.05 (correlations) and 10% (q_k, d_k/d_K)")
