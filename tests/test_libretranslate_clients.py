"""Real LibreTranslate client libraries from PyPI against `python -m app` on 127.0.0.1.

Each library calls the server the way it calls LibreTranslate: libretranslatepy with urllib and a
form body, deep-translator with every parameter in the query string of an empty POST, and
libretranslate-aio with httpx, reading `error` and branching on LibreTranslate's status codes.
"""

from __future__ import annotations

import io
import urllib.error

import docx
import httpx
import pytest
from deep_translator import LibreTranslator
from libretranslate_aio import LibreTranslate
from libretranslate_aio.exceptions import BadRequestError, ForbiddenError
from libretranslatepy import LibreTranslateAPI

from bench.common import app_process
from tests.app_fixtures import PAIRS, tiny_weights  # noqa: F401 (fixture)
from tests.test_documents import make_docx

(ES1, EN1), (ES2, EN2) = PAIRS[0], PAIRS[1]
PREFIX = "/compat/libretranslate"


@pytest.fixture(scope="module")
def url(tiny_weights, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("lt-jobs")
    with (tmp_path_factory.mktemp("lt") / "server.log").open("w+b") as log, \
            app_process(tiny_weights, log, DOCUMENTS_DIR=jobs) as server:
        yield server.url + PREFIX


@pytest.fixture(scope="module")
def keyed_url(tiny_weights, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("lt-keyed-jobs")
    with (tmp_path_factory.mktemp("lt-keyed") / "server.log").open("w+b") as log, \
            app_process(tiny_weights, log, API_KEYS="client-key-0123", DOCUMENTS_DIR=jobs) as server:
        yield server.url + PREFIX


def test_libretranslatepy_translates_detects_and_lists_languages(url):
    api = LibreTranslateAPI(url)
    assert api.translate(ES1, "es", "en") == EN1
    assert api.translate(EN2, "en", "es") == ES2
    assert api.translate(ES1, "auto", "en") == EN1
    detected = api.detect(ES1)
    assert detected[0]["language"] == "es" and detected[0]["confidence"] > detected[1]["confidence"]
    assert {language["code"] for language in api.languages()} == {"en", "es"}


def test_libretranslatepy_gets_an_http_error_for_bad_input(url):
    with pytest.raises(urllib.error.HTTPError) as refused:
        LibreTranslateAPI(url).translate(ES1, "es", "fr")
    assert refused.value.code == 400 and b"unknown language 'fr'" in refused.value.read()


def test_deep_translator_sends_the_query_string_and_gets_translations(url):
    translator = LibreTranslator(source="es", target="en", api_key="not-checked-here", custom_url=url + "/")
    assert translator.translate(ES1) == EN1
    assert translator.translate_batch([ES1, ES2]) == [EN1, EN2]


def test_libretranslate_aio_reads_every_route_it_knows(url):
    with LibreTranslate(url) as client:
        assert client.translate(ES1, "es", "en").translated_text == EN1
        assert client.translate([ES1, ES2], "es", "en").translated_text == [EN1, EN2]
        auto = client.translate(ES1, "auto", "en")
        assert auto.translated_text == EN1 and auto.detected_language.language == "es"
        with_alternatives = client.translate(ES1, "es", "en", alternatives=2)
        assert len(with_alternatives.alternatives) == 2
        assert client.detect(EN1)[0].language == "en"
        assert sorted(language.code for language in client.languages()) == ["en", "es"]
        settings = client.frontend_settings()
        assert settings.char_limit == 2000 and not settings.key_required and settings.language.source.code == "auto"
        assert client.health()
        # HTML keeps its elements around the translated text; malformed HTML is LibreTranslate's 400.
        assert client.translate(f"<p>{ES1}</p>", "es", "en", format="html").translated_text == f"<p>{EN1}</p>"
        with pytest.raises(BadRequestError, match="malformed HTML: .* <b> opened at line 1, column 4 is still open"):
            client.translate(f"<p><b>{ES1}</p>", "es", "en", format="html")
        with pytest.raises(BadRequestError, match="q"):
            client.translate("", "es", "en")
        with pytest.raises(ForbiddenError, match="Suggestions are disabled"):
            client.suggest(ES1, EN1, "es", "en")


def test_a_server_with_api_keys_refuses_a_wrong_key_as_libretranslate_does(keyed_url):
    with LibreTranslate(keyed_url, api_key="wrong-key") as client, pytest.raises(ForbiddenError):
        client.translate(ES1, "es", "en")
    with LibreTranslate(keyed_url, api_key="client-key-0123") as client:
        assert client.translate(ES1, "es", "en").translated_text == EN1
    assert LibreTranslator(source="es", target="en", api_key="client-key-0123",
                           custom_url=keyed_url + "/").translate(ES1) == EN1


def test_libretranslate_aio_translates_a_file_and_fetches_it_from_the_url_given(url, tmp_path):
    source = tmp_path / "carta.docx"
    source.write_bytes(make_docx())
    with LibreTranslate(url) as client:
        assert ".docx" in client.frontend_settings().supported_files_format
        answer = client.translate_file(source, "es", "en")
    assert answer.translated_file_url.startswith(url + "/download_file/") and answer.translated_file_url.endswith(
        "carta.docx")
    fetched = httpx.get(answer.translated_file_url)
    assert fetched.status_code == 200
    before, after = docx.Document(io.BytesIO(make_docx())), docx.Document(io.BytesIO(fetched.content))
    assert len(after.paragraphs) == len(before.paragraphs) and after.paragraphs[0].text != before.paragraphs[0].text


def test_a_file_url_needs_no_key_but_translate_file_does(keyed_url, tmp_path):
    source = tmp_path / "a.txt"
    source.write_text(ES1, encoding="utf-8")
    with LibreTranslate(keyed_url, api_key="wrong-key") as client, pytest.raises(ForbiddenError):
        client.translate_file(source, "es", "en")
    with LibreTranslate(keyed_url, api_key="client-key-0123") as client:
        answer = client.translate_file(source, "es", "en")
    assert httpx.get(answer.translated_file_url).text == EN1
