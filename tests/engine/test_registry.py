"""One registry type; the probe classes as the single source of formulas, papers and role thresholds;
site keys and layer lists."""

import pytest
import torch

import headlab  # noqa: F401  (registers the plug-ins)
from headlab import edits, patterns, probes
from headlab.engine import plugins
from headlab.engine.sites import format_layers, format_site, is_site_term, parse_layers, parse_site, parse_sites
from headlab.modules import MECHANISMS, make_mechanism
from headlab.probes import roles as atlas
from headlab.registry import Registry


# ---------------------------------------------------------------- Registry
def test_registry_register_get_names_and_errors():
    r = Registry("widget")
    r.register("a", 1)
    r.register("b", 2)
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"] and len(r) == 2
    assert r.get("a") == 1 and r["b"] == 2 and "a" in r and "z" not in r and 3 not in r
    assert dict(r.items()) == {"a": 1, "b": 2} and sorted(r) == ["a", "b"]
    with pytest.raises(ValueError, match=r"unknown widget 'z'; valid widget names are: a, b"):
        r.get("z")
    with pytest.raises(KeyError, match="valid widget names are: a, b"):
        r["z"]
    assert r.get("z", None) is None
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 3)
    r.register("a", 3, replace=True)
    assert r["a"] == 3
    r.register("a", 3)  # the same object again is not a conflict
    for bad in ("", " a", "a,b", 5):
        with pytest.raises(ValueError, match="widget name"):
            r.register(bad, 0)
    assert r.unregister("b") == 2 and r.names() == ["a"]
    with pytest.raises(ValueError, match="unknown widget 'b'"):
        r.unregister("b")
    with pytest.raises(ValueError, match="non-empty kind"):
        Registry("")


def test_registry_as_decorator():
    r = Registry("thing")

    @r.register
    class Alpha:
        name = "alpha"

    @r.register("beta")
    def make_beta():
        return "b"

    @r.register
    def gamma():
        return "g"

    assert r.names() == ["alpha", "beta", "gamma"] and r["alpha"] is Alpha and r["beta"]() == "b"
    with pytest.raises(ValueError, match="cannot tell the name"):
        r.register(object())


def test_every_plugin_kind_uses_the_registry_type():
    for reg, kind in (
        (probes.REGISTRY, "probe"),
        (edits.REGISTRY, "edit"),
        (patterns.REGISTRY, "pattern"),
        (MECHANISMS, "mechanism"),
    ):
        assert isinstance(reg, Registry) and reg.kind == kind and len(reg) > 0
    # the plug-in registries are the engine's: attach finds names without importing the plug-ins
    assert probes.REGISTRY is plugins.PROBES and edits.REGISTRY is plugins.EDITS and patterns.REGISTRY is plugins.PATTERNS
    # the dict-like reads other code relies on keep working
    assert patterns.REGISTRY["window"] is patterns.window and "power" in patterns.REGISTRY
    assert patterns.make("window", size=3).size == 3
    with pytest.raises(ValueError, match="unknown pattern 'nope'"):
        patterns.make("nope")
    assert edits.REGISTRY["ablate_zero"].__name__ == "ZeroAblate"
    with pytest.raises(ValueError, match="unknown edit 'nope'"):
        edits.from_config([{"edit": "nope", "sites": "all"}])
    with pytest.raises(ValueError, match=r"unknown mechanism 'nope'; valid mechanism names are: softmax"):
        make_mechanism("nope", 8, 2)
    # the engine's typed extension points, set by the plug-in packages (which a registry lookup loads)
    plugins.PROBES.names()
    assert plugins.EXTENSIONS.sparse_attend is not None and plugins.EXTENSIONS.per_head is not None
    assert plugins.EXTENSIONS.run_view is not None


def test_make_probe_by_name_and_protocol_probes():
    assert isinstance(probes.make_probe("sink"), probes.SinkProbe)
    names = ["sink", "sink_rate", "entropy", "prev_token", "distance", "waad", "fai", "magnet", "global_sink"]
    assert probes.query_probe_names() == names
    with pytest.raises(ValueError, match="unknown probe 'nope'; valid probe names are: sink, sink_rate"):
        probes.make_probe("nope")
    with pytest.raises(ValueError, match="needs its own input protocol"):
        probes.make_probe("induction")


def test_moved_model_running_helpers_name_their_new_home():
    with pytest.raises(AttributeError, match="moved to headlab.measure.task_embedding"):
        edits.task_embedding  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        edits.nope  # noqa: B018


# ---------------------------------------------------------------- probe classes are the source of role facts
def test_role_thresholds_come_from_the_probe_classes():
    rules = probes.role_rules()
    assert list(rules) == ["sink", "previous-token", "induction", "retrieval", "local", "broad"]
    for role, (metric, rule) in rules.items():
        cls = probes.REGISTRY[metric]
        assert cls.role is rule and cls.formula and cls.paper
        assert atlas.ROLE_RULES[role] == rule.describe(metric)
    assert atlas.ROLE_RULES["sink"] == f"sink >= {probes.SinkProbe.role.threshold:g}"
    assert atlas.role_metrics()["local"] == ("distance", False) and atlas.role_metrics()["sink"] == ("sink", True)
    assert atlas.role_letters() == {
        "sink": "S",
        "previous-token": "P",
        "induction": "I",
        "retrieval": "R",
        "local": "L",
        "broad": "B",
    }
    from headlab.measure.scan import ALL_METRICS, formulas
    from headlab.report.maps import ROLE_METRIC
    from headlab.report.png import ROLE_LETTER

    assert tuple(probes.REGISTRY.names()) == ALL_METRICS
    assert formulas(["entropy"])["entropy"].startswith(probes.EntropyProbe.formula)
    assert atlas.role_metrics() == ROLE_METRIC and atlas.role_letters() == ROLE_LETTER


def _stats(**vals):
    return {k: torch.tensor([[v]], dtype=torch.float64) for k, v in vals.items()}


def test_head_roles_follow_the_class_thresholds_and_overrides(monkeypatch):
    t = probes.SinkProbe.role.threshold
    assert atlas.head_roles(_stats(sink=t), 0, 0) == ["sink"]
    assert atlas.head_roles(_stats(sink=t - 1e-3), 0, 0) == []
    # retrieval is strict (>), the others inclusive (>=, <=)
    assert atlas.head_roles(_stats(retrieval=0.1), 0, 0) == [] and atlas.head_roles(_stats(retrieval=0.11), 0, 0) == ["retrieval"]
    # local needs distance <= 4 and no sink role; broad is relative to the uniform entropy
    assert atlas.head_roles(_stats(distance=4.0, sink=0.1), 0, 0) == ["local"]
    assert atlas.head_roles(_stats(distance=4.0, sink=0.5), 0, 0) == ["sink"]
    assert atlas.head_roles(_stats(entropy=3.0), 0, 0, uniform_entropy=5.0) == ["broad"]
    assert atlas.head_roles(_stats(entropy=2.9), 0, 0, uniform_entropy=5.0) == []
    assert atlas.head_roles(_stats(entropy=3.0), 0, 0) == []  # no reference, no relative role
    # overrides by metric or by role name
    assert atlas.head_roles(_stats(sink=0.25), 0, 0, thresholds={"sink": 0.2}) == ["sink"]
    assert atlas.head_roles(_stats(prev_token=0.3), 0, 0, thresholds={"previous-token": 0.25}) == ["previous-token"]
    assert atlas.role_rules({"distance": 2})["local"].startswith("distance <= 2")
    with pytest.raises(ValueError, match="unknown threshold 'bogus'"):
        atlas.head_roles(_stats(sink=0.5), 0, 0, thresholds={"bogus": 1})
    # changing the class default changes every consumer (one source)
    monkeypatch.setattr(probes.SinkProbe, "role", probes.RoleRule("sink", ">=", 0.9, "S"))
    assert atlas.head_roles(_stats(sink=0.5), 0, 0) == [] and atlas.role_rules()["sink"] == "sink >= 0.9"
    # several roles come in rank order
    monkeypatch.undo()
    assert atlas.head_roles(_stats(sink=0.9, prev_token=0.5, entropy=4.0), 0, 0, 5.0) == ["sink", "previous-token", "broad"]


def test_role_rule_checks_its_operator():
    with pytest.raises(ValueError, match="op '=>' must be one of"):
        probes.RoleRule("x", "=>", 1.0, "X")


# ---------------------------------------------------------------- site keys and layer lists
@pytest.mark.parametrize("layer,head", [(0, 0), (3, 1), (29, 8), (120, 63)])
def test_format_site_parse_site_round_trip(layer, head):
    key = format_site(layer, head)
    assert key == f"L{layer}H{head}" and parse_site(key) == (layer, head) and parse_site(key.lower()) == (layer, head)
    assert parse_site((layer, head)) == (layer, head) and parse_site([layer, head]) == (layer, head)
    assert parse_sites(key, layer + 1, head + 1) == {layer: [head]}


@pytest.mark.parametrize("bad", ["L3", "L3-4H1", "H3", "3", "L-1H0", "LxH1", "", (1,), (1, 2, 3), (True, 1), "L1H2,L3H4"])
def test_parse_site_rejects(bad):
    with pytest.raises(ValueError, match="bad site"):
        parse_site(bad)


def test_parse_sites_grammar_and_errors():
    assert parse_sites("L1-2,L0H1", 4, 3) == {0: [1], 1: [0, 1, 2], 2: [0, 1, 2]}
    assert parse_sites("all", 2, 2) == {0: [0, 1], 1: [0, 1]}
    assert parse_sites([[1, 0], "L0H1"], 2, 2) == {0: [1], 1: [0]}
    with pytest.raises(ValueError, match=r"layer 4 out of range in 'L3-4': valid layers are 0\.\.3"):
        parse_sites("L3-4", 4, 3)
    with pytest.raises(ValueError, match="layer range 'L3-1' is empty"):
        parse_sites("L3-1", 4, 3)
    with pytest.raises(ValueError, match="bad site '3'"):
        parse_sites("3", 4, 3)  # a bare number is a layer list, not a site selector
    assert is_site_term("L3") and is_site_term("L3-5") and is_site_term("l3h1") and is_site_term("all")
    assert not is_site_term("retrieval") and not is_site_term("sink:top5") and not is_site_term("3")


def test_parse_layers_grammar_round_trip_and_errors():
    assert parse_layers("0,14-17, 20", 30) == [0, 14, 15, 16, 17, 20]
    assert parse_layers("L14", 30) == [14] and parse_layers("L14-16,l2", 30) == [2, 14, 15, 16]
    assert parse_layers("every:7", 30) == [0, 7, 14, 21, 28] and parse_layers("none", 30) == parse_layers(" ", 30) == []
    assert parse_layers("all", 3) == [0, 1, 2] and parse_layers("2,1,2", 3) == [1, 2]
    for layers in ([0], [0, 14, 15, 16, 20], [3, 5, 7], list(range(30))):
        assert parse_layers(format_layers(layers), 30) == layers
    assert format_layers([]) == "none" and format_layers([16, 14, 15]) == "L14-16"
    with pytest.raises(ValueError, match=r"layers \[30, 31\] out of range: valid layers are 0\.\.29"):
        parse_layers("28-31", 30)
    for bad, msg in (
        ("L3H1", "bad layer list"),
        ("a,b", "bad layer list"),
        ("5-2", "is empty"),
        ("every:0", "N >= 1"),
        ("every:x", "N >= 1"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_layers(bad, 30)
    with pytest.raises(ValueError, match="must be a string"):
        parse_layers([1, 2], 30)


def test_import_headlab_cli_leaves_torch_out_and_lookups_load_plugins():
    """`headlab --help` must answer at once: importing the package and its CLI loads no torch; the first
    registry lookup loads the plug-ins (in a fresh interpreter, so earlier imports do not hide it)."""
    import subprocess
    import sys

    code = (
        "import sys, headlab, headlab.cli\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
        "from headlab.engine.plugins import PROBES, EXTENSIONS\n"
        "assert 'sink' in PROBES and EXTENSIONS.sparse_attend is not None\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
