"""Cleaning rules: HTML → visible text, newline normalisation, NFC, control characters.

Each rule is on by default, can be switched off in `data.clean`, and counts the
documents it changed so the prepare report says what happened to the corpus.
Code whitespace (indentation, tabs, runs of spaces) is never touched outside
HTML: `\\t` and `\\n` survive control-character removal and nothing strips lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from html.parser import HTMLParser

from clusterlm.config.data import CleanConfig

# C0 and C1 control characters except \t (0x09) and \n (0x0a). \r is included: the
# newline rule turns it into \n first when it is on.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# \r\n, lone \r, NEL and the Unicode line/paragraph separators all mean "new line".
_NEWLINE_RE = re.compile("\r\n?|[\x85\u2028\u2029]")
_NEWLINE_CHARS = ("\r", "\x85", "\u2028", "\u2029")


def normalize_newlines(text: str) -> str:
    if any(c in text for c in _NEWLINE_CHARS):
        return _NEWLINE_RE.sub("\n", text)
    return text


def remove_control_chars(text: str) -> tuple[str, int]:
    """Drop control characters except \\n and \\t; returns (text, number removed)."""
    if _CONTROL_RE.search(text) is None:
        return text, 0
    return _CONTROL_RE.subn("", text)


def nfc(text: str) -> str:
    # The check is a fast scan; most text is already NFC and needs no copy.
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


class Cleaner:
    """Apply the configured rules to one document, counting what each rule changed."""

    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg
        # rule name → documents it changed (control_chars_removed counts characters).
        self.counts: Counter[str] = Counter()

    def __call__(self, text: str, is_html: bool = False) -> str:
        cfg = self.cfg
        if is_html and cfg.html:
            text = html_to_text(text)
            self.counts["html"] += 1
        if cfg.newlines:
            out = normalize_newlines(text)
            if out is not text:
                self.counts["newlines"] += 1
            text = out
        if cfg.nfc:
            out = nfc(text)
            if out is not text:
                self.counts["nfc"] += 1
            text = out
        if cfg.control_chars:
            text, removed = remove_control_chars(text)
            if removed:
                self.counts["control_chars"] += 1
                self.counts["control_chars_removed"] += removed
        return text

    def drop_reason(self, text: str) -> str | None:
        """Why a cleaned document is dropped (before dedup), or None to keep it."""
        if not text.strip():
            return "empty"
        if len(text) < self.cfg.min_chars:
            return "too_short"
        return None


# ---------------------------------------------------------------- HTML → visible text

# Elements whose content is never rendered as text.
_SKIP = frozenset({"script", "style", "noscript", "template", "title", "svg", "math", "iframe", "object", "head"})
# Elements that start a new line when they open or close.
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody",
        "tfoot", "thead", "tr", "ul", "body", "html",
    }
)
_CELL = frozenset({"td", "th"})
_PREFORMATTED = frozenset({"pre", "textarea", "listing", "plaintext"})
# Void elements have no end tag: they must not open a skip/pre scope.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
_WS_RE = re.compile(r"\s+")
_TRAILING_WS_RE = re.compile(r"[ \t]+\n")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")


class _VisibleText(HTMLParser):
    """Collect the text a browser would show, with block elements as line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        # A document that never closes <head> would hide everything; <body> ends it.
        self.in_head = False

    def _newline(self) -> None:
        if self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and self.in_head:
            self.in_head = False
            self.skip_depth = max(0, self.skip_depth - 1)
        if tag in _SKIP and tag not in _VOID:
            self.skip_depth += 1
            self.in_head = self.in_head or tag == "head"
            return
        if tag in _BLOCK:
            self._newline()
        elif tag in _CELL and self.parts and not self.parts[-1].endswith(("\n", "\t")):
            self.parts.append("\t")
        if tag in _PREFORMATTED:
            self.pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            if self.skip_depth:
                self.skip_depth -= 1
            if tag == "head":
                self.in_head = False
            return
        if tag in _PREFORMATTED and self.pre_depth:
            self.pre_depth -= 1
        if tag in _BLOCK:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            self.parts.append(data)
            return
        # Outside <pre>, whitespace (including &nbsp;) collapses to one space, as rendered.
        text = _WS_RE.sub(" ", data)
        if not self.parts or self.parts[-1].endswith(("\n", "\t")):
            text = text.lstrip(" ")
        if text:
            self.parts.append(text)


class MalformedHTML(ValueError):
    """Markup the stdlib parser gives up on (it asserts on e.g. `<![foo[ … ]]>`)."""


def html_to_text(html: str) -> str:
    """Visible text of an HTML document: scripts/styles dropped, blocks → newlines."""
    parser = _VisibleText()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError) as exc:
        raise MalformedHTML(str(exc)) from None
    text = "".join(parser.parts)
    text = _TRAILING_WS_RE.sub("\n", text)
    return _MANY_NEWLINES_RE.sub("\n\n", text).strip("\n")
