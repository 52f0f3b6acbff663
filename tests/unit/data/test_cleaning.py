from __future__ import annotations

import unicodedata

from clusterlm.config.data import CleanConfig
from clusterlm.data.clean import Cleaner, html_to_text, nfc, normalize_newlines, remove_control_chars


def test_html_drops_scripts_styles_and_head_and_breaks_blocks():
    html = (
        "<!doctype html><html><head><title>Page title</title><style>p {color: red}</style>"
        "<script>var hidden = 1;</script></head><body><h1>Heading</h1><p>First   paragraph\n with "
        "<b>bold</b> &amp; entity&nbsp;text.</p><div>Second<br>line</div><noscript>no js</noscript>"
        "<ul><li>one</li><li>two</li></ul></body></html>"
    )
    text = html_to_text(html)
    assert text == "Heading\nFirst paragraph with bold & entity text.\nSecond\nline\none\ntwo"
    for hidden in ("Page title", "color", "hidden", "no js"):
        assert hidden not in text


def test_html_pre_keeps_code_whitespace():
    text = html_to_text("<p>code:</p><pre>def f(x):\n    return  x\n\tpass</pre><p>after</p>")
    assert "def f(x):\n    return  x\n\tpass" in text
    assert text.endswith("after")


def test_html_unclosed_head_does_not_hide_body():
    assert html_to_text("<html><head><title>t</title><body><p>visible body</p>") == "visible body"


def test_html_table_cells_are_tab_separated():
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == "a\tb\nc"


def test_newlines_are_normalized():
    assert normalize_newlines("a\r\nb\rc\u2028d\x85e\nf") == "a\nb\nc\nd\ne\nf"
    same = "no carriage returns\n"
    assert normalize_newlines(same) is same


def test_nfc_composes():
    decomposed = "Cafe\u0301 n\u0303"
    assert nfc(decomposed) == "Café ñ"
    assert unicodedata.is_normalized("NFC", nfc(decomposed))


def test_control_chars_removed_except_newline_and_tab():
    text, removed = remove_control_chars("a\x00b\x07c\td\ne\x1bf\x7fg\x9fh")
    assert text == "abc\td\nefgh"
    assert removed == 5


def test_code_whitespace_preserved_end_to_end():
    code = "def f():\n\tif x:\n        return  1   \n\n\n    # trailing   \n"
    assert Cleaner(CleanConfig())(code) == code


def test_emoji_zwj_sequences_survive_cleaning():
    # ZWJ (U+200D) is a format character, not a control character: family emoji stay intact.
    family = "family: 👩\u200d👩\u200d👧 and 大规模语言模型从理论到实践"
    assert Cleaner(CleanConfig())(family) == family


def test_cleaner_counts_each_rule():
    cleaner = Cleaner(CleanConfig())
    cleaner("<p>x</p>", is_html=True)
    cleaner("a\r\nb")
    cleaner("e\u0301")
    cleaner("a\x00\x01b")
    cleaner("untouched")
    assert cleaner.counts["html"] == 1
    assert cleaner.counts["newlines"] == 1
    assert cleaner.counts["nfc"] == 1
    assert cleaner.counts["control_chars"] == 1
    assert cleaner.counts["control_chars_removed"] == 2


def test_rules_can_be_switched_off():
    cfg = CleanConfig(html=False, nfc=False, control_chars=False, newlines=False)
    raw = "<p>a</p>\r\ne\u0301\x00"
    assert Cleaner(cfg)(raw, is_html=True) == raw


def test_drop_reasons_min_chars_and_empty():
    cleaner = Cleaner(CleanConfig(min_chars=10))
    assert cleaner.drop_reason("short") == "too_short"
    assert cleaner.drop_reason(" \n\t ") == "empty"
    assert cleaner.drop_reason("long enough text") is None
    assert Cleaner(CleanConfig(min_chars=0)).drop_reason("") == "empty"
