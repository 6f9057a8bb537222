"""Office files as an attacker or an accident makes them: zip bombs, XML external entities,
password-protected, damaged and mislabelled files. Each fails early with a message for
people (the library's own words only in ParseError.detail), or parses without harm."""

from __future__ import annotations

import io
import time
import zipfile

import openpyxl
import pytest

from services.knowledge.parsers import ParseError, parse
from services.knowledge.parsers import containers
from tests.knowledge import office_files as files
from tests.knowledge.test_parsers_office import (
    CSV,
    DOCX,
    EML,
    EPUB,
    MSG,
    ODP,
    ODS,
    ODT,
    PPTX,
    XLS,
    XLSM,
    XLSX,
    all_text,
)

SECRET = "TOP-SECRET-7f3a9c"


# -- zip bombs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "folder"), [(DOCX, "word/"), (XLSX, "xl/")])
def test_a_part_that_inflates_a_thousand_times_is_refused_unread(content_type, folder):
    bomb = files.zip_bomb(folder)
    assert len(bomb) < 200_000
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"unpacks to more than 100 times its size .*zip bomb"):
        parse(bomb, content_type)
    assert time.monotonic() - started < 1  # refused from the directory, nothing inflated


@pytest.mark.parametrize(("content_type", "folder"), [(XLSX, "xl/"), (DOCX, "word/")])
def test_an_archive_that_unpacks_past_200_mb_is_refused_unread(content_type, folder):
    with pytest.raises(ParseError, match=r"^the file unpacks to more than 200 MB"):
        parse(files.wide_zip_bomb(folder), content_type)


def test_an_archive_of_too_many_parts_is_refused():
    with pytest.raises(ParseError, match="more than 10,000 parts"):
        parse(files.many_parts_zip(), DOCX)


# -- XML external entities ----------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "build"), [
    (DOCX, files.docx_with_external_entity),
    (XLSX, files.xlsx_with_external_entity),
    (XLSX, lambda path: files.xlsx_with_external_entity(path, "xl/worksheets/sheet1.xml")),
    (XLSX, lambda path: files.xlsx_with_external_entity(path, "xl/workbook.xml")),
    (PPTX, files.pptx_with_external_entity),
    (ODT, files.odt_with_external_entity),
    (EPUB, files.epub_with_external_entity),
], ids=["docx", "xlsx-strings", "xlsx-sheet", "xlsx-workbook", "pptx", "odt", "epub"])
def test_external_entities_are_never_resolved(tmp_path, content_type, build):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    try:
        document = parse(build(str(secret)), content_type)
    except ParseError as error:  # refusing the file is as good as not resolving
        assert SECRET not in str(error) and SECRET not in error.detail
        assert str(error).endswith(("declares XML entities or a DTD, which uploads may not use",
                                    "is damaged, so it could not be read"))
        return
    assert SECRET not in all_text(document) and SECRET not in document.title


def test_docx_with_an_external_entity_keeps_its_other_text(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    text = all_text(parse(files.docx_with_external_entity(str(secret)), DOCX))
    assert text.startswith("Before")
    assert SECRET not in text


def test_openpyxl_parses_with_defusedxml():
    assert openpyxl.DEFUSEDXML is True


# -- passwords ----------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "build"), [
    (DOCX, files.docx_file), (XLSX, files.xlsx_file), (PPTX, files.pptx_file),
    (XLSM, files.xlsx_file), (XLS, files.xlsx_file),  # Excel saves encrypted workbooks of every kind so
], ids=["docx", "xlsx", "pptx", "xlsm", "xls"])
def test_password_protected_office_files_are_refused_in_words(content_type, build):
    with pytest.raises(ParseError) as raised:
        parse(files.encrypted(build()), content_type)
    assert str(raised.value) == "the file is password-protected; upload it without a password"


def test_an_encrypted_workbook_attached_to_an_email_is_skipped_with_a_warning():
    message = files._email("Locked", files.EML_FROM, files.EML_TO, files.EML_DATE, plain="Password follows.")
    message.add_attachment(files.encrypted(files.xlsx_file()), maintype="application", subtype="octet-stream",
                           filename="budget.xlsx")
    document = parse(bytes(message), EML)
    assert document.warnings == ["attachment budget.xlsx was skipped: the file is password-protected; upload it "
                                 "without a password"]


# -- damaged files ------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "build"), [
    (DOCX, files.docx_file), (ODT, files.odt_file), (PPTX, files.pptx_file), (ODP, files.odp_file),
    (XLSX, files.xlsx_file), (ODS, files.ods_file), (EPUB, files.epub_file),
    (XLS, files.xls_file), (MSG, files.msg_file),
], ids=["docx", "odt", "pptx", "odp", "xlsx", "ods", "epub", "xls", "msg"])
def test_a_truncated_file_is_damaged(content_type, build):
    content = build()
    with pytest.raises(ParseError) as raised:
        parse(content[: len(content) // 2], content_type)
    assert "damaged" in str(raised.value)


@pytest.mark.parametrize(("content_type", "build", "part"), [
    (DOCX, files.docx_file, "word/document.xml"),
    (XLSX, files.xlsx_file, "xl/worksheets/sheet1.xml"),
    (PPTX, files.pptx_file, "ppt/slides/slide1.xml"),
    (ODT, files.odt_file, "content.xml"),
    (ODS, files.ods_file, "content.xml"),
    (ODP, files.odp_file, "content.xml"),
    (EPUB, files.epub_file, "EPUB/content.opf"),
], ids=["docx", "xlsx", "pptx", "odt", "ods", "odp", "epub"])
def test_a_part_that_is_not_xml_makes_the_file_damaged(capsys, content_type, build, part):
    broken = files.replace_part(build(), part, b"<not-closed><at all")
    with pytest.raises(ParseError) as raised:
        parse(broken, content_type)
    assert str(raised.value).endswith("is damaged, so it could not be read")
    assert raised.value.detail  # what the library said, for the log
    assert "<not-closed>" not in capsys.readouterr().out  # odfpy prints what it cannot parse


def test_library_words_stay_out_of_the_message():
    with pytest.raises(ParseError) as raised:
        parse(files.replace_part(files.docx_file(), "word/document.xml", b"<w:document/>"), DOCX)
    message = str(raised.value)
    assert message == "the Word document is damaged, so it could not be read"
    assert "Error" in raised.value.detail


# -- mislabelled files --------------------------------------------------------------------


@pytest.mark.parametrize(("content", "content_type", "message"), [
    (files.PNG, DOCX, "the file is a PNG image, not a Word document (.docx)"),
    (b"Quarterly numbers\nare in the appendix.\n", XLSX, "the file is a text file, not an Excel workbook (.xlsx)"),
    (files.xlsx_file(), DOCX, "the file is an Excel workbook (.xlsx), not a Word document (.docx)"),
    (files.docx_file(), EPUB, "the file is a Word document (.docx), not an EPUB e-book (.epub)"),
    (files.ods_file(), ODT, "the file is an OpenDocument spreadsheet (.ods), not an OpenDocument text (.odt)"),
    (files.xls_file(), DOCX, "the file is an Excel 97-2003 workbook (.xls), not a Word document (.docx)"),
    (files.msg_file(attach=False), XLSX, "the file is an Outlook message (.msg), not an Excel workbook (.xlsx)"),
    (files.docx_file(), MSG, "the file is a Word document (.docx), not an Outlook message (.msg)"),
    (files.xls_file(), MSG, "the file is an Excel 97-2003 workbook (.xls), not an Outlook message (.msg)"),
    (b"%PDF-1.4\n%...", PPTX, "the file is a PDF, not a PowerPoint presentation (.pptx)"),
    (files.PNG, CSV, "the file is a PNG image, not a CSV file (.csv)"),
    (files.PNG, EML, "the file is a PNG image, not an e-mail message (.eml)"),
    (files.PNG, XLS, "the file is a PNG image, not an Excel 97-2003 workbook (.xls)"),
    (files.many_parts_zip(parts=3).replace(b"word/", b"misc/"), DOCX,
     "the file is a zip archive, not a Word document (.docx)"),
], ids=["png-docx", "text-xlsx", "xlsx-docx", "docx-epub", "ods-odt", "xls-docx", "msg-xlsx", "docx-msg",
        "xls-msg", "pdf-pptx", "png-csv", "png-eml", "png-xls", "zip-docx"])
def test_a_file_that_is_not_what_its_type_says_is_refused_saying_what_it_is(content, content_type, message):
    with pytest.raises(ParseError) as raised:
        parse(content, content_type)
    assert str(raised.value) == f"{message}; check that its name or type matches its content"


def test_describe_names_what_it_does_not_parse():
    assert containers.describe(b"GIF89a....") == "a GIF image"
    assert containers.describe(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "a WebP image"
    assert containers.describe(files.encrypted(files.docx_file())) == "a password-protected Office file"
    assert containers.describe(bytes(range(256)) * 40) == "binary data"


def test_nested_internal_entities_do_not_expand():
    laughs = "".join(f'<!ENTITY e{n} "{f"&e{n - 1};" * 10}">' for n in range(1, 10))
    doctype = f'<!DOCTYPE w:document [<!ENTITY e0 "lol">{laughs}]>'
    started = time.monotonic()
    try:
        text = all_text(parse(files.docx_with_body("<w:p><w:r><w:t>x &e9; y</w:t></w:r></w:p>", doctype), DOCX))
    except ParseError:
        text = ""
    assert "lollol" not in text
    assert time.monotonic() - started < 1


def test_a_macro_enabled_word_document_named_docx_is_refused_saying_so():
    content = files.docx_file()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        types = archive.read("[Content_Types].xml").decode()
    types = types.replace("vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                          "vnd.ms-word.document.macroEnabled.main+xml")
    assert "macroEnabled" in types
    with pytest.raises(ParseError, match=r"macro-enabled document \(\.dotx, \.docm\), which we do not read"):
        parse(files.replace_part(content, "[Content_Types].xml", types.encode()), DOCX)
