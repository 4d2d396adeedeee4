"""The LibreTranslate-compatible routes receive exactly what LibreTranslate's clients send."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from tests.app_fixtures import (  # noqa: F401 (fixtures)
    PAIRS,
    anyio_backend,
    one_torch_thread,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

URL = "/compat/libretranslate/translate"
(ES1, EN1), (ES2, EN2) = PAIRS[0], PAIRS[1]
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
async def client(tiny_weights):
    async with serving(tiny_weights) as client:
        yield client


async def test_json_with_q_as_a_string(client):
    # LibreTranslate's documented fetch() example, api_key and all.
    body = json.dumps({"q": ES1, "source": "es", "target": "en", "format": "text", "api_key": ""})
    response = await client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == {"translatedText": EN1}


async def test_json_with_q_as_a_list(client):
    response = await client.post(URL, json={"q": [ES1, ES2], "source": "es", "target": "en", "format": "text"})
    assert response.json() == {"translatedText": [EN1, EN2]}


async def test_form_with_q_as_a_string(client):
    # What libretranslatepy sends: urllib.request with urlencoded params as data.
    response = await client.post(URL, content=urlencode({"q": EN1, "source": "en", "target": "es"}).encode(),
                                 headers=FORM)
    assert response.status_code == 200, response.text
    assert response.json() == {"translatedText": ES1}


async def test_form_with_q_repeated_as_a_list(client):
    body = urlencode([("q", ES1), ("q", ES2), ("source", "es"), ("target", "en"), ("api_key", "")])
    response = await client.post(URL, content=body.encode(), headers=FORM)
    assert response.json() == {"translatedText": [EN1, EN2]}


async def test_multipart_form(client):
    response = await client.post(URL, files={"q": (None, ES1), "source": (None, "es"), "target": (None, "en")})
    assert response.json() == {"translatedText": EN1}


async def test_alternatives(client):
    response = await client.post(URL, json={"q": ES1, "source": "es", "target": "en", "alternatives": 2})
    answer = response.json()
    assert answer["translatedText"] == EN1
    assert len(answer["alternatives"]) == 2 and all(isinstance(a, str) for a in answer["alternatives"])
    response = await client.post(URL, data={"q": [ES1, ES2], "source": "es", "target": "en", "alternatives": "1"})
    assert [len(a) for a in response.json()["alternatives"]] == [1, 1]


async def test_auto_source_detects_the_language(client):
    answer = (await client.post(URL, json={"q": ES1, "source": "auto", "target": "en"})).json()
    assert answer["translatedText"] == EN1
    assert answer["detectedLanguage"]["language"] == "es" and answer["detectedLanguage"]["confidence"] > 50
    # A list mixing both languages: the text already in the target language comes back as it was.
    answer = (await client.post(URL, json={"q": [ES1, EN2], "source": "auto", "target": "en"})).json()
    assert answer["translatedText"] == [EN1, EN2]
    assert [d["language"] for d in answer["detectedLanguage"]] == ["es", "en"]


async def test_languages(client):
    response = await client.get("/compat/libretranslate/languages")
    assert response.json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]


@pytest.mark.parametrize(
    "body,words",
    [
        ({"source": "es", "target": "en"}, "q: this field is required"),
        ({"q": "", "source": "es", "target": "en"}, "empty"),
        ({"q": ES1, "source": "es", "target": "fr"}, "unknown language 'fr'"),
        ({"q": "<p>El gato <b>come</p>", "source": "es", "target": "en", "format": "html"},
         "</p> ends while <b> opened at line 1, column 12 is still open"),
        ({"q": ES1, "source": "es", "target": "en", "format": "pdf"}, "'text' or 'html'"),
        ({"q": ES1, "source": "es", "target": "en", "alternatives": 50}, "MAX_BEAM_SIZE"),
    ],
)
async def test_errors_carry_detail_and_libretranslate_error(client, body, words):
    # LibreTranslate answers bad input with 400, and a client library raises its BadRequestError on 400 only.
    for response in (await client.post(URL, json=body), await client.post(URL, data=body),
                     await client.post(URL, params=body)):
        assert response.status_code == 400
        assert words in response.json()["error"] and response.json()["detail"]


async def test_a_body_that_is_neither_json_nor_a_form(client):
    response = await client.post(URL, content=b"q=hola", headers={"content-type": "text/plain"})
    assert response.status_code == 400 and "query string" in response.json()["error"]
    response = await client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = await client.post(URL, content=b'["q"]', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Invalid JSON format" in response.json()["error"]


async def test_parameters_in_the_query_string_of_an_empty_post(client):
    # What deep-translator sends: requests.post(url, params=...), no body at all.
    response = await client.post(URL, params={"q": ES1, "source": "es", "target": "en", "format": "text",
                                              "api_key": "x"})
    assert response.status_code == 200, response.text
    assert response.json() == {"translatedText": EN1}
    response = await client.post(URL, params=[("q", ES1), ("q", ES2), ("source", "es"), ("target", "en")])
    assert response.json() == {"translatedText": [EN1, EN2]}


async def test_query_string_and_form_are_read_together_like_flask_request_values(client):
    response = await client.post(URL, params={"source": "es", "target": "en"}, data={"q": ES1})
    assert response.json() == {"translatedText": EN1}


async def test_detect_ranks_both_languages(client):
    for response in (await client.post("/compat/libretranslate/detect", data={"q": ES1}),
                     await client.post("/compat/libretranslate/detect", json={"q": EN1}),
                     await client.post("/compat/libretranslate/detect", params={"q": ES1})):
        assert response.status_code == 200, response.text
        ranked = response.json()
        assert [d["language"] for d in ranked] in (["es", "en"], ["en", "es"]) and ranked[0]["confidence"] > 90
    assert (await client.post("/compat/libretranslate/detect", json={"q": EN1})).json()[0]["language"] == "en"
    missing = await client.post("/compat/libretranslate/detect", data={})
    assert missing.status_code == 400 and "q: this field is required" in missing.json()["error"]


async def test_frontend_settings_health_suggestions_off_and_files_on(client):
    settings = (await client.get("/compat/libretranslate/frontend/settings")).json()
    assert settings["charLimit"] == 2000 and settings["keyRequired"] is False
    assert settings["language"]["source"] == {"code": "auto", "name": "Auto Detect"}
    assert settings["filesTranslation"] is True and {".docx", ".odt", ".txt", ".epub"} <= set(
        settings["supportedFilesFormat"])
    assert (await client.get("/compat/libretranslate/health")).json() == {"status": "ok"}
    response = await client.post("/compat/libretranslate/suggest", data={"q": ES1})
    assert response.status_code == 403 and "disabled" in response.json()["error"]


async def test_translate_file_refusals_are_libretranslate_400s(client):
    response = await client.post("/compat/libretranslate/translate_file", data={"source": "es", "target": "en"})
    assert response.status_code == 400 and "file" in response.json()["error"]
    response = await client.post("/compat/libretranslate/translate_file", data={"source": "es", "target": "en"},
                                 files={"file": ("a.exe", b"MZ")})
    assert response.status_code == 400 and ".docx" in response.json()["error"]
