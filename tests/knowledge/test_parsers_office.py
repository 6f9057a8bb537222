"""Office documents, spreadsheets, e-mails and e-books: each file (written by the libraries
people's tools use, tests/knowledge/office_files.py) carries facts, and each fact must come out
in the right section, under the right headings, with the right location."""

from __future__ import annotations

import base64
import time

import pytest

from services.knowledge.parsers import SUPPORTED, ParsedDocument, ParseError, Section, UnsupportedType, parse
from services.knowledge.parsers import resolve_content_type as resolve
from services.knowledge.parsers import tables
from services.knowledge.parsers.sheets import format_value
from tests.knowledge import office_files as files

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ODT = "application/vnd.oasis.opendocument.text"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODP = "application/vnd.oasis.opendocument.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroenabled.12"
XLS = "application/vnd.ms-excel"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
CSV, TSV = "text/csv", "text/tab-separated-values"
EML, MSG = "message/rfc822", "application/vnd.ms-outlook"
EPUB = "application/epub+zip"


def section_with(document: ParsedDocument, fact: str) -> Section:
    found = [section for section in document.sections if fact in section.text]
    assert len(found) == 1, f"{fact!r} is in {len(found)} sections: {document.sections}"
    return found[0]


def all_text(document: ParsedDocument) -> str:
    return "\n".join(section.text for section in document.sections)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


# -- content types ------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "declared", "resolved"), [
    ("report.docx", "", DOCX),
    ("report.docx", DOCX, DOCX),
    ("report.docx", "application/octet-stream", DOCX),
    ("report.docx", "application/zip", DOCX),
    ("report.docx", "application/msword", DOCX),  # .doc's type, wrongly sent: the extension decides
    ("notes.odt", "application/x-vnd.oasis.opendocument.text", ODT),
    ("deck.pptx", "", PPTX),
    ("deck.odp", "", ODP),
    ("budget.xlsx", "", XLSX),
    ("budget.xlsm", "application/vnd.ms-excel.sheet.macroEnabled.12", XLSM),
    ("budget.xlsm", "", XLSM),
    ("old.xls", "", XLS),
    ("old.xls", "application/x-msexcel", XLS),
    ("budget.ods", "", ODS),
    ("data.csv", "text/plain", CSV),
    ("data.csv", "application/csv", CSV),
    ("data", "text/x-csv; charset=utf-8", CSV),
    # Windows browsers declare Excel's type for CSV files; the .xls parser reads them as CSV.
    ("data.csv", "application/vnd.ms-excel", XLS),
    ("data.tsv", "", TSV),
    ("data", "text/tsv", TSV),
    ("mail.eml", "", EML),
    ("mail.eml", "text/plain", EML),
    ("mail.msg", "", MSG),
    ("book.epub", "", EPUB),
])
def test_office_content_types(filename, declared, resolved):
    assert resolve(filename, declared) == resolved
    assert resolved in SUPPORTED


@pytest.mark.parametrize("filename", ["memo.doc", "deck.ppt", "page.rtf", "archive.zip"])
def test_legacy_binary_office_files_are_not_supported(filename):
    with pytest.raises(UnsupportedType, match=r"\.docx"):
        resolve(filename, "application/msword" if filename.endswith(".doc") else "")


@pytest.mark.parametrize("content_type", [DOCX, ODT, PPTX, ODP, XLSX, XLSM, XLS, ODS, CSV, TSV, EML, MSG, EPUB])
def test_an_empty_file_is_refused_in_words(content_type):
    with pytest.raises(ParseError, match="^the (file is empty|document has no text)$"):
        parse(b"", content_type)


# -- Word and OpenDocument text -----------------------------------------------------------


def test_docx_headings_paragraphs_lists_tables_notes_and_comments():
    document = parse(files.docx_file(), DOCX)
    # The Title-styled paragraph, not the stale template title in the file's properties.
    assert document.title == files.DOCX_TITLE
    meals = section_with(document, files.DOCX_MEALS)
    assert meals.headings == ("Expenses",)
    assert (meals.page, meals.location) == (0, "")
    footnote = section_with(document, files.DOCX_FOOTNOTE)
    assert footnote.text == f"Footnote 1: {files.DOCX_FOOTNOTE}"
    assert footnote.headings == ("Expenses",)
    # The footnote follows the paragraph that cites it.
    assert document.sections.index(footnote) == document.sections.index(meals) + 1
    hotels = section_with(document, files.DOCX_HOTELS)
    assert hotels.headings == ("Expenses", "Hotels")
    comment = section_with(document, files.DOCX_COMMENT)
    assert comment.text == f"Comment by {files.DOCX_COMMENT_AUTHOR}: {files.DOCX_COMMENT}"
    assert document.sections.index(comment) == document.sections.index(hotels) + 1
    bullets = section_with(document, files.DOCX_BULLETS[0])
    assert bullets.text == "\n".join(f"- {item}" for item in files.DOCX_BULLETS)
    steps = section_with(document, files.DOCX_STEPS[0])
    assert steps.text == "\n".join(f"{n}. {item}" for n, item in enumerate(files.DOCX_STEPS, start=1))
    assert steps.headings == ("Expenses", "Hotels")
    table = section_with(document, "Lisbon")
    header, *rows = files.DOCX_TABLE
    assert table.text == "\n".join([row(*header), row("---", "---"), *(row(*r) for r in rows)])
    assert table.headings == ("Rates",)
    table_comment = section_with(document, files.DOCX_TABLE_COMMENT)
    assert (table_comment.text, table_comment.headings) == (f"Comment by Hal: {files.DOCX_TABLE_COMMENT}", ("Rates",))
    assert document.sections.index(table_comment) == document.sections.index(table) + 1
    text = all_text(document)
    assert files.DOCX_HEADER not in text and files.DOCX_FOOTER not in text


def test_docx_text_in_tracked_insertions_and_content_controls_counts():
    body = ('<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Scope</w:t></w:r></w:p>'
            '<w:p><w:r><w:t xml:space="preserve">Inserted: </w:t></w:r>'
            '<w:ins w:id="1" w:author="x"><w:r><w:t>the quokka clause</w:t></w:r></w:ins>'
            '<w:del w:id="2" w:author="x"><w:r><w:delText>the deleted wombat</w:delText></w:r></w:del></w:p>'
            '<w:sdt><w:sdtContent><w:p><w:r><w:t>Inside a content control: 42 lanterns.</w:t></w:r></w:p>'
            '</w:sdtContent></w:sdt>'
            '<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>Outlined heading</w:t></w:r></w:p>'
            '<w:p><w:r><w:t>Under the outline level.</w:t></w:r></w:p>')
    document = parse(files.docx_with_body(body), DOCX)
    assert section_with(document, "quokka").text == "Inserted: the quokka clause"
    assert "wombat" not in all_text(document)
    assert section_with(document, "42 lanterns").headings == ("Scope",)
    # python-docx's default styles.xml has Heading 1; an outline level makes a heading too.
    assert section_with(document, "Under the outline level").headings == ("Scope", "Outlined heading")


def test_odt_headings_lists_tables_footnotes_and_comments():
    document = parse(files.odt_file(), ODT)
    assert document.title == files.ODT_TITLE
    forklift = section_with(document, files.ODT_FORKLIFT)
    assert forklift.text == files.ODT_FORKLIFT  # the note and the comment are not in it
    assert forklift.headings == ("Safety",)
    assert section_with(document, files.ODT_FOOTNOTE).text == f"Footnote 1: {files.ODT_FOOTNOTE}"
    comment = section_with(document, files.ODT_COMMENT)
    assert comment.text == f"Comment by {files.ODT_COMMENT_AUTHOR}: {files.ODT_COMMENT}"
    assert section_with(document, files.ODT_ITEMS[0]).text == "\n".join(f"- {i}" for i in files.ODT_ITEMS)
    table = section_with(document, "copper wire")
    assert table.text.startswith(row(*files.ODT_TABLE[0]) + "\n" + row("---", "---"))
    assert table.headings == ("Safety", "Storage")


# -- presentations ------------------------------------------------------------------------


def test_pptx_slides_titles_bullets_tables_and_notes():
    document = parse(files.pptx_file(), PPTX)
    assert document.title == files.PPTX_TITLE
    points = section_with(document, files.PPTX_POINTS[0])
    assert points.location == "slide 2"
    assert points.headings == (files.PPTX_SLIDE_2_TITLE,)
    assert points.text == f"{files.PPTX_POINTS[0]}\n  {files.PPTX_SUBPOINT}\n{files.PPTX_POINTS[1]}"
    notes = section_with(document, files.PPTX_NOTES)
    assert notes.text == f"Speaker notes: {files.PPTX_NOTES}"
    assert (notes.location, notes.headings) == ("slide 2", (files.PPTX_SLIDE_2_TITLE,))
    table = section_with(document, "Nordics")
    assert table.text.splitlines()[:3] == [row("Region", "Revenue"), row("---", "---"), row("Nordics", "4.2 million")]
    assert (table.location, table.headings) == ("slide 3", (files.PPTX_SLIDE_3_TITLE,))
    assert section_with(document, "strategy office").location == "slide 1"
    assert {section.page for section in document.sections} == {0}


def test_odp_slides_titles_tables_and_notes():
    document = parse(files.odp_file(), ODP)
    body = section_with(document, files.ODP_BODY)
    assert (body.location, body.headings) == ("slide 1", (files.ODP_SLIDE_1_TITLE,))
    notes = section_with(document, files.ODP_NOTES)
    assert notes.text == f"Speaker notes: {files.ODP_NOTES}"
    assert notes.location == "slide 1"
    table = section_with(document, "Servers")
    assert (table.location, table.headings) == ("slide 2", (files.ODP_SLIDE_2_TITLE,))
    assert row("Servers", "12,000") in table.text.splitlines()
    assert document.title == files.ODP_SLIDE_1_TITLE


# -- spreadsheets -------------------------------------------------------------------------


def test_xlsx_sheets_formats_and_hidden_sheets():
    document = parse(files.xlsx_file(), XLSX)
    assert document.title == files.XLSX_TITLE
    budget = section_with(document, "Lyon office")
    assert (budget.location, budget.headings) == ("sheet Budget", ("Budget",))
    assert budget.text.splitlines() == [
        row(*files.XLSX_HEADER), row("---", "---", "---", "---"),
        row("Laptops for the Lyon office", "12500", "2025-03-14", "25.0%"),
        row("Standing desks", "3,200.50", "2025-06-01", "12.5%"),
    ]
    notes = section_with(document, files.XLSX_SECOND_SHEET_FACT)
    assert notes.location == "sheet Notes"
    assert files.XLSX_SECRET_SHEET_FACT not in all_text(document)
    assert document.warnings == ["the hidden sheet 'Secret' was not read"]


def test_a_long_sheet_is_split_into_blocks_that_each_start_with_the_header():
    document = parse(files.xlsx_file(extra_rows=300), XLSX)
    blocks = [section for section in document.sections if section.location == "sheet Budget"]
    assert len(blocks) > 10
    header = row(*files.XLSX_HEADER) + "\n" + row("---", "---", "---", "---") + "\n"
    assert all(block.text.startswith(header) for block in blocks)
    assert all(len(block.text) <= tables.BLOCK_CHARS for block in blocks)
    body_rows = [line for block in blocks for line in block.text.splitlines()[2:]]
    assert len(body_rows) == len(files.XLSX_ROWS) + 300  # every row once, in order
    assert body_rows[-1] == row("Filler item 299", "299", "", "")


def test_formulas_give_their_values_never_the_formula():
    document = parse(files.xlsx_with_formulas(), XLSX)
    text = all_text(document)
    assert row(files.FORMULA_FACT_LABEL, files.FORMULA_VALUE) in text.splitlines()
    assert "SUM" not in text and "=" not in text


def test_xlsm_values_are_read_and_its_macros_are_not():
    document = parse(files.xlsm_file(), XLSM)
    assert section_with(document, files.XLSM_FACT).location == "sheet Stock"


def test_xls_sheets_dates_and_hidden_sheets():
    document = parse(files.xls_file(), XLS)
    deliveries = section_with(document, "Nordic Timber")
    assert deliveries.location == "sheet Deliveries"
    assert deliveries.text.splitlines()[2:] == [row("Nordic Timber AB", "420", "2023-11-02"),
                                                 row("Baltic Steel", "75", "2024-01-09")]
    assert files.XLS_HIDDEN_FACT not in all_text(document)
    assert document.warnings == ["the hidden sheet 'Fallback' was not read"]


def test_a_csv_or_xlsx_declared_as_xls_is_read_as_what_it_is():
    assert "Zoë Brandt" in all_text(parse(files.csv_file(), XLS))
    assert "Lyon office" in all_text(parse(files.xlsx_file(), XLS))


def test_ods_sheets_dates_padding_and_hidden_sheets():
    started = time.monotonic()
    document = parse(files.ods_file(), ODS)
    assert time.monotonic() - started < 5  # a million padding rows are not expanded
    courses = section_with(document, "Welding")
    assert courses.location == "sheet Courses"
    assert courses.text.splitlines() == [row(*files.ODS_HEADER), row("---", "---", "---"),
                                         row("Welding basics", "12", "2024-09-16"),
                                         row("Crane licence", "4", "2024-10-07")]
    assert files.ODS_HIDDEN_FACT not in all_text(document)
    assert document.warnings == ["the hidden sheet 'Pay' was not read"]


def test_csv_in_windows_1252_with_semicolons():
    document = parse(files.csv_file(), CSV)
    table = section_with(document, "Zoë Brandt")
    assert (table.location, table.headings) == ("", ())
    assert table.text.splitlines()[:3] == [row(*files.CSV_HEADER), row("---", "---", "---", "---"),
                                           row(*files.CSV_ROWS[0])]


def test_tsv_and_utf8_csv_with_quoted_fields():
    tsv = "Tool\tShelf\nTorque wrench\tB12\n".encode()
    assert row("Torque wrench", "B12") in all_text(parse(tsv, TSV)).splitlines()
    quoted = '\ufeffName,Remark\n"Smith, Jo","Says ""hi"" | waves"\n'.encode()
    assert row("Smith, Jo", 'Says "hi" \\| waves') in all_text(parse(quoted, CSV)).splitlines()


def test_a_document_over_the_row_cap_is_refused():
    with pytest.raises(ParseError, match="more than 100,000 rows"):
        parse(files.csv_file(delimiter=",", encoding="utf-8", extra_rows=tables.MAX_ROWS), CSV)


def test_the_row_cap_counts_rows_across_sheets(monkeypatch):
    monkeypatch.setattr(tables, "MAX_ROWS", 50)
    parse(files.xlsx_file(extra_rows=40), XLSX)  # 43 + 2 rows in two visible sheets
    with pytest.raises(ParseError, match="more than 50 rows"):
        parse(files.xlsx_file(extra_rows=47), XLSX)


def test_empty_columns_are_dropped_and_a_sparse_giant_table_is_refused(monkeypatch):
    assert tables.markdown_blocks([["Name", "", "Role"], ["Ada", "", "Engineer"], ["", "", ""]]) == [
        "| Name | Role |\n| --- | --- |\n| Ada | Engineer |"]
    assert tables.markdown_blocks([["", "Only this cell | with a pipe", ""]]) == ["Only this cell \\| with a pipe"]
    monkeypatch.setattr(tables, "MAX_CELLS", 100)
    diagonal = [[""] * n + ["x"] for n in range(20)]  # 20 cells, 400 once padded
    with pytest.raises(ParseError, match="20 rows by 20 columns"):
        tables.markdown_blocks(diagonal)


@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (3.0, "General", "3"),
    (1234567, "#,##0", "1,234,567"),
    (0.1 + 0.2, "General", "0.3"),
    (1234.5, "#,##0.00", "1,234.50"),
    (-1234.5, "#,##0.00", "-1,234.50"),
    (-1234.5, "#,##0.00;(#,##0.00)", "(1,234.50)"),
    (0.256, "0%", "26%"),
    (0.2567, "0.00%", "25.67%"),
    (12.5, '"$"#,##0.00', "$12.50"),
    (12.5, "[$€-407] #,##0.00", "€ 12.50"),
    (12.5, '#,##0.00 "kr"', "12.50 kr"),
    (12345.678, "0.00E+00", "1.23E+04"),
    (True, "General", "TRUE"),
    (__import__("datetime").datetime(2024, 3, 5), "dd/mm/yyyy", "2024-03-05"),
    (__import__("datetime").datetime(2024, 3, 5, 14, 30), "dd/mm/yyyy hh:mm", "2024-03-05 14:30"),
    (__import__("datetime").time(9, 15), "h:mm", "09:15"),
])
def test_number_formats_show_values_as_the_sheet_does(value, number_format, shown):
    assert format_value(value, number_format) == shown


# -- e-mail -------------------------------------------------------------------------------


def test_eml_headers_body_and_attachments():
    document = parse(files.eml_file(), EML)
    assert document.title == files.EML_SUBJECT
    assert document.metadata == {"from": files.EML_FROM, "to": files.EML_TO, "cc": files.EML_CC,
                                 "subject": files.EML_SUBJECT, "date": "2024-03-05T10:30:00+00:00"}
    assert document.sections[0].text.splitlines()[0] == f"From: {files.EML_FROM}"
    body = section_with(document, files.EML_BODY_FACT)
    assert (body.location, body.text) == ("", files.EML_BODY_FACT)  # from the HTML body, once
    # A Word attachment keeps its headings, and says where it came from.
    meals = section_with(document, files.DOCX_MEALS)
    assert (meals.location, meals.headings) == ("attachment policy.docx", ("Expenses",))
    assert section_with(document, files.EML_ATTACHED_FACT).location == "attachment note.txt"
    # An attached e-mail, and its own attachment.
    forwarded = section_with(document, files.EML_FORWARDED_FACT)
    assert forwarded.location == f"attachment {files.EML_FORWARDED_SUBJECT}.eml"
    staff = section_with(document, "Zoë Brandt")
    assert staff.location == f"attachment {files.EML_FORWARDED_SUBJECT}.eml, attachment staff.csv"
    assert document.warnings == ["attachment setup.exe was skipped: its type is not one we read"]
    assert "PNG" not in all_text(document)  # the inline image is the body's, not an attachment


def test_attached_emails_are_read_two_levels_deep():
    document = parse(files.nested_email(4), EML)
    text = all_text(document)
    for level in (0, 1, 2):
        assert f"owl {level}." in text
    assert section_with(document, "owl 2.").location == "attachment level 1.eml, attachment level 2.eml"
    assert "owl 3." not in text and "owl 4." not in text
    assert document.warnings == ["attachment level 1.eml: attachment level 2.eml: attachment level 3.eml was "
                                 "skipped: attachments nested more than 2 levels deep are not read"]


def test_eml_attachment_that_cannot_be_read_is_skipped_with_a_warning():
    message = files._email("Broken", files.EML_FROM, files.EML_TO, files.EML_DATE, plain="Body of the broken one.")
    message.add_attachment(b"PK\x03\x04 not really a zip", maintype="application", subtype="octet-stream",
                           filename="plan.docx")
    document = parse(bytes(message), EML)
    assert "Body of the broken one." in all_text(document)
    assert len(document.warnings) == 1
    assert document.warnings[0].startswith("attachment plan.docx was skipped: the file is damaged")


def test_an_attached_email_in_base64_is_decoded_and_read():
    encoded = base64.encodebytes(bytes(files.forwarded_email()))
    raw = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Wrapped\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
           b"Outer body.\r\n--XX\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment; filename=fwd.eml\r\n\r\n" + encoded + b"\r\n--XX--\r\n")
    document = parse(raw, EML)
    assert section_with(document, files.EML_FORWARDED_FACT).location == "attachment fwd.eml"
    assert section_with(document, "Zoë Brandt").location == "attachment fwd.eml, attachment staff.csv"


def test_text_that_is_not_an_email_is_refused():
    with pytest.raises(ParseError, match="not an e-mail message"):
        parse(b"Just some notes\nwith lines\n", EML)


def test_msg_headers_body_and_attachments():
    document = parse(files.msg_file(), MSG)
    assert document.title == files.MSG_SUBJECT
    assert document.metadata == {"from": "Alice Archer <alice@example.com>", "to": "Bob Baker <bob@example.com>",
                                 "cc": "Carol Cook <carol@example.com>", "subject": files.MSG_SUBJECT,
                                 "date": "2024-04-02T08:15:00+00:00"}
    assert section_with(document, files.MSG_BODY_FACT).location == ""
    assert section_with(document, files.MSG_ATTACHED_FACT).location == "attachment memo.txt"
    budget = section_with(document, "Lyon office")
    assert (budget.location, budget.headings) == ("attachment budget.xlsx, sheet Budget", ("Budget",))
    assert section_with(document, "3 pelicans").location == "attachment inner.msg"
    assert document.warnings == ["attachment budget.xlsx: the hidden sheet 'Secret' was not read"]


def test_an_email_attachment_keeps_the_page_of_a_paged_format():
    from tests.knowledge.test_parsers import pdf_bytes

    message = files._email("Offer", files.EML_FROM, files.EML_TO, files.EML_DATE, plain="See the offer.")
    message.add_attachment(pdf_bytes([["Page one says hello."], ["Page two names the price: 900 euros."]]),
                           maintype="application", subtype="pdf", filename="offer.pdf")
    document = parse(bytes(message), EML)
    price = section_with(document, "900 euros")
    assert (price.location, price.page) == ("attachment offer.pdf, page 2", 0)


# -- e-books ------------------------------------------------------------------------------


def test_epub_chapters_in_spine_order_under_their_titles():
    document = parse(files.epub_file(), EPUB)
    assert document.title == files.EPUB_TITLE
    arrival = section_with(document, "Skerry Island")
    storm = section_with(document, "lower window")
    assert arrival.headings == ("Arrival",)
    assert storm.headings == ("The Storm", "Night one")
    assert document.sections.index(arrival) < document.sections.index(storm)
    # The nav document (the table of contents) is in the spine but is not text of the book.
    assert len(document.sections) == 2
