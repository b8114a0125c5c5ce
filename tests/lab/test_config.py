"""One home for every lab size: the configuration dataclasses (headlab.lab.config). The run defaults, the
``headlab lab`` option defaults and the ``--smoke`` sizes come from them, and every size a claim registers
agrees with the fields it names, as its command line reaches the experiment."""

from __future__ import annotations

import dataclasses
import inspect
import shlex

import pytest
import typer
from typer.testing import CliRunner

from headlab.cli import lab as cli_lab
from headlab.lab import CONFIGS, EXPERIMENTS, SMOKE
from headlab_repro import claims as C

LAB_CLAIMS = sorted(name for name, c in C.all_claims().items() if c.table == "lab")


def _callbacks() -> dict:
    return {c.name or getattr(c.callback, "__name__", ""): c.callback for c in cli_lab.app.registered_commands}


def test_every_experiment_has_a_config_and_smoke_sizes_of_its_fields():
    assert set(CONFIGS) == set(EXPERIMENTS) == set(SMOKE) == set(_callbacks())
    for name, cls in CONFIGS.items():
        assert name == cls.NAME and name == EXPERIMENTS[name].NAME
        assert set(SMOKE[name]) <= {f.name for f in dataclasses.fields(cls)}, name
        cls.make(**SMOKE[name])  # valid sizes


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cli_option_defaults_are_the_config_defaults(name):
    defaults = CONFIGS[name]()
    for p, v in inspect.signature(_callbacks()[name]).parameters.items():
        if (
            not isinstance(v.default, typer.models.OptionInfo)
            or v.default.hidden
            or p in ("out", "smoke", "threads", "json_out", "quiet")
        ):
            continue
        # every option's parameter is the field it sets (its spelling on the command line may differ: --classes -> K)
        assert v.default.default == getattr(defaults, p), f"{name}: {v.default.param_decls} vs {type(defaults).__name__}.{p}"


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="unknown setting"):
        EXPERIMENTS["moh"].run(step=3, quiet=True)


class _Reached(Exception):
    """Raised by the stand-in ``run``: what the command line handed to the experiment."""


def _config_of(command: str, monkeypatch, tmp_path):
    """The configuration a registered ``headlab lab ...`` command line hands to the experiment (nothing runs)."""
    args = shlex.split(command.replace("{out}", str(tmp_path / "out")))
    assert args[:2] == ["headlab", "lab"], command
    args = args[2:]
    name = next(a for a in args if a in CONFIGS)
    seen = {}

    def stand_in(config=None, *, quiet=False, **overrides):
        seen["config"] = CONFIGS[name].make(config, **overrides)
        raise _Reached

    monkeypatch.setattr(EXPERIMENTS[name], "run", stand_in)
    r = CliRunner().invoke(cli_lab.app, args)
    assert isinstance(r.exception, _Reached), (command, r.output)
    return seen["config"]


@pytest.mark.parametrize("claim", LAB_CLAIMS)
def test_claims_sizes_agree_with_the_config_fields_they_name(claim, monkeypatch, tmp_path):
    c = C.get(claim)
    for lines, size in ((c.command, c.size), (c.smoke, c.smoke_size)):
        for line in lines:
            cfg = _config_of(line, monkeypatch, tmp_path)
            got = dataclasses.asdict(cfg)
            for k, v in size.items():
                assert k in got, f"{claim}: size names {k!r}, not a field of {type(cfg).__name__}"
                have = list(got[k]) if isinstance(got[k], tuple) else got[k]
                assert have == v, f"{claim}: `{line}` gives {k}={have!r}, the registered size is {k}={v!r}"
            if "name" in got:
                assert got["name"] == claim, f"{claim}: `{line}` names the run {got['name']!r}"
