import pytest

from dmha.config import ConfigError, load, to_dict, from_dict


def test_defaults_follow_the_paper():
    c = load()
    assert (c.model.attention, c.model.heads, c.model.hidden_layers, c.model.hidden_dim) == ("standard", 4, 4, 512)
    assert (c.train.batch_size, c.train.max_epochs, c.train.crop_s, c.loss) == (32, 20, 5.5, "wce")
    assert c.train.focal_gamma == 2.0 and c.model.dropout == 0.1


def test_toml_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('seed = 3\nloss = "focal"\n[model]\nattention = "subvector"\n[train]\nlr = 1e-3\n')
    c = load(f, ["train.max_epochs=2", "model.heads=8", "encoders.speech=some/dir", "train.lr=2"])
    assert (c.seed, c.loss, c.model.attention, c.model.heads, c.train.max_epochs) == (3, "focal", "subvector", 8, 2)
    assert c.encoders.speech == "some/dir" and c.train.lr == 2.0
    assert from_dict(to_dict(c)) == c


@pytest.mark.parametrize("override, message", [
    (["model.atention=standard"], "unknown config key model.atention"),
    (["model.heads=two"], "model.heads must be int"),
    (["model.heads=0"], "model.heads must be > 0"),
    (["loss=hinge"], "loss must be one of wce, focal"),
    (["model.dropout=1.5"], "model.dropout"),
    (["noequals"], "expected key=value"),
    (["train.batch_size=true"], "must be int"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load(None, override)


def test_bad_toml_names_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load(f)


def test_augmentation_keys():
    c = load(None, ["aug.enabled=true", "aug.speeds=[0.95, 1, 1.05]", "aug.cached_copies=2"])
    assert c.aug.enabled and c.aug.speeds == [0.95, 1.0, 1.05] and c.aug.cached_copies == 2
    assert from_dict(to_dict(c)) == c
    with pytest.raises(ConfigError, match=r"aug.speeds\[1\] must be float"):
        load(None, ['aug.speeds=[1.0, "x"]'])
    with pytest.raises(ConfigError, match="aug.p must be in"):
        load(None, ["aug.p=2.0"])
    with pytest.raises(ConfigError, match="features.mode must be one of"):
        load(None, ["features.mode=sometimes"])


def test_precision_auto_follows_the_hardware(monkeypatch):
    from dmha import training

    monkeypatch.setattr(training, "_cpu_has_bf16", lambda: False)
    assert training.resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(training, "_cpu_has_bf16", lambda: True)
    assert training.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert training.resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit settings are kept
    with pytest.raises(ConfigError, match="train.precision"):
        load(None, ["train.precision=fp8"])


def _documented_config_table() -> dict[str, str]:
    """{key: default cell} from the configuration table (docs/guide/configuration.md); `a.x` / `y` rows share a's section,
    and a default cell `v1 / v2` gives one value per key (one value alone: every key of the row)."""
    import re
    from pathlib import Path

    section = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "configuration.md").read_text(encoding="utf-8")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = [k.strip().strip("`") for k in cells[0].split("/")]
        keys = [k if "." in k or i == 0 else f"{keys[0].rpartition('.')[0]}.{k}" for i, k in enumerate(keys)]
        values = [v.strip() for v in re.split(r"\s+/\s+", cells[1])]
        values = values if len(values) == len(keys) else values * len(keys)
        assert len(values) == len(keys), line
        rows.update(zip(keys, values))
    return rows


def _as_written(value) -> set[str]:
    """The ways the configuration page may write a default."""
    import json

    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, (int, float)):
        return {f"{value:g}", repr(value), str(value), f"{value:.0e}".replace("e-0", "e-")}  # 5e-4
    if isinstance(value, dict):
        return {json.dumps(value), "{}" if not value else json.dumps(value)}
    if isinstance(value, list):
        return {json.dumps(value), json.dumps(value, separators=(",", ":")), str(value).replace("'", '"')}
    return {f"`{value}`", value, '""' if value == "" else value}


def test_the_configuration_page_lists_every_key_with_its_default():
    from dmha.config import Config

    documented = _documented_config_table()
    flat = {}
    for section, values in to_dict(Config()).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    assert sorted(set(flat) - set(documented)) == [], "keys missing from the configuration table"
    assert sorted(set(documented) - set(flat)) == [], "the configuration table names keys that do not exist"
    written_elsewhere = {"features.cache_dir": "`$DMHA_HOME/features`"}  # the empty default means this folder
    for key, value in flat.items():
        cell = documented[key]
        assert cell == written_elsewhere.get(key) or cell.strip("`") in _as_written(value) or cell in _as_written(value), \
            f"docs/guide/configuration.md: {key} default {cell!r}, the code's is {value!r}"
