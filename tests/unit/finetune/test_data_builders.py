"""The offline dataset builders: .mo reading, cleaning, group splits, stdlib QA and classes."""

from __future__ import annotations

import gettext
import json

import pytest

from clusterlm.cli.main import main
from clusterlm.errors import DataError
from clusterlm.finetune.data_classify import build_classification_data, snippets
from clusterlm.finetune.data_qa import build_qa_data, first_sentence
from clusterlm.finetune.data_translate import build_translation_data, clean_pair, read_mo
from clusterlm.finetune.splits import assign_splits
from fthelp import write_catalog

PAIRS = [("Open file", "打开文件"), ("Cannot read %s", "无法读取 %s"), ("%s: %s", "%s：%s"),
         ("GTK", "GTK"), ("Line one\nLine two", "第一行\n第二行"), ("ctx\x04Save", "保存"),
         ("%d file\x00%d files", "%d 个文件")]


def test_read_mo_agrees_with_pythons_gettext(tmp_path):
    path = write_catalog(tmp_path / "x.mo", PAIRS)
    pairs = dict(read_mo(path))
    with open(path, "rb") as fh:
        catalog = gettext.GNUTranslations(fh)
    assert pairs["Open file"] == catalog.gettext("Open file") == "打开文件"
    assert pairs["Save"] == catalog.pgettext("ctx", "Save") == "保存"
    assert pairs["%d file"] == catalog.ngettext("%d file", "%d files", 1) == "%d 个文件"
    assert "" not in pairs  # the header entry is skipped
    with pytest.raises(DataError, match="bad magic"):
        (tmp_path / "bad.mo").write_bytes(b"\0" * 40)
        read_mo(tmp_path / "bad.mo")


def test_cleaning_reasons():
    assert clean_pair(" Open file\n", "打开文件 ", 100) == ("Open file", "打开文件")
    assert clean_pair("%s: %s", "%s：%s", 100) == "format_only"
    assert clean_pair("GTK", "GTK", 100) == "untranslated"
    assert clean_pair("Line one\nLine two", "第一行\n第二行", 100) == "multiline"
    assert clean_pair("Open file", "打开文件" * 30, 100) == "too_long"


def test_group_split_is_seeded_and_keeps_groups_whole():
    sizes = {f"g{i}": 10 + i for i in range(20)}
    split = assign_splits(sizes, 0.1, 0.2, seed=3)
    assert split == assign_splits(sizes, 0.1, 0.2, seed=3)
    assert set(split.values()) == {"train", "val", "test"}
    total = sum(sizes.values())
    test = sum(n for g, n in sizes.items() if split[g] == "test")
    assert 0.2 * total <= test <= 0.4 * total + max(sizes.values())
    with pytest.raises(DataError, match="too few groups"):
        assign_splits({"a": 5, "b": 5}, 0.1, 0.2)


def test_translation_split_is_by_catalog_and_test_sources_are_unseen(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    for k in range(8):
        pairs = [(f"Open {w} {k}", f"打开 {w} {k}") for w in words] + [("Shared message", "共享消息")]
        write_catalog(tmp_path / "locale" / f"app{k}.mo", pairs)
    report = build_translation_data(tmp_path / "out", [str(tmp_path / "locale" / "*.mo")], val_fraction=0.15,
                                    test_fraction=0.25)
    rows = {s: [json.loads(x) for x in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    catalogs = {s: {r["catalog"] for r in rows[s]} for s in rows}
    assert not (catalogs["train"] & catalogs["test"]) and not (catalogs["train"] & catalogs["val"])
    train_sources = {r["prompt"] for r in rows["train"]}
    assert not train_sources & {r["prompt"] for r in rows["test"] + rows["val"]}
    assert report["dropped"]["duplicate"] == 7  # "Shared message" kept once of 8
    assert report["pairs"]["test"] == len(rows["test"]) > 0


def test_data_cli_translate_refuses_when_nothing_is_found(tmp_path, capsys):
    code = main(["finetune", "data", "translate", str(tmp_path / "none" / "*.mo"), "--out", str(tmp_path / "o")])
    assert code == 2 and capsys.readouterr().err.startswith("error: no zh_CN gettext catalogs")
    assert not (tmp_path / "o").exists()


def _source_tree(root):
    for pkg in ("alpha", "beta", "gamma"):
        for i in range(6):
            path = root / pkg / f"mod{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            body = "\n".join(f"    value_{pkg}_{j} = {j} * {i}  # some {pkg} code" for j in range(30))
            path.write_text(
                f'"""The {pkg} module number {i} does useful things. More text follows here."""\n\n'
                f"def run_{i}(x):\n"
                f'    """Run the {pkg} job number {i} on x and return it."""\n'
                f"{body}\n    return x\n\n"
                f"class Tool{i}:\n"
                f'    """A tool for {pkg} work of kind {i}."""\n\n'
                "    def use(self):\n"
                '        """Use the tool once and report back."""\n'
                "        return 1\n", encoding="utf-8")
    return root


def test_qa_builder_questions_answers_and_module_split(tmp_path):
    root = _source_tree(tmp_path / "src")
    report = build_qa_data(tmp_path / "qa", root, val_fraction=0.3, test_fraction=0.3)
    rows = {s: [json.loads(x) for x in (tmp_path / "qa" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    modules = {s: {r["module"] for r in rows[s]} for s in rows}
    assert all(len(m) == 1 for m in modules.values()) and len(set.union(*modules.values())) == 3
    question = {r["prompt"]: r["response"] for s in rows for r in rows[s]}
    assert question["What does `alpha.mod2.run_2` do?"] == "Run the alpha job number 2 on x and return it."
    assert question["What does the `beta.mod0` module do?"] == "The beta module number 0 does useful things."
    assert question["What does `gamma.mod1.Tool1.use` do?"] == "Use the tool once and report back."
    assert report["documents"] == sum(report["pairs"].values())


def test_first_sentence_rules():
    assert first_sentence("Return the sum of a and b. Raise on overflow.") == "Return the sum of a and b."
    assert first_sentence("join(a, *p) -> str\n\nJoin paths.") is None  # a signature line
    assert first_sentence("Short.") is None
    assert first_sentence("Wrap the text\n   over two lines without a stop") == "Wrap the text over two lines without a stop"


def test_classification_builder_labels_by_package_and_splits_by_file(tmp_path):
    root = _source_tree(tmp_path / "src")
    report = build_classification_data(tmp_path / "cls", root, min_files=5, max_chars=300, min_chars=50,
                                       val_fraction=0.2, test_fraction=0.2)
    assert report["labels"] == ["alpha", "beta", "gamma"]
    rows = {s: [json.loads(x) for x in (tmp_path / "cls" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    files = {s: {r["file"] for r in rows[s]} for s in rows}
    assert not (files["train"] & files["test"]) and not (files["train"] & files["val"])
    assert all({r["label"] for r in rows[s]} == {"alpha", "beta", "gamma"} for s in rows)
    assert all(r["file"].startswith(r["label"] + "/") for s in rows for r in rows[s])
    assert all(len(p) <= 300 for p in snippets("x = 1\n" * 200, 300, 10))
