"""`dmha prepare msp-podcast` and `dmha predict --format challenge` (Odyssey 2024 submission CSV)."""
import csv

from conftest import write_tone_corpus
from dmha.cli import main


def test_predict_writes_challenge_csv(tiny_encoders, tmp_path, capsys):
    manifest = write_tone_corpus(tmp_path / "c", n_per_class=4, labels=("angry", "neutral"))
    sets = [f"encoders.speech={tiny_encoders['speech']}", f"encoders.text={tiny_encoders['text']}",
            f"features.cache_dir={tmp_path / 'cache'}", "train.max_epochs=1", "model.hidden_layers=1"]
    assert main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "run"),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    files = sorted(str(p) for p in (tmp_path / "c").glob("*.wav"))[:3]
    out = tmp_path / "submission.csv"
    assert main(["predict", str(tmp_path / "run" / "model"), *files, "--format", "challenge", "--out", str(out),
                 *[a for f in files for a in ("--transcript", "hello")]]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["FileName", "EmoClass"] and len(rows) == 4
    assert all(r[1] in {"A", "N"} and "/" not in r[0] for r in rows[1:])
    assert "wrote" in capsys.readouterr().out


def test_prepare_msp_podcast_cli(tmp_path, capsys):
    from helpers import make_tree  # the generated Odyssey 2024 layout

    root = make_tree(tmp_path / "msp")
    assert main(["prepare", "msp-podcast", str(root), "--out", str(tmp_path / "m.csv")]) == 0
    assert "items" in capsys.readouterr().out
