"""Question/answer pairs from the docstrings of the Python standard library on this machine.

For every public module, class, function and method with a docstring:

    question  "What does `json.JSONDecoder.decode` do?"     ("… the `json.decoder` module …" for modules)
    answer    the docstring's first sentence: its first paragraph up to the first ". " (or all of
              it when it has no full stop), whitespace collapsed

Sources are parsed with `ast` (nothing is imported, so no module's side effects run). Kept
answers have 4–40 words; a first paragraph that is a call signature ("join(a, *p) -> str",
common in C-accelerated modules' docs) is skipped. The split is by top-level module, so the
test questions are about modules never seen in fine-tuning. `docs.jsonl` is the retrieval
baseline's index: every entry's qualified name and full docstring, with its answer — the
documentation of all modules, test modules included (an open-book baseline; note that a
model pretrained on the standard library has also read those docstrings).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from clusterlm.data.corpus import corpus_paths, stdlib_dir
from clusterlm.finetune.jsonl import write_jsonl
from clusterlm.finetune.splits import SPLITS, assign_splits
from clusterlm.fsio import atomic_dir, atomic_write_json

_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])[.!?](\s|$)")


def first_sentence(docstring: str) -> str | None:
    """The first sentence of a docstring's first paragraph, or None if it is not a usable answer."""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    lines = [line.strip() for line in paragraph.splitlines()]
    if not lines or _SIGNATURE.match(lines[0]):
        return None
    text = " ".join(" ".join(lines).split())
    match = _SENTENCE_END.search(text)
    sentence = text[: match.start() + 1] if match else text
    if not 4 <= len(sentence.split()) <= 40:
        return None
    return sentence


def module_name(path: Path, root: Path) -> str | None:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or any(p.startswith("_") for p in parts):
        return None  # private modules are not documentation users ask about
    return ".".join(parts)


def _entries(tree: ast.Module, module: str) -> list[tuple[str, str, str]]:
    """(question, qualified name, docstring) for the module and its public definitions."""
    out = []
    doc = ast.get_docstring(tree)
    if doc:
        out.append((f"What does the `{module}` module do?", module, doc))
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        name = f"{module}.{node.name}"
        doc = ast.get_docstring(node)
        if doc:
            out.append((f"What does `{name}` do?", name, doc))
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    method_doc = ast.get_docstring(item)
                    if method_doc:
                        out.append((f"What does `{name}.{item.name}` do?", f"{name}.{item.name}", method_doc))
    return out


def collect_qa(root: Path) -> list[dict[str, str]]:
    """Every usable (question, answer) of the sources under `root`, one per qualified name."""
    records, seen = [], set()
    for path in corpus_paths(root):
        if path.suffix != ".py" or (module := module_name(path, root)) is None:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for question, name, doc in _entries(tree, module):
            answer = first_sentence(doc)
            if answer is None or name in seen:
                continue
            seen.add(name)
            records.append({"prompt": question, "response": answer, "module": module.split(".")[0],
                            "name": name, "document": f"{name} {doc}"})
    return records


def build_qa_data(out: str | Path, root: str | Path | None = None, *, val_fraction: float = 0.1,
                  test_fraction: float = 0.1, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write `out/{train,val,test}.jsonl` (`prompt`, `response`, `module`), `docs.jsonl` and report.json."""
    root = Path(root) if root else stdlib_dir()
    records = collect_qa(root)
    sizes: dict[str, int] = {}
    for r in records:
        sizes[r["module"]] = sizes.get(r["module"], 0) + 1
    split_of = assign_splits(sizes, val_fraction, test_fraction, seed)
    rows: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for r in records:
        rows[split_of[r["module"]]].append({k: r[k] for k in ("prompt", "response", "module")})
    docs = [{"name": r["name"], "document": r["document"], "answer": r["response"]} for r in records]
    report = {"root": str(root), "pairs": {s: len(rows[s]) for s in SPLITS}, "documents": len(docs),
              "seed": seed, "split_modules": {s: sorted(m for m, x in split_of.items() if x == s) for s in SPLITS}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", rows[split])
        write_jsonl(tmp / "docs.jsonl", docs)
        atomic_write_json(tmp / "report.json", report)
    return report
