"""README.md and RESULTS.md carry exactly the tables `hqg report` makes from the committed records in results/."""
import re
from pathlib import Path

from hqg.app.cli import main
from hqg.app.report import BLOCKS, load_records, update_docs

ROOT = Path(__file__).resolve().parents[1]


def test_results_tables_match_their_records(capsys):
    assert update_docs(check=True) == [], "a results table differs from results/*.json: run `hqg report`"
    assert main(["report", "--check"]) == 0 and "every results block matches" in capsys.readouterr().out


def test_every_record_is_shown_and_every_table_is_generated():
    recs = load_records()
    text = (ROOT / "RESULTS.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"<!-- report:([\w-]+) -->", text))
    assert set(recs) <= shown <= set(BLOCKS), (sorted(recs), sorted(shown))
    assert "<!-- report:summary -->" in (ROOT / "README.md").read_text(encoding="utf-8")
    for rec in recs.values():  # each record says how it was made
        assert rec["source"]["note"] and rec["source"]["file"].endswith(".json")
    # no markdown table outside the generated blocks, except the notation/paper tables of README and none in RESULTS
    outside = re.sub(r"<!-- report:([\w-]+) -->.*?<!-- /report:\1 -->", "", text, flags=re.S)
    assert not [l for l in outside.splitlines() if l.startswith("|")], "RESULTS.md has a typed table"


def test_check_fails_on_a_hand_edited_number(tmp_path, capsys):
    for name in ("README.md", "RESULTS.md"):
        (tmp_path / name).write_text((ROOT / name).read_text(encoding="utf-8"), encoding="utf-8")
    p = tmp_path / "RESULTS.md"; text = p.read_text(encoding="utf-8")
    block = re.search(r"<!-- report:demo -->.*?<!-- /report:demo -->", text, flags=re.S).group(0)
    p.write_text(text.replace(block, re.sub(r"\d+\.\d\d \|", "99.99 |", block, count=1)), encoding="utf-8")
    assert update_docs(check=True, root=tmp_path) == ["RESULTS.md: demo"]
