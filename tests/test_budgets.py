"""Every derivation answers in seconds or is refused in one line; exit codes that tell the truth.

Each case of issue 19 stands here: blocks whose derivation was too slow or ended in a
traceback (nested activations, exact numbers too large to print, complex factors, many
symbolic dropout rates, LayerNorm of a zero branch), the simulation's guard on work and
memory, ``derive check``'s exit status, and the options that accepted bad values. A
random generator of block expressions (tests/block_expressions.py) checks that every
expression either derives or is refused with a DeriveError, each within BUDGET seconds
(a per-example alarm, not a timing of speed). Values are checked against independent
computations: exact fractions, counts read off the text, the simulation's own loops.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction

import pytest
import sympy
from block_expressions import expressions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import derive
from derive.blocks.block import MAX_NESTING, NESTING_COST, block
from derive.blocks.parser import MAX_DIGITS, MAX_SYMBOLS
from derive.commands.cli import main
from derive.errors import DeriveError
from derive.recursions.analysis import compare
from derive.recursions.weight_gradients import MAX_LISTED
from derive.simulation import resources

#: Seconds one derivation (or one refusal) may take here. The limits keep each under a
#: few seconds on an idle machine; the margin is for a machine shared with other work.
BUDGET = 20


class OverBudget(Exception):
    """Raised by the alarm when a derivation runs past its budget."""


@contextlib.contextmanager
def within(seconds: int = BUDGET) -> Iterator[None]:
    """Fail with OverBudget if the body runs longer than ``seconds``."""
    def ring(signum: int, frame: object) -> None:
        raise OverBudget(f"past {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli(*args: str) -> tuple[int, str, str]:
    """``derive ARGS`` in this process, within BUDGET: (exit code, stdout, stderr)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    code: object = None
    with within(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code
    out.flush()
    err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()  # type: ignore[attr-defined,return-value]


def refused(code: int, out: str, err: str, *fragments: str) -> bool:
    """One line on stderr holding every fragment, nothing on stdout, exit code 2."""
    return (code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
            and all(f in err for f in fragments))


def nested(count: int, inner: str = "F(x)") -> str:
    return "x + " + "tanh(" * count + inner + ")" * count


# --- blocks: nesting, exact numbers, realness, symbols, zero branches ------------------------

def test_twenty_nested_tanh_are_refused_naming_the_nesting() -> None:
    text = nested(20)
    with within(), pytest.raises(DeriveError) as err:
        derive.variance("xavier", "relu", block=text).forward.at(10)
    message = str(err.value)
    tanh = text.count("tanh(")  # read off the text: 20 tanh, and F's relu
    assert f"nests {tanh + 1} activations" in message and f"1 relu, {tanh} tanh" in message
    assert f"at most {MAX_NESTING}" in message and "\n" not in message
    assert refused(*cli("variance", "--block", text), "nests 21 activations")


def test_nesting_up_to_the_limit_derives_and_past_it_is_refused() -> None:
    allowed = (MAX_NESTING - 1) // NESTING_COST["tanh"]  # tanh around F's relu
    with within():
        value = derive.variance("he", "relu", block=nested(allowed)).forward.at(2)
    assert value.is_number and 1 < float(value) < 4  # q grows by at most the branch's 1
    with within(), pytest.raises(DeriveError, match="nests"):
        derive.variance("he", "relu", block=nested(allowed + 1)).forward.at(2)
    with within(), pytest.raises(DeriveError, match=r"4 gelu, with --activation gelu"):
        derive.variance("he", "gelu", block="x + F(F(F(F(x))))").forward.at(2)


@pytest.mark.parametrize("text", [
    "x*((2**64)**64)**64", "x + (10**40)**64*F(x)", "x + (2**64)**3*F(x)",
    "x + 1e-300*F(x)", "x + 2**40*(5**40*F(x))", "x + (10**20*(10**20*F(x)))",
])
def test_exact_numbers_too_large_to_print_are_refused(text: str) -> None:
    with within(), pytest.raises(DeriveError) as err:
        block(text)
    assert "digits" in str(err.value) or "too large" in str(err.value)
    assert refused(*cli("variance", "--block", text), "block")


def test_the_largest_exact_number_allowed_derives_exactly() -> None:
    c = (2**64) ** 2  # 39 digits
    assert len(str(c)) <= MAX_DIGITS
    with within():
        value = derive.variance("xavier", "relu", block="x + (2**64)**2*F(x)").forward.at(1)
    assert value == 1 + Fraction(c * c, 2)  # q_1 = q_0 (1 + c^2 E[relu(z)^2]), Xavier: 1/2


@pytest.mark.parametrize(("text", "fragment"), [
    ("x + (-8)**(1/3)*F(x)", "not a real number"),
    ("x + (-2)**alpha*F(x)", "not a real number"),
    ("x + (-1)**(1/2)*F(x)", "not a real number"),
    ("x + sqrt(-1)*F(x)", "sqrt of the negative number"),
])
def test_complex_factors_are_refused_saying_so(text: str, fragment: str) -> None:
    with within(), pytest.raises(DeriveError, match=fragment.replace("(", r"\(")):
        block(text)
    assert refused(*cli("variance", "--block", text), fragment)


def test_values_that_make_a_factor_complex_are_refused() -> None:
    assert refused(*cli("variance", "--block", "x + sqrt(1 - p)*F(x)", "--set", "p=2"),
                   "not a real number")
    assert refused(*cli("variance", "--block", "x + Dropout(F(x), p)", "--set", "p=1"),
                   "Dropout's rate must be in [0, 1)")
    with pytest.raises(DeriveError, match="not a real number"):
        derive.variance(block="x + sqrt(1 - p)*F(x)", values={"p": 3})


@pytest.mark.parametrize("count", [4, MAX_SYMBOLS])
def test_sums_of_symbolic_dropouts_answer_with_the_right_values(count: int) -> None:
    text = "x + " + " + ".join(f"Dropout(F(x), p{i})" for i in range(1, count + 1))
    with within():
        analysis = derive.variance("xavier", "relu", block=text)
        data = analysis.to_dict(10)
        profile = analysis.backward.profile(10)
    assert len(data["backward"]["profile"]) == 11
    rates = {sympy.Symbol(f"p{i}", positive=True): Fraction(i, 10) for i in range(1, count + 1)}
    # Xavier, relu: each F carries q/2, divided by 1 - p by its dropout; d_k/d_K = a^(K-k)
    a = 1 + sum(Fraction(1, 2) / (1 - p) for p in rates.values())
    values = {s: sympy.Rational(v.numerator, v.denominator) for s, v in rates.items()}
    for k, value in enumerate(profile):
        assert sympy.nsimplify(value.xreplace(values)) == sympy.Rational(a ** (10 - k))


def test_more_symbols_than_allowed_are_refused() -> None:
    text = "x + " + " + ".join(f"Dropout(F(x), p{i})" for i in range(MAX_SYMBOLS + 1))
    with within(), pytest.raises(DeriveError, match=f"{MAX_SYMBOLS + 1} symbols"):
        block(text)
    with pytest.raises(DeriveError, match=f"at most {MAX_SYMBOLS}"):  # with the options'
        derive.variance(block="x + " + " + ".join(f"a{i}*F(x)" for i in range(MAX_SYMBOLS)),
                        dropout="p")


@pytest.mark.parametrize("text", ["x + LN(W0(x))", "x + LN(F0(x))", "x + BN(F0(x))",
                                  "x + LN(0*F(x))"])
def test_normalizing_a_branch_that_is_zero_at_initialization_is_refused(text: str) -> None:
    with within(), pytest.raises(DeriveError, match="zero at initialization"):
        assert derive.variance("he", "relu", block=text).backward.closed_form is None
    assert refused(*cli("variance", "--block", text), "zero at initialization",
                   "undefined")


def test_a_zero_branch_without_normalization_derives_the_identity() -> None:
    # the branch W(relu(W0 x)) is zero at initialization: the block is the identity
    a = derive.variance("he", "relu", block="x + W(relu(W0(x)))")
    assert a.forward.at(5, q0=3) == 3 and a.backward.at(5) == 1
    with pytest.raises(DeriveError, match="outputs zero at initialization"):
        assert derive.variance("he", block="F0(x)").forward.closed_form is None


def test_a_symbol_named_gamma_is_not_the_layernorm_gain() -> None:
    assert refused(*cli("variance", "--block", "x + gamma*F(LN(x))", "--gamma", "3"),
                   "'gamma'", "gain")
    with pytest.raises(DeriveError, match="gain"):
        block("x + gamma*F(LN(x))")
    shown = derive.variance(block="x + g*F(LN(x))", gamma=3).backward.closed_form
    assert sympy.Symbol("g", positive=True) in shown.free_symbols


def test_iterations_past_a_double_are_refused_not_printed_as_infinity() -> None:
    text = "10**39*x + tanh(F(x))"  # q grows by 10^78 a block: past 1e308 at block 4
    code, out, err = cli("variance", "--block", text, "--activation", "tanh")
    assert refused(code, out, err, "leave a double's range at block 4")
    code, out, _ = cli("variance", "--block", text, "--activation", "tanh", "--depth", "2")
    assert code == 0 and " oo" not in out and "past the range of a double" in out


# --- derive variance: the regressions ---------------------------------------------------

@pytest.mark.parametrize("depth", [str(10**18), str(10**6)])
def test_weights_at_huge_depths_are_refused_in_one_line(depth: str) -> None:
    assert refused(*cli("variance", "--weights", "--depth", depth), f"at most {MAX_LISTED}")
    with within(), pytest.raises(DeriveError, match=f"up to depth {MAX_LISTED}"):
        derive.variance("he").weights.profile(MAX_LISTED + 1)


def test_weights_up_to_the_limit_are_listed() -> None:
    with within():
        profile = derive.variance("he", "relu", "pre").weights.profile(MAX_LISTED)
    # pre-LN, He: q_{k-1} = q_0 + k - 1, and w_k = P_k A_k d_k with d_k/d_K = (K+1)/(k+1)
    assert len(profile) == MAX_LISTED
    assert profile[0] == Fraction(MAX_LISTED + 1, 4) and profile[-1] == Fraction(1, 2)


@pytest.mark.parametrize("q0", ["-1", "0"])
def test_a_q0_that_is_not_positive_is_refused(q0: str) -> None:
    assert refused(*cli("variance", "--q0", q0, "--compare"), "q0 must be > 0")
    assert refused(*cli("variance", "--q0", q0), "q0 must be > 0")
    with pytest.raises(DeriveError, match="q0 must be > 0"):
        compare(q0=int(q0))


def test_rows_without_a_value_name_what_they_need() -> None:
    code, out, _ = cli("variance", "--activation", "tanh", "--compare", "--q0", "q",
                       "--dropout", "r")
    rows = [line for line in out.splitlines() if line.startswith(("none ", "skipinit "))]
    assert code == 0 and "for  (" not in out
    assert all("needs a value for" in row and "r (--dropout)" in row and "q0 (--q0)" in row
               for row in rows)
    assert "alpha (--set)" in next(row for row in rows if row.startswith("skipinit"))


@pytest.mark.parametrize("name", ["mlp_ratio", "dropout", "gamma", "negative_slope"])
def test_none_for_a_parameter_is_a_derive_error(name: str) -> None:
    with pytest.raises(DeriveError, match=f"{name} must be a number"):
        derive.variance("he", **{name: None})
    with pytest.raises(DeriveError, match=f"{name} must be a number"):
        derive.simulate("he", depth=1, width=8, seeds=1, batch=2, **{name: None})
    assert derive.variance("he", sigma_w2=None).forward.at(2) == 4  # none: He's 2/n


def test_set_refuses_a_name_given_twice_and_values_that_are_not_positive() -> None:
    spec = ("variance", "--block", "x + alpha*F(x)")
    assert refused(*cli(*spec, "--set", "alpha=1", "--set", "alpha=2"), "given twice")
    for value in ("-1", "0"):
        assert refused(*cli(*spec, "--set", f"alpha={value}"), "--set alpha must be > 0")
    with pytest.raises(DeriveError, match="alpha must be a number > 0"):
        derive.variance(block="x + alpha*F(x)", values={"alpha": -1})
    code, out, _ = cli(*spec, "--set", "alpha=2", "--init", "he")
    assert code == 0 and f"q_10 = {(1 + 2**2) ** 10}" in out  # He, relu: F keeps q


# --- derive check: exit status, work and memory -------------------------------------------

ONE = ("--init", "he", "--activation", "relu", "--norm", "none", "--branch", "single")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_exits_one_when_values_fall_outside_the_tolerance(fmt: str) -> None:
    code, out, err = cli("check", *ONE, "--width", "16", "--seeds", "1", "--batch", "2",
                         "--depth", "2", "--tolerance", "0.000001", "--format", fmt)
    assert code == 1 and err == ""
    if fmt == "json":
        rows = json.loads(out)["rows"]
        assert json.loads(out)["ok"] is False and sum(not r["ok"] for r in rows) == 4
    else:
        assert "4 outside" in out.splitlines()[-1]


def test_check_exits_zero_when_every_value_holds() -> None:
    code, out, _ = cli("check", *ONE, "--width", "64", "--seeds", "8", "--depth", "2",
                       "--tolerance", "0.5")
    assert code == 0 and "all within 50%" in out


def test_check_documents_its_exit_statuses() -> None:
    code, out, _ = cli("check", "--help")
    assert code == 0 and "0 when every block agrees" in out and "1 when some" in out
    with open(pathlib.Path(__file__).parent.parent / "README.md", encoding="utf-8") as readme:
        assert "exits with 1 if any block is off" in readme.read()


@pytest.mark.parametrize("args", [("--seeds", str(10**18)), ("--seeds", "1000000", "--width", "16"),
                                  ("--width", "8192", "--seeds", "4")])
def test_check_refuses_work_it_cannot_finish_in_minutes(args: tuple[str, ...]) -> None:
    assert refused(*cli("check", *args), "operations", f"{resources.MAX_WORK:.0e} allowed")


def test_check_refuses_work_for_one_configuration_too() -> None:
    assert refused(*cli("check", *ONE, "--seeds", "1000000", "--width", "16"), "operations",
                   "1 configuration")
    with within(), pytest.raises(DeriveError, match="operations"):
        derive.simulate("he", depth=2, width=16, seeds=10**9, batch=2)


def test_the_work_counts_the_products_and_draws_the_simulation_makes(monkeypatch) -> None:
    from derive.simulation.networks import grid

    config = grid(["he"], ["relu"], ["none"], ["single"])[0]  # one n x n matrix a block
    width, depth, networks, inputs = 64, 3, 8, 5
    monkeypatch.setattr(resources, "ELEMENT", 0)
    monkeypatch.setattr(resources, "STEP", 0)
    monkeypatch.setattr(resources, "DRAW", 0)
    products = resources.simulation_work([config], [(networks, inputs)], depth=depth,
                                         width=width, seeds=networks)
    assert products == 2 * width * width * inputs * networks * depth  # forward and backward
    monkeypatch.setattr(resources, "DRAW", 1)
    drawn = resources.simulation_work([config], [(networks, inputs)], depth=depth,
                                      width=width, seeds=networks) - products
    assert drawn == width * width * networks * depth  # one matrix per network and block
    monkeypatch.setattr(resources, "DRAW", 0)
    monkeypatch.setattr(resources, "STEP", 1)
    steps = resources.simulation_work([config], [(networks, inputs)], depth=depth,
                                      width=width, seeds=networks) - products
    nodes = len(config.block.expanded(config).walk())  # x, W, relu, x, the sum
    chunks = math.ceil(networks / 4)
    assert steps == chunks + depth * (chunks * 2 * nodes + networks)


#: Small runs whose peak memory (getrusage's, from a fresh start) is measured in a process
#: of their own: which function, and its arguments.
RUNS = [
    ("measure", dict(block="none", branch="single", width=1024, seeds=4, depth=4, batch=16)),
    ("measure", dict(block="pre", branch="mlp", width=512, seeds=8, depth=4, batch=16)),
    ("measure", dict(block="bn-first", branch="single", width=512, seeds=8, depth=4, batch=64)),
    ("measure_lengths", dict(block="none", branch="single", width=256, seeds=4, depth=30,
                             batch=16)),
]
PEAK = """
import json, os, sys
from derive.simulation import networks, resources
kind, spec = sys.argv[1], json.loads(sys.argv[2])
config = networks.grid(["he"], ["relu"], [], [spec["branch"]], blocks=[spec["block"]],
                       mlp_ratio=2)[0]
config = networks.numeric(config, spec["width"])
plan = networks.batching(config, spec["seeds"], spec["batch"])
estimate = resources.simulation_bytes([config], [plan], depth=spec["depth"],
                                      width=spec["width"], chunk=networks.CHUNK,
                                      lengths=kind == "measure_lengths")
try:  # start the peak afresh (Linux), so that what setting up took is not counted
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
except OSError:
    print(json.dumps(None))
    sys.exit()
run = networks.measure_lengths if kind == "measure_lengths" else (
    lambda c, **k: networks.measure([c], **k))
run(config, depth=spec["depth"], width=spec["width"], seeds=spec["seeds"], batch=spec["batch"])
# the peak since clear_refs (VmHWM); ru_maxrss would keep the peak of the process that
# started this one, which can be larger than anything this one allocates
with open("/proc/self/status") as status:
    after = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps([estimate, after - before]))
"""


@pytest.mark.parametrize(("kind", "spec"), RUNS)
def test_the_memory_estimate_bounds_the_measured_peak(kind: str, spec: dict) -> None:
    done = subprocess.run([sys.executable, "-c", PEAK, kind, json.dumps(spec)],
                          capture_output=True, text=True, check=True, timeout=300)
    if json.loads(done.stdout) is None:
        pytest.skip("the peak memory of a process cannot be reset here")
    estimate, peak = json.loads(done.stdout)
    assert peak > 10**7, peak  # the run itself took memory worth measuring
    assert peak <= estimate <= 5 * peak, (estimate, peak)


# --- random block expressions ----------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=expressions(), activation=st.sampled_from(("relu", "tanh", "gelu", "leaky_relu")),
       extra=st.sampled_from(((), ("--format", "json"), ("--weights",), ("--compare",))))
def test_every_expression_derives_or_is_refused_in_one_line(text: str, activation: str,
                                                            extra: tuple[str, ...]) -> None:
    code, out, err = cli("variance", "--block", text, "--activation", activation, "--init",
                         "he", *extra)
    assert code in (0, 2), (code, text, err)
    if code == 0:
        assert out and err == ""
    else:
        assert refused(code, out, err), (text, err)
        with pytest.raises(DeriveError), within():  # the API refuses it the same way
            analysis = derive.variance("he", activation, block=text)
            analysis.forward.at(10), analysis.backward.at(10)
            if "--weights" in extra:
                analysis.weights.profile(10)


def test_the_parser_reads_each_operator_and_function_in_its_own_small_step() -> None:
    complexity = pytest.importorskip("radon.complexity")
    source = (pathlib.Path(derive.__file__).parent / "blocks" / "parser.py").read_text()
    found = complexity.cc_visit(source)
    functions = [f for f in found if not hasattr(f, "methods")]
    functions += [m for c in found if hasattr(c, "methods") for m in c.methods]
    scores = {f.name: f.complexity for f in functions}
    assert "binary" in scores and "call" in scores and max(scores.values()) <= 15, scores
