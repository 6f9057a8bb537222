"""Document parsers: each format's sections, titles, heading paths and page numbers; text
decoding; the content type of an upload; and the errors a user sees for a bad file."""

from __future__ import annotations

import json
import random

import pytest
from fpdf import FPDF

from services.knowledge.parsers import (
    SUPPORTED,
    ParsedDocument,
    ParseError,
    Section,
    UnsupportedType,
    parse,
    resolve_content_type,
    supported_types,
)
from services.knowledge.parsers.pdf import _paragraphs

PLAIN, MARKDOWN, HTML, PDF, JSONL = "text/plain", "text/markdown", "text/html", "application/pdf", "application/jsonl"


def texts(document: ParsedDocument) -> list[str]:
    return [section.text for section in document.sections]


def pdf_bytes(pages: list[list[str]], title: str = "", **encryption: str) -> bytes:
    """A PDF printing each page's lines one under another."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    if title:
        pdf.set_title(title)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    if encryption:
        pdf.set_encryption(**encryption)
    return bytes(pdf.output())


# -- content types ------------------------------------------------------------------------


def test_the_canonical_types():
    extensions = {extension for found in SUPPORTED.values() for extension in found}
    # What a company keeps: text, Office and OpenDocument files, spreadsheets, e-mail, e-books, scans.
    assert extensions == {".txt", ".text", ".log", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl", ".ndjson",
                          ".docx", ".odt", ".pptx", ".odp", ".xlsx", ".xlsm", ".xls", ".ods", ".csv", ".tsv",
                          ".eml", ".msg", ".epub", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
    # Each extension names one type, and the types clients are told of are these.
    assert len(extensions) == sum(len(found) for found in SUPPORTED.values())
    assert {t.content_type: t.extensions for t in supported_types()} == SUPPORTED
    assert "image/jpg" in next(t for t in supported_types() if t.content_type == "image/jpeg").aliases


@pytest.mark.parametrize(
    ("filename", "declared", "resolved"),
    [
        ("notes", "text/markdown; charset=utf-8", MARKDOWN),
        ("notes", " Text/HTML ; charset=GBK", HTML),
        ("notes", "text/x-markdown", MARKDOWN),
        ("page", "application/xhtml+xml", HTML),
        ("rows", "application/x-ndjson", JSONL),
        ("rows", "application/x-jsonlines", JSONL),
        ("scan", "application/x-pdf", PDF),
        # The declaration wins over the extension...
        ("page.txt", "text/html", HTML),
        # ...unless it says nothing: octet-stream, nothing at all, or the text/plain clients send for any text.
        ("report.PDF", "application/octet-stream", PDF),
        ("rows.ndjson", "", JSONL),
        ("README.md", "text/plain; charset=utf-8", MARKDOWN),
        ("C:\\Users\\me\\page.htm", "", HTML),
        ("server.log", "application/octet-stream", PLAIN),
        # text/plain stands when the extension names nothing supported.
        ("data.csv", "text/plain", "text/csv"),
        ("data.sql", "text/plain", PLAIN),
        ("LICENSE", "text/plain", PLAIN),
        # An unsupported declaration falls back to the extension.
        ("rows.jsonl", "application/json", JSONL),
    ],
)
def test_resolve_content_type(filename, declared, resolved):
    assert resolve_content_type(filename, declared) == resolved


@pytest.mark.parametrize(
    ("filename", "declared"),
    [
        ("memo.doc", "application/msword"),
        ("setup.exe", "application/octet-stream"),
        ("setup.exe", ""),
        ("archive", ""),
    ],
)
def test_unsupported_types_name_what_is_supported(filename, declared):
    with pytest.raises(UnsupportedType) as raised:
        resolve_content_type(filename, declared)
    message = str(raised.value)
    assert filename in message
    for extension in (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl", ".ndjson"):
        assert extension in message


def test_parse_refuses_an_unknown_type_and_accepts_aliases():
    with pytest.raises(UnsupportedType, match=r"\.pdf"):
        parse(b"PK\x03\x04", "application/zip")
    assert texts(parse(b"# T\n\nbody", "text/x-markdown; charset=utf-8")) == ["body"]


# -- text decoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("Le café est très bon. Où est la bibliothèque?".encode("latin-1"),
         "Le café est très bon. Où est la bibliothèque?"),
        ("Der Bär läuft über die Straße.".encode("latin-1"), "Der Bär läuft über die Straße."),
        ("中文文本，这是一个测试。我们需要确认编码检测能够正常工作。".encode("gbk"),
         "中文文本，这是一个测试。我们需要确认编码检测能够正常工作。"),
        ("Привет, как дела? Это проверка кодировки.".encode("cp1251"), "Привет, как дела? Это проверка кодировки."),
        ("\ufeffwith a BOM, 中文".encode("utf-8"), "with a BOM, 中文"),
        ("UTF-16 with a BOM, 中文".encode("utf-16"), "UTF-16 with a BOM, 中文"),
    ],
)
def test_text_in_other_encodings_decodes(content, text):
    assert texts(parse(content, PLAIN)) == [text]


@pytest.mark.parametrize("content_type", [PLAIN, MARKDOWN, HTML, JSONL])
def test_binary_garbage_is_not_text(content_type):
    garbage = random.Random(7).randbytes(4000)
    with pytest.raises(ParseError, match="is not text"):
        parse(garbage, content_type)
    with pytest.raises(ParseError, match="is not text"):
        parse(b"\x00\x01\x02\x03" * 200, content_type)


@pytest.mark.parametrize("content_type", [PLAIN, MARKDOWN, HTML])
@pytest.mark.parametrize("content", [b"", b" \r\n\t\n", "\u3000\n".encode()])
def test_a_document_without_text_is_an_error(content_type, content):
    with pytest.raises(ParseError, match="the document has no text"):
        parse(content, content_type)


# -- plain text ----------------------------------------------------------------------------


def test_plain_text_paragraphs():
    content = b"  First paragraph,\r\n  two lines.  \r\n\r\n \t \r\n\r\nSecond.\rStill second.\n\n\n"
    document = parse(content, PLAIN)
    assert document == ParsedDocument("", [Section("  First paragraph,\n  two lines."),
                                           Section("Second.\nStill second.")])


def test_plain_chinese_text():
    content = "第一段的第一行。\n第一段的第二行。\n\n第二段：中文文本。".encode()
    assert texts(parse(content, PLAIN)) == ["第一段的第一行。\n第一段的第二行。", "第二段：中文文本。"]


# -- Markdown ------------------------------------------------------------------------------

MARKDOWN_GUIDE = """\
# The *Guide*

Intro, over
two lines.

## Install `pip`

- one
- two
  - nested

```python
def f():
    return 1
```

### Details

| a | b |
|---|---|
| 1 | 2 |

## Use

---

> quoted
> # not a heading of the document

<div>raw html</div>

Second H1
=========

After.
"""


def test_markdown_sections_keep_their_source_under_their_heading_path():
    document = parse(MARKDOWN_GUIDE.encode(), MARKDOWN)
    assert document.title == "The Guide"
    assert document.sections == [
        Section("Intro, over\ntwo lines.", ("The Guide",)),
        Section("- one\n- two\n  - nested", ("The Guide", "Install pip")),
        Section("```python\ndef f():\n    return 1\n```", ("The Guide", "Install pip")),
        Section("| a | b |\n|---|---|\n| 1 | 2 |", ("The Guide", "Install pip", "Details")),
        # A new H2 replaces the previous one and drops the H3 under it; the rule says nothing.
        Section("> quoted\n> # not a heading of the document", ("The Guide", "Use")),
        Section("<div>raw html</div>", ("The Guide", "Use")),
        Section("After.", ("Second H1",)),
    ]


def test_markdown_chinese_and_a_document_of_headings_only():
    document = parse("# 指南\n\n## 安装\n\n中文段落，\n第二行。\n".encode(), MARKDOWN)
    assert document == ParsedDocument("指南", [Section("中文段落，\n第二行。", ("指南", "安装"))])
    # With no body at all the headings themselves are the text, rather than nothing.
    only_headings = parse(b"## Draft\n\n# Title\n", MARKDOWN)
    assert only_headings == ParsedDocument("Title", [Section("Draft", ("Draft",)), Section("Title", ("Title",))])


# -- HTML ----------------------------------------------------------------------------------

HTML_PAGE = """\
<!DOCTYPE html>
<html><head>
  <title> The   Page | Site </title>
  <style>p { color: red }</style>
  <script>var secret = "script text";</script>
</head><body>
<noscript>enable scripts</noscript><template><p>template text</p></template>
<iframe src="x">iframe text</iframe><svg><title>icon</title><text>svg text</text></svg>
<!-- a comment -->
<h1>Top<br><small>level</small></h1>
<p>Hello <b>bold</b>
   <a href="#">world</a>!</p>
<div>loose text<p>inner paragraph</p>tail text</div>
<h2>Lists</h2>
<ul><li>one</li><li><p>two</p><ul><li>deep</li></ul></li></ul>
<ol><li>first</li><li>second</li></ol>
<h3>Table</h3>
<table><tr><th>name</th><th>value</th></tr><tr><td>a</td><td>1</td></tr></table>
<h2>Code</h2>
<pre>
def f():
    return  1
</pre>
<p>line one<br>line two</p>
<blockquote><p>quoted</p><p>twice</p></blockquote>
<script>document.write("late script")</script>
</body></html>
"""


def test_html_blocks_under_their_heading_path():
    document = parse(HTML_PAGE.encode(), HTML)
    assert document.title == "The Page | Site"
    assert document.sections == [
        Section("Hello bold world!", ("Top level",)),
        Section("loose text", ("Top level",)),
        Section("inner paragraph", ("Top level",)),
        Section("tail text", ("Top level",)),
        Section("- one\n- two\n  - deep", ("Top level", "Lists")),
        Section("1. first\n2. second", ("Top level", "Lists")),
        Section("name | value\na | 1", ("Top level", "Lists", "Table")),
        # A new H2 replaces the previous one and drops the H3 under it.
        Section("def f():\n    return  1", ("Top level", "Code")),
        Section("line one\nline two", ("Top level", "Code")),
        Section("quoted\ntwice", ("Top level", "Code")),
    ]


def test_html_drops_what_is_not_shown():
    everything = "\n".join(texts(parse(HTML_PAGE.encode(), HTML)))
    for hidden in ("secret", "color", "enable scripts", "template text", "iframe text", "svg text", "icon",
                   "a comment", "late script"):
        assert hidden not in everything


def test_html_title_falls_back_to_the_first_h1():
    document = parse(b"<body><h2>Sub</h2><p>a</p><h1>Main</h1><p>b</p><h1>Other</h1></body>", HTML)
    assert document.title == "Main"
    assert document.sections == [Section("a", ("Sub",)), Section("b", ("Main",))]


def test_html_chinese_with_a_declared_charset_and_ruby():
    page = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=gbk">'
            "<title>中文标题</title></head><body><h1>第一章</h1>"
            "<p>汉<ruby>字<rt>zì</rt></ruby>的文本，测试一下。</p></body></html>")
    document = parse(page.encode("gbk"), HTML)
    assert document == ParsedDocument("中文标题", [Section("汉字的文本，测试一下。", ("第一章",))])


def test_xhtml_with_an_xml_declaration():
    page = ('<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            "<head><title>X</title></head><body><p>café</p></body></html>")
    assert parse(page.encode(), "application/xhtml+xml") == ParsedDocument("X", [Section("café")])


def test_deeply_nested_html_does_not_exhaust_the_stack():
    page = "<div>" * 5000 + "deep text" + "</div>" * 5000
    assert "deep text" in "".join(texts(parse(page.encode(), HTML)))


# -- PDF -----------------------------------------------------------------------------------

WIDE = "The first paragraph runs over two printed lines, and this line is wide."
NARROW = "It ends on a short one."
HYPHENATED = "The next paragraph is nearly as wide, and one of its words is hyphen-"


def test_pdf_sections_carry_their_page_numbers():
    content = pdf_bytes(
        [
            ["Introduction", WIDE, NARROW, WIDE, HYPHENATED, "ated."],
            ["Second page, café and naïve."],
            [],
            ["Two lines of about", "the same width join."],
        ],
        title="A Report",
    )
    document = parse(content, PDF)
    assert document.title == "A Report"
    assert document.sections == [
        Section("Introduction", page=1),
        Section(f"{WIDE} {NARROW}", page=1),
        Section(f"{WIDE} {HYPHENATED[:-1]}ated.", page=1),
        Section("Second page, café and naïve.", page=2),
        Section("Two lines of about the same width join.", page=4),
    ]


def test_pdf_lines_of_cjk_join_without_spaces():
    # pypdf's output for a CJK page; no CJK font is at hand to print one.
    page = "第一章\n这是一个很长的段落，它跨越了两行印刷文字，所以\n需要连接起来。\n短行。"
    assert _paragraphs(page) == ["第一章", "这是一个很长的段落，它跨越了两行印刷文字，所以需要连接起来。", "短行。"]


def test_an_encrypted_pdf_is_refused():
    content = pdf_bytes([["secret"]], owner_password="o", user_password="u")
    with pytest.raises(ParseError, match="encrypted; upload it without a password"):
        parse(content, PDF)


def test_a_pdf_encrypted_with_an_empty_user_password_is_read():
    content = pdf_bytes([["Readable by anyone."]], title="Open", owner_password="o")
    assert parse(content, PDF) == ParsedDocument("Open", [Section("Readable by anyone.", page=1)])


@pytest.mark.parametrize(
    "content",
    [
        pdf_bytes([["one page"], ["two pages"]])[:600],
        b"%PDF-1.7\n" + random.Random(3).randbytes(2000),
        b"not a PDF at all",
        b"",
    ],
    ids=["truncated", "garbage", "text", "empty"],
)
def test_a_broken_pdf_is_a_parse_error_in_words_of_ours(content):
    with pytest.raises(ParseError) as failed:
        parse(content, PDF)
    # pypdf's message (its internals, offsets, exception names) is for the log, never the user.
    assert str(failed.value) == "the PDF is damaged or not a PDF, so it could not be read"
    assert failed.value.detail


def test_a_pdf_of_empty_pages_has_no_text():
    # Pages without a text layer are recognised by OCR (test_parsers_ocr.py); blank ones have none.
    with pytest.raises(ParseError, match="^the PDF has no text: its pages have no text layer"):
        parse(pdf_bytes([[], []]), PDF)


# -- JSON Lines ----------------------------------------------------------------------------


def test_jsonl_records():
    lines = [
        {"text": "First record.", "title": "One", "id": 7},
        {"text": "  中文记录。\r\n第二行。 ", "title": None},
        {"text": "", "title": "empty text is skipped"},
        {"title": "  Spaced   title ", "text": "Third.", "tags": ["x"]},
    ]
    content = "\ufeff" + "\r\n".join(json.dumps(line, ensure_ascii=False) for line in lines[:2]) + "\n\n  \n"
    content += "\n".join(json.dumps(line) for line in lines[2:]) + "\n"
    document = parse(content.encode(), JSONL)
    assert document == ParsedDocument("", [
        Section("First record.", ("One",)),
        Section("中文记录。\n第二行。"),
        Section("Third.", ("Spaced title",)),
    ])


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"text": "ok"}\n\n{"text": "broken"\n', r"line 3 is not valid JSON"),
        (b'{"text": "ok"}\n{"title": "no text"}\n', r'line 2 has no "text" string'),
        (b'{"text": 42}\n', r'line 1 has no "text" string'),
        (b'{"text": "ok"}\n["text"]\n', r'line 2 is not a JSON object'),
        (b'{"text": "ok", "title": 3}\n', r'line 1: "title" must be a string'),
        (b'{"text": "ok"}\n' + b"[" * 100_000 + b"\n", r"line 2 is not valid JSON"),
        (b"", r"no records"),
        (b'{"text": "  "}\n', r"no records"),
    ],
)
def test_jsonl_errors_name_the_line(content, error):
    with pytest.raises(ParseError, match=error) as failed:
        parse(content, JSONL)
    assert "Expecting" not in str(failed.value)  # the json module's own words stay in the log


def test_an_unknown_content_type_is_not_echoed_back():
    with pytest.raises(UnsupportedType) as refused:
        parse(b"text", "application/x-<script>")
    assert "<script>" not in str(refused.value) and ".md" in str(refused.value)
