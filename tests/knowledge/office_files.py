"""Office files, e-mails and e-books written by the same libraries people's tools use (or that
write what those tools write), each carrying facts of its own that a test can look for in the
parsed text, plus hostile ones (zip bombs, external entities, encrypted and mislabelled
files). Shared by the parser tests and end-to-end tests that upload them. The e-mail and e-book
writers are scripts/sample_documents.py's, which the ingestion benchmark uses too.

Every builder returns the file's bytes. The facts are module constants so that a test can
ask where each one ended up.
"""

from __future__ import annotations

import datetime
import io
import zipfile
from email.message import EmailMessage

import docx
import msgforge
from msoffcrypto.format.ooxml import OOXMLFile
import openpyxl
import pptx
import xlsxwriter
import xlwt
from docx.opc.constants import CONTENT_TYPE as CT
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.opc.packuri import PackURI
from docx.opc.part import Part
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from odf import dc, draw, presentation, style, table, teletype, text
from odf.namespaces import PRESENTATIONNS
from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet, OpenDocumentText
from pptx.util import Inches

from scripts.sample_documents import email_message as _email
from scripts.sample_documents import write_epub

# -- Word ------------------------------------------------------------------------------------

DOCX_TITLE = "Travel Policy 2024"
DOCX_MEALS = "Meals on trips are reimbursed up to 45 euros a day."
DOCX_FOOTNOTE = "Receipts older than 90 days are refused."
DOCX_HOTELS = "Hotel rooms in Oslo are capped at 1,850 kroner a night."
DOCX_COMMENT = "Checked with the finance team in May."
DOCX_COMMENT_AUTHOR = "Ann Auditor"
DOCX_BULLETS = ("Taxis are fine after 22:00.", "Trains go second class.")
DOCX_STEPS = ("Book through the travel desk.", "Submit the claim within 30 days.")
DOCX_TABLE = (("City", "Daily allowance"), ("Lisbon", "61 euros"), ("Tromsø", "83 euros"))
DOCX_TABLE_COMMENT = "The Tromsø rate was confirmed by HR."
DOCX_HEADER = "CONFIDENTIAL PAGE HEADER"
DOCX_FOOTER = "Printed copies are uncontrolled"

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_file() -> bytes:
    """Title; Heading 1 "Expenses" with a paragraph citing a footnote; Heading 2 "Hotels"
    with a commented paragraph, a bulleted and a numbered list; Heading 1 "Rates" with a
    table with a commented cell; a page header and footer."""
    document = docx.Document()
    document.core_properties.title = "travel-policy-template"
    section = document.sections[0]
    section.header.paragraphs[0].text = DOCX_HEADER
    section.footer.paragraphs[0].text = DOCX_FOOTER
    document.add_paragraph(DOCX_TITLE, style="Title")
    document.add_heading("Expenses", level=1)
    meals = document.add_paragraph(DOCX_MEALS)
    reference = meals.add_run()._r
    reference.append(OxmlElement("w:footnoteReference", {qn("w:id"): "1"}))
    _add_footnotes(document, {1: DOCX_FOOTNOTE})
    document.add_heading("Hotels", level=2)
    hotels = document.add_paragraph(DOCX_HOTELS)
    document.add_comment(hotels.runs, text=DOCX_COMMENT, author=DOCX_COMMENT_AUTHOR, initials="AA")
    for bullet in DOCX_BULLETS:
        document.add_paragraph(bullet, style="List Bullet")
    for step in DOCX_STEPS:
        document.add_paragraph(step, style="List Number")
    document.add_heading("Rates", level=1)
    rows = document.add_table(rows=len(DOCX_TABLE), cols=2)
    for row, values in zip(rows.rows, DOCX_TABLE):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_comment(rows.rows[2].cells[1].paragraphs[0].runs, text=DOCX_TABLE_COMMENT, author="Hal")
    return _save(document)


def _add_footnotes(document, notes: dict[int, str]) -> None:
    """python-docx writes no footnotes: their part is added as Word writes it."""
    body = "".join(
        f'<w:footnote w:id="{number}"><w:p><w:r><w:footnoteRef/></w:r><w:r><w:t xml:space="preserve"> '
        f"{note}</w:t></w:r></w:p></w:footnote>" for number, note in notes.items())
    xml = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:footnotes xmlns:w="{_W}">'
           '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
           '<w:footnote w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/>'
           f"</w:r></w:p></w:footnote>{body}</w:footnotes>")
    part = Part(PackURI("/word/footnotes.xml"), CT.WML_FOOTNOTES, xml.encode(), document.part.package)
    document.part.relate_to(part, RT.FOOTNOTES)


def _save(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_with_body(body_xml: str, doctype: str = "") -> bytes:
    """A .docx whose word/document.xml is `body_xml` inside <w:body>, after `doctype`."""
    xml = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{doctype}'
           f'<w:document xmlns:w="{_W}"><w:body>{body_xml}</w:body></w:document>')
    return replace_part(_save(docx.Document()), "word/document.xml", xml.encode())


def replace_part(archive: bytes, name: str, content: bytes) -> bytes:
    """The zip `archive` with its part `name` replaced by (or set to) `content`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != name:
                target.writestr(info, source.read(info))
        target.writestr(name, content)
    return out.getvalue()


# -- OpenDocument text -----------------------------------------------------------------------

ODT_TITLE = "Warehouse Handbook"
ODT_FORKLIFT = "Forklifts are charged in bay 7 overnight."
ODT_FOOTNOTE = "Bay 7 has the only 400-volt socket."
ODT_COMMENT = "Confirm with the site manager."
ODT_COMMENT_AUTHOR = "Bo Builder"
ODT_ITEMS = ("Helmets are yellow.", "Vests are orange.")
ODT_TABLE = (("Shelf", "Holds"), ("A3", "bolts"), ("C9", "copper wire"))


def odt_file() -> bytes:
    """Title (metadata); heading 1 "Safety" with a paragraph citing a footnote and carrying a
    comment; a bulleted list; heading 2 "Storage" with a table."""
    document = OpenDocumentText()
    document.meta.addElement(dc.Title(text=ODT_TITLE))
    body = document.text
    body.addElement(text.H(outlinelevel=1, text="Safety"))
    paragraph = text.P(text=ODT_FORKLIFT)
    note = text.Note(id="ftn1", noteclass="footnote")
    note.addElement(text.NoteCitation(text="1"))
    note_body = text.NoteBody()
    note_body.addElement(text.P(text=ODT_FOOTNOTE))
    note.addElement(note_body)
    paragraph.addElement(note)
    annotation = _office_annotation(ODT_COMMENT_AUTHOR, ODT_COMMENT)
    paragraph.addElement(annotation)
    body.addElement(paragraph)
    items = text.List()
    for item in ODT_ITEMS:
        list_item = text.ListItem()
        list_item.addElement(text.P(text=item))
        items.addElement(list_item)
    body.addElement(items)
    body.addElement(text.H(outlinelevel=2, text="Storage"))
    body.addElement(_odf_table("Shelves", ODT_TABLE))
    return _odf_bytes(document)


def _office_annotation(author: str, note: str):
    from odf import office

    annotation = office.Annotation()
    annotation.addElement(dc.Creator(text=author))
    annotation.addElement(text.P(text=note))
    return annotation


def _odf_table(name: str, rows, style_name: str = ""):
    sheet = table.Table(name=name, stylename=style_name) if style_name else table.Table(name=name)
    for values in rows:
        row = table.TableRow()
        for value in values:
            row.addElement(_odf_cell(value))
        sheet.addElement(row)
    return sheet


def _odf_cell(value):
    if isinstance(value, datetime.date):
        cell = table.TableCell(valuetype="date", datevalue=value.isoformat())
        cell.addElement(text.P(text=value.strftime("%d/%m/%Y")))
    elif isinstance(value, (int, float)):
        cell = table.TableCell(valuetype="float", value=value)
        cell.addElement(text.P(text=f"{value:g}"))
    else:
        cell = table.TableCell(valuetype="string")
        cell.addElement(text.P(text=value))
    return cell


def _odf_bytes(document) -> bytes:
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


# -- PowerPoint ------------------------------------------------------------------------------

PPTX_TITLE = "Quarterly Review"
PPTX_SLIDE_2_TITLE = "Sales by region"
PPTX_POINTS = ("The Nordic region grew 14 percent.", "Iceland opened its first store.")
PPTX_SUBPOINT = "The store is in Akureyri."
PPTX_NOTES = "Mention that the Akureyri lease runs until 2031."
PPTX_TABLE = (("Region", "Revenue"), ("Nordics", "4.2 million"), ("Baltics", "1.7 million"))
PPTX_SLIDE_3_TITLE = "Revenue table"


def pptx_file() -> bytes:
    """Slide 1: title and subtitle; slide 2: title, bullets (one indented) and speaker notes;
    slide 3: title and a table."""
    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[0])
    first.shapes.title.text = PPTX_TITLE
    first.placeholders[1].text = "Prepared by the strategy office"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = PPTX_SLIDE_2_TITLE
    frame = second.placeholders[1].text_frame
    frame.text = PPTX_POINTS[0]
    for point, level in ((PPTX_SUBPOINT, 1), (PPTX_POINTS[1], 0)):
        paragraph = frame.add_paragraph()
        paragraph.text = point
        paragraph.level = level
    second.notes_slide.notes_text_frame.text = PPTX_NOTES
    third = deck.slides.add_slide(deck.slide_layouts[5])
    third.shapes.title.text = PPTX_SLIDE_3_TITLE
    shape = third.shapes.add_table(len(PPTX_TABLE), 2, Inches(1), Inches(2), Inches(6), Inches(2))
    for row, values in zip(shape.table.rows, PPTX_TABLE):
        for cell, value in zip(row.cells, values):
            cell.text = value
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


# -- OpenDocument presentation ---------------------------------------------------------------

ODP_SLIDE_1_TITLE = "Launch plan"
ODP_BODY = "The beta opens to 300 testers on 4 March."
ODP_NOTES = "Stress that testers must sign the NDA."
ODP_SLIDE_2_TITLE = "Budget"
ODP_TABLE = (("Item", "Cost"), ("Servers", "12,000"), ("Swag", "800"))


def odp_file() -> bytes:
    document = OpenDocumentPresentation()
    layout = style.PageLayout(name="layout")
    document.automaticstyles.addElement(layout)
    master = style.MasterPage(name="master", pagelayoutname=layout)
    document.masterstyles.addElement(master)

    first = draw.Page(name="page1", masterpagename=master)
    first.addElement(_odp_frame("title", ODP_SLIDE_1_TITLE))
    first.addElement(_odp_frame("outline", ODP_BODY))
    notes = presentation.Notes()
    notes.addElement(_odp_frame("notes", ODP_NOTES))
    first.addElement(notes)
    document.presentation.addElement(first)

    second = draw.Page(name="page2", masterpagename=master)
    second.addElement(_odp_frame("title", ODP_SLIDE_2_TITLE))
    frame = draw.Frame(width="20cm", height="8cm", x="2cm", y="5cm")
    frame.addElement(_odf_table("costs", ODP_TABLE))
    second.addElement(frame)
    document.presentation.addElement(second)
    return _odf_bytes(document)


def _odp_frame(kind: str, content: str):
    frame = draw.Frame(width="20cm", height="3cm", x="2cm", y="1cm")
    frame.setAttrNS(PRESENTATIONNS, "class", kind)
    box = draw.TextBox()
    box.addElement(text.P(text=content))
    frame.addElement(box)
    return frame


# -- spreadsheets ----------------------------------------------------------------------------

XLSX_TITLE = "Budget 2025"
XLSX_HEADER = ("Item", "Amount", "Due", "Share")
XLSX_ROWS = (
    ("Laptops for the Lyon office", 12500, datetime.datetime(2025, 3, 14), 0.25),
    ("Standing desks", 3200.5, datetime.datetime(2025, 6, 1), 0.125),
)
XLSX_SECRET_SHEET_FACT = "The hidden sheet says the bonus pool is 9 million."
XLSX_SECOND_SHEET_FACT = "Contractors are paid on the 15th."


def xlsx_file(extra_rows: int = 0) -> bytes:
    """Sheet "Budget": a header and rows with an integer, a float with two decimals, a date
    and a percentage; sheet "Notes": one fact; a hidden sheet "Secret" with another."""
    book = openpyxl.Workbook()
    book.properties.title = XLSX_TITLE
    budget = book.active
    budget.title = "Budget"
    budget.append(XLSX_HEADER)
    for item, amount, due, share in XLSX_ROWS:
        budget.append([item, amount, due, share])
    for number in range(extra_rows):
        budget.append([f"Filler item {number}", number, None, None])
    for row in budget.iter_rows(min_row=2):
        row[1].number_format = "#,##0.00" if isinstance(row[1].value, float) else "0"
        row[2].number_format = "yyyy-mm-dd"
        row[3].number_format = "0.0%"
    notes = book.create_sheet("Notes")
    notes.append(["Note"])
    notes.append([XLSX_SECOND_SHEET_FACT])
    secret = book.create_sheet("Secret")
    secret.append([XLSX_SECRET_SHEET_FACT])
    secret.sheet_state = "hidden"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


FORMULA_FACT_LABEL = "Total freight cost"
FORMULA_VALUE = "1,234"


def xlsx_with_formulas() -> bytes:
    """A workbook as Excel saves it: formulas with their computed values stored beside them
    (openpyxl writes formulas without values; XlsxWriter writes both)."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet("Freight")
    thousands = book.add_format({"num_format": "#,##0"})
    sheet.write_row(0, 0, ["Label", "Value"])
    sheet.write_row(1, 0, ["Sea", 1000])
    sheet.write_row(2, 0, ["Air", 234])
    sheet.write(3, 0, FORMULA_FACT_LABEL)
    sheet.write_formula(3, 1, "=SUM(B2:B3)", thousands, 1234)
    book.close()
    return out.getvalue()


XLSM_FACT = "Macro workbooks still hold plain values like 77 pallets."


def xlsm_file() -> bytes:
    """A macro-enabled workbook with a (dummy) VBA project part, which is never run."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    book.set_vba_name("ThisWorkbook")
    book.add_worksheet("Stock").write_row(0, 0, ["Fact", XLSM_FACT])
    book.add_vba_project(io.BytesIO(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504), is_stream=True)
    book.close()
    return out.getvalue()


XLS_HEADER = ("Supplier", "Units", "Delivered")
XLS_ROWS = (("Nordic Timber AB", 420, datetime.date(2023, 11, 2)), ("Baltic Steel", 75, datetime.date(2024, 1, 9)))
XLS_HIDDEN_FACT = "The hidden xls sheet lists the fallback supplier Kestrel."


def xls_file() -> bytes:
    book = xlwt.Workbook()
    sheet = book.add_sheet("Deliveries")
    date_style = xlwt.easyxf(num_format_str="DD/MM/YYYY")
    for column, value in enumerate(XLS_HEADER):
        sheet.write(0, column, value)
    for number, (supplier, units, delivered) in enumerate(XLS_ROWS, start=1):
        sheet.write(number, 0, supplier)
        sheet.write(number, 1, units)
        sheet.write(number, 2, delivered, date_style)
    hidden = book.add_sheet("Fallback")
    hidden.write(0, 0, XLS_HIDDEN_FACT)
    hidden.visibility = 1
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


ODS_HEADER = ("Course", "Seats", "Starts")
ODS_ROWS = (("Welding basics", 12, datetime.date(2024, 9, 16)), ("Crane licence", 4, datetime.date(2024, 10, 7)))
ODS_HIDDEN_FACT = "The hidden ods sheet holds trainer salaries."


def ods_file() -> bytes:
    document = OpenDocumentSpreadsheet()
    hidden_style = style.Style(name="hiddentable", family="table")
    hidden_style.addElement(style.TableProperties(display="false"))
    document.automaticstyles.addElement(hidden_style)
    sheet = _odf_table("Courses", (ODS_HEADER, *ODS_ROWS))
    # Rows and columns a spreadsheet pads with: empty, repeated a million times.
    padding = table.TableRow(numberrowsrepeated=1048000)
    padding.addElement(table.TableCell(numbercolumnsrepeated=1024))
    sheet.addElement(padding)
    document.spreadsheet.addElement(sheet)
    document.spreadsheet.addElement(_odf_table("Pay", ((ODS_HIDDEN_FACT,),), style_name="hiddentable"))
    return _odf_bytes(document)


CSV_HEADER = ("Employee", "Office", "Start date", "Notes")
CSV_ROWS = (
    ("Zoë Brandt", "Zürich", "2021-04-01", "Leitet das Büro in Zürich"),
    ("Mikko Laine", "Tampere", "2019-08-15", "Työskentelee etänä"),
    ("Renée Côté", "Montréal", "2020-02-03", "Responsable des accès"),
    ("José Muñoz", "Málaga", "2018-06-11", "Jefe de almacén"),
)


def csv_file(delimiter: str = ";", encoding: str = "cp1252", extra_rows: int = 0) -> bytes:
    """Semicolon-separated and in Windows-1252, as Excel saves CSV in much of Europe."""
    lines = [delimiter.join(CSV_HEADER)]
    lines += [delimiter.join(row) for row in CSV_ROWS]
    lines += [delimiter.join((f"Person {n}", "Remote", "2020-01-01", "")) for n in range(extra_rows)]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


# -- e-mail ----------------------------------------------------------------------------------

EML_SUBJECT = "Offer for the Bergen warehouse"
EML_FROM = "Alice Archer <alice@example.com>"
EML_TO = "Bob Baker <bob@example.com>"
EML_CC = "carol@example.com"
EML_DATE = datetime.datetime(2024, 3, 5, 10, 30, tzinfo=datetime.timezone.utc)
EML_BODY_FACT = "The landlord accepts 18,400 euros a month."
EML_ATTACHED_FACT = "The attached note says the lease starts in June."
EML_FORWARDED_SUBJECT = "Earlier quote"
EML_FORWARDED_FACT = "The first quote was 21,000 euros a month."


def eml_file(attachments: bool = True) -> bytes:
    """An HTML e-mail with a plain-text alternative, a .docx attachment, a .txt attachment,
    an unsupported .exe attachment, an inline image, and an attached e-mail (message/rfc822)
    with an attachment of its own."""
    message = _email(EML_SUBJECT, EML_FROM, EML_TO, EML_DATE, cc=EML_CC,
                     plain=f"Hello Bob,\n\n{EML_BODY_FACT}\n",
                     html=f"<html><body><p>Hello Bob,</p><p><b>{EML_BODY_FACT}</b></p>"
                          '<img src="cid:logo"></body></html>')
    if attachments:
        message.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image", "png",
                                             cid="<logo>", disposition="inline")
        message.add_attachment(docx_file(), maintype="application",
                               subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
                               filename="policy.docx")
        message.add_attachment(EML_ATTACHED_FACT.encode(), maintype="text", subtype="plain", filename="note.txt")
        message.add_attachment(b"MZ\x90\x00" + b"\x00" * 60, maintype="application", subtype="octet-stream",
                               filename="setup.exe")
        message.add_attachment(forwarded_email())
    return bytes(message)


def forwarded_email(nested: bytes | None = None) -> EmailMessage:
    inner = _email(EML_FORWARDED_SUBJECT, "Dan Dealer <dan@example.com>", EML_FROM,
                   datetime.datetime(2024, 2, 1, 9, 0, tzinfo=datetime.timezone.utc),
                   plain=f"{EML_FORWARDED_FACT}\n")
    inner.add_attachment(csv_file(), maintype="text", subtype="csv", filename="staff.csv")
    if nested is not None:
        inner.add_attachment(nested, maintype="message", subtype="rfc822", filename="deeper.eml")
    return inner


def nested_email(levels: int) -> bytes:
    """An e-mail with an e-mail attached, `levels` deep; the innermost says its level."""
    message = _email(f"level {levels}", EML_FROM, EML_TO, EML_DATE, plain=f"Fact at level {levels}: owl {levels}.\n")
    for level in range(levels - 1, -1, -1):
        outer = _email(f"level {level}", EML_FROM, EML_TO, EML_DATE, plain=f"Fact at level {level}: owl {level}.\n")
        outer.add_attachment(message)
        message = outer
    return bytes(message)


MSG_SUBJECT = "Kiwi shipment delayed"
MSG_BODY_FACT = "The kiwi shipment now arrives on 12 April."
MSG_ATTACHED_FACT = "The attached memo says the llama mascot is blue."
MSG_DATE = datetime.datetime(2024, 4, 2, 8, 15, tzinfo=datetime.timezone.utc)


def msg_file(attach: bool = True) -> bytes:
    """An Outlook message with an HTML body, a .txt and an .xlsx attachment and an attached
    .msg file (msgforge writes .msg; extract-msg only reads)."""
    message = msgforge.Message(subject=MSG_SUBJECT, html_body=f"<p>Hi all,</p><p>{MSG_BODY_FACT}</p>",
                               text_body=f"Hi all,\n\n{MSG_BODY_FACT}", to=[("bob@example.com", "Bob Baker")],
                               cc=[("carol@example.com", "Carol Cook")], sender=("alice@example.com", "Alice Archer"),
                               sent=MSG_DATE)
    if attach:
        message.attach_bytes("memo.txt", MSG_ATTACHED_FACT.encode())
        message.attach_bytes("budget.xlsx", xlsx_file())
        inner = msgforge.Message(subject="Inner message", text_body="The inner message mentions 3 pelicans.",
                                 sender=("dan@example.com", "Dan"), sent=MSG_DATE)
        message.attach_bytes("inner.msg", inner.as_bytes(), mime_type="application/vnd.ms-outlook")
    return message.as_bytes()


# -- e-books ---------------------------------------------------------------------------------

EPUB_TITLE = "The Lighthouse Keeper's Log"
EPUB_CHAPTERS = (
    ("Arrival", "<h1>Arrival</h1><p>The keeper arrived on Skerry Island in 1887.</p>"),
    ("The Storm", "<h1>The Storm</h1><h2>Night one</h2><p>Waves broke the lower window at 3 a.m.</p>"),
)


def epub_file() -> bytes:
    """An EPUB 3 with a nav document and an NCX (ebooklib writes both), two chapters in the
    spine after the nav page."""
    return write_epub(EPUB_TITLE, list(EPUB_CHAPTERS), identifier="lighthouse-log")


# -- hostile ---------------------------------------------------------------------------------


def zip_bomb(folder: str = "word/", size: int = 50_000_000) -> bytes:
    """An OOXML-looking zip with one part of `size` zero bytes: some 50 KB that inflate a
    thousand times over."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open(f"{folder}document.xml" if folder == "word/" else f"{folder}workbook.xml", "w",
                          force_zip64=True) as part:
            chunk = b"\x00" * 1_000_000
            for _ in range(size // len(chunk)):
                part.write(chunk)
    return out.getvalue()


def wide_zip_bomb(folder: str = "xl/", parts: int = 210, part_size: int = 999_000) -> bytes:
    """Parts each small enough to be allowed any ratio, more than 200 MB together."""
    out = io.BytesIO()
    chunk = b"\x00" * part_size
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        for number in range(parts):
            archive.writestr(f"{folder}worksheets/sheet{number}.xml", chunk)
    return out.getvalue()


def many_parts_zip(folder: str = "word/", parts: int = 10_001) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        for number in range(parts):
            archive.writestr(f"{folder}media/{number}.bin", b"")
    return out.getvalue()


def encrypted(office_file: bytes, password: str = "hunter2") -> bytes:
    """An OOXML file encrypted as Office does (an OLE file holding EncryptionInfo and
    EncryptedPackage), by msoffcrypto-tool."""
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(office_file)).encrypt(password, out)
    return out.getvalue()


def external_entity_doctype(path: str, root: str) -> str:
    """A DOCTYPE declaring the entity &secret; as the contents of the local file at `path`."""
    return f'<!DOCTYPE {root} [<!ENTITY secret SYSTEM "file://{path}">]>'


def docx_with_external_entity(path: str) -> bytes:
    return docx_with_body('<w:p><w:r><w:t>Before &secret; after.</w:t></w:r></w:p>',
                          external_entity_doctype(path, "w:document"))


def xlsx_with_external_entity(path: str, part: str = "xl/sharedStrings.xml") -> bytes:
    """The entity in the shared strings (where XlsxWriter, like Excel, puts every text cell's
    text), in a sheet or in the workbook part (as a sheet's name)."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    book.add_worksheet("placeholder-sheet").write_row(0, 0, ["Before", "placeholder-string", 5])
    book.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        xml = archive.read(part).decode()
    root = {"xl/sharedStrings.xml": "sst", "xl/workbook.xml": "workbook"}.get(part, "worksheet")
    xml = xml.replace("placeholder-string", "&secret;").replace("placeholder-sheet", "&secret;")
    if part.startswith("xl/worksheets/"):  # a number cell becomes an inline string with the entity
        xml = xml.replace('<c r="C1"><v>5</v></c>', '<c r="C1" t="inlineStr"><is><t>&secret;</t></is></c>')
    xml = xml.replace("?>", "?>" + external_entity_doctype(path, root), 1)
    return replace_part(out.getvalue(), part, xml.encode())


def pptx_with_external_entity(path: str) -> bytes:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Entity slide"
    slide.placeholders[1].text_frame.text = "placeholder-string"
    out = io.BytesIO()
    deck.save(out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        xml = archive.read("ppt/slides/slide1.xml").decode()
    xml = xml.replace("placeholder-string", "&secret;")
    xml = xml.replace("?>", "?>" + external_entity_doctype(path, "p:sld"), 1)
    return replace_part(out.getvalue(), "ppt/slides/slide1.xml", xml.encode())


def odt_with_external_entity(path: str) -> bytes:
    document = OpenDocumentText()
    paragraph = text.P()
    teletype.addTextToElement(paragraph, "placeholder-string")
    document.text.addElement(paragraph)
    content = _odf_bytes(document)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        xml = archive.read("content.xml").decode()
    xml = xml.replace("placeholder-string", "&secret;")
    xml = xml.replace("?>", "?>" + external_entity_doctype(path, "office:document-content"), 1)
    return replace_part(content, "content.xml", xml.encode())


def epub_with_external_entity(path: str) -> bytes:
    """The entity in the package document and in a chapter."""
    content = epub_file()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        opf_name = next(name for name in archive.namelist() if name.endswith(".opf"))
        opf = archive.read(opf_name).decode()
        chapter = archive.read("EPUB/text/chapter_1.xhtml").decode()
    opf = opf.replace(EPUB_TITLE.replace("'", "&#x27;"), "&secret;").replace(EPUB_TITLE, "&secret;")
    opf = opf.replace("?>", "?>" + external_entity_doctype(path, "package"), 1)
    chapter = chapter.replace("Skerry Island", "&secret;")
    chapter = chapter.replace("<html", external_entity_doctype(path, "html") + "<html", 1) \
        if "<!DOCTYPE" not in chapter else chapter.replace("<!DOCTYPE html>", external_entity_doctype(path, "html"))
    content = replace_part(content, opf_name, opf.encode())
    return replace_part(content, "EPUB/text/chapter_1.xhtml", chapter.encode())


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
