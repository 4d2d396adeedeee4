"""Documents through the real app and a tiny model: the synchronous route, the job API (with its
files shared between two app instances), and every refusal with its status.

What these check holds whatever the model writes: the output opens in its format's library with the
source's structure, runs keep their styles, the job's progress counts up to its total.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import zipfile

import docx
import polib
import pytest

from tests.app_fixtures import PAIRS, anyio_backend, one_torch_thread, parse_sse, serving, tiny_weights  # noqa: F401
from tests.test_documents import SRT, make_docx, make_po

pytestmark = pytest.mark.anyio

FORM = {"source": "es", "target": "en", "strategy": "greedy"}


@pytest.fixture(scope="module")
async def client(tiny_weights, tmp_path_factory):
    async with serving(tiny_weights, documents_dir=tmp_path_factory.mktemp("jobs"), document_max_bytes=200_000,
                       document_max_members=50, document_sync_max_segments=40) as client:
        yield client


async def post_file(client, name, data, path="/documents/translate", **form):
    return await client.post(path, files={"file": (name, data)}, data=FORM | form)


def paragraphs_docx(texts: list[str]) -> bytes:
    d = docx.Document()
    for text in texts:
        d.add_paragraph(text)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


async def test_docx_is_translated_with_its_structure(client):
    response = await post_file(client, "informe.docx", make_docx())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "informe.docx" in response.headers["content-disposition"]
    before, after = docx.Document(io.BytesIO(make_docx())), docx.Document(io.BytesIO(response.content))
    assert len(after.paragraphs) == len(before.paragraphs) and len(after.tables) == len(before.tables)
    first = after.paragraphs[0]
    assert first.text != before.paragraphs[0].text  # translated
    # Every run of the source's styles is there, each around some of the translated words.
    assert {(r.bold, r.italic) for r in first.runs} == {(r.bold, r.italic) for r in before.paragraphs[0].runs}
    assert after.paragraphs[-1].text == "12345"


async def test_known_sentences_are_translated_as_texts_are(client):
    es, en = PAIRS[0]
    response = await post_file(client, "a.txt", f"{es}\n\n{PAIRS[1][0]}\n".encode())
    assert response.status_code == 200, response.text
    plain = await client.post("/translate", json={"text": [es, PAIRS[1][0]], "source": "es", "target": "en",
                                                  "decoding": {"strategy": "greedy"}})
    texts = [t["text"] for t in plain.json()["translations"]]
    assert response.content.decode() == f"{texts[0]}\n\n{texts[1]}\n"


async def test_srt_and_po_keep_their_structure(client):
    response = await post_file(client, "a.srt", SRT.encode())
    assert response.status_code == 200
    import srt

    before, after = list(srt.parse(SRT)), list(srt.parse(response.content.decode()))
    assert [(c.index, c.start, c.end) for c in after] == [(c.index, c.start, c.end) for c in before]
    response = await post_file(client, "a.po", make_po())
    assert response.status_code == 200
    entries = polib.pofile(response.content.decode())
    assert all(e.msgstr or e.msgstr_plural for e in entries) and "fuzzy" in entries[0].flags


async def test_nothing_translatable_comes_back_unchanged(client):
    response = await post_file(client, "n.txt", b"12 34\n\n---\n")
    assert response.status_code == 200 and response.content == b"12 34\n\n---\n"


# --- refusals --------------------------------------------------------------------------------


async def test_unknown_type_is_415_listing_the_formats(client):
    response = await post_file(client, "a.exe", b"MZ\x90\x00")
    assert response.status_code == 415 and ".docx" in response.json()["detail"] and ".srt" in response.json()["detail"]


async def test_mismatched_type_is_415(client):
    response = await post_file(client, "a.docx", b"just some text")
    assert response.status_code == 415 and "supported formats" in response.json()["detail"]


async def test_over_the_size_limit_is_413(client):
    response = await post_file(client, "a.txt", b"hola " * 50_000)
    assert response.status_code == 413 and "DOCUMENT_MAX_BYTES" in response.json()["detail"]


async def test_zip_bomb_is_413_without_expanding(client):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (150 * 1024 * 1024))
    bomb = out.getvalue()
    assert len(bomb) < 200_000
    response = await post_file(client, "bomb.docx", bomb)
    assert response.status_code == 413 and "DOCUMENT_MAX_UNCOMPRESSED_BYTES" in response.json()["detail"]
    # Refused from the directory alone: with the compressed data cut out, the answer is the same.
    directory = bomb.rfind(b"PK\x01\x02")
    header_end = 30 + len("word/document.xml")
    hollow = bomb[:header_end] + bomb[directory:]
    response = await post_file(client, "bomb.docx", hollow)
    assert response.status_code == 413 and "DOCUMENT_MAX_UNCOMPRESSED_BYTES" in response.json()["detail"]


async def test_too_many_members_is_413(client):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(60):
            z.writestr(f"m{i}.xml", b"<a/>")
    response = await post_file(client, "many.odt", out.getvalue())
    assert response.status_code == 413 and "DOCUMENT_MAX_MEMBERS" in response.json()["detail"]


async def test_corrupt_and_password_protected_packages_are_422(client):
    response = await post_file(client, "a.docx", b"PK\x03\x04" + b"\x00" * 100)
    assert response.status_code == 422 and "zip" in response.json()["detail"]
    response = await post_file(client, "a.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    assert response.status_code == 422 and "password" in response.json()["detail"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("word/document.xml", b"<a/>")
    encrypted = bytearray(out.getvalue())
    for offset in (6, encrypted.rfind(b"PK\x01\x02") + 8):  # the encrypted flag, in the local and central headers
        encrypted[offset] |= 1
    response = await post_file(client, "a.docx", bytes(encrypted))
    assert response.status_code == 422 and "password" in response.json()["detail"]


async def test_xml_with_entities_is_422_and_never_fetched(client):
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2"><file><body>'
            b'<trans-unit id="1"><source>&e;</source></trans-unit></body></file></xliff>')
    response = await post_file(client, "a.xlf", evil)
    assert response.status_code == 422 and "entities" in response.json()["detail"]
    assert "root:" not in response.text


async def test_po_with_broken_syntax_is_422_naming_the_line(client):
    broken = make_po().decode() + '\nmsgid "never closed\nmsgstr ""\n'
    line = broken.splitlines().index('msgid "never closed') + 1
    response = await post_file(client, "a.po", broken.encode())
    assert response.status_code == 422 and f"line {line}" in response.json()["detail"]


async def test_bad_options_are_422(client):
    response = await post_file(client, "a.txt", b"Hola", target="fr")
    assert response.status_code == 422 and "unknown language" in response.text
    response = await post_file(client, "a.txt", b"Hola", strategy="beam", beam_size="99")
    assert response.status_code == 422 and "MAX_BEAM_SIZE" in response.text


async def test_a_large_document_on_the_synchronous_route_is_413_pointing_at_jobs(client):
    response = await post_file(client, "big.docx", paragraphs_docx([PAIRS[i % 30][0] for i in range(41)]))
    assert response.status_code == 413 and "/documents/jobs" in response.json()["detail"]


# --- jobs ------------------------------------------------------------------------------------


async def wait_finished(client, job_id: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = (await client.get(f"/documents/jobs/{job_id}")).json()
        if state["status"] in ("done", "failed", "cancelled"):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {state}")


async def test_job_submit_status_result(client):
    response = await post_file(client, "doc.docx", make_docx(), path="/documents/jobs")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["segments_total"] >= 5 and job["status"] in ("queued", "running")
    assert (await client.get(f"/documents/jobs/{job['id']}/result")).status_code in (409, 200)
    state = await wait_finished(client, job["id"])
    assert state["status"] == "done" and state["segments_done"] == state["segments_total"]
    assert state["result_url"].endswith(f"/documents/jobs/{job['id']}/result")
    result = await client.get(f"/documents/jobs/{job['id']}/result")
    assert result.status_code == 200 and "doc.docx" in result.headers["content-disposition"]
    assert len(docx.Document(io.BytesIO(result.content)).paragraphs) == len(
        docx.Document(io.BytesIO(make_docx())).paragraphs)


async def test_unknown_job_is_404(client):
    for path in ("/documents/jobs/0123456789abcdef0123456789abcdef", "/documents/jobs/../../etc/passwd",
                 "/documents/jobs/nothex/result"):
        assert (await client.get(path)).status_code == 404
    assert (await client.post("/documents/jobs/0123456789abcdef0123456789abcdef/cancel")).status_code == 404
    assert (await client.get("/documents/jobs/0123456789abcdef0123456789abcdef/events")).status_code == 404


async def test_cancel_stops_a_running_job(client):
    big = paragraphs_docx([PAIRS[i % 30][0] for i in range(200)])
    job = (await post_file(client, "big.docx", big, path="/documents/jobs")).json()
    cancelled = await client.post(f"/documents/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await asyncio.sleep(0.5)
    state = (await client.get(f"/documents/jobs/{job['id']}")).json()
    assert state["status"] == "cancelled" and state["segments_done"] < state["segments_total"]
    assert (await client.get(f"/documents/jobs/{job['id']}/result")).status_code == 409


async def test_another_instance_sharing_the_folder_serves_the_job_and_a_restart_keeps_results(tiny_weights, tmp_path):
    async with serving(tiny_weights, documents_dir=tmp_path) as first:
        job = (await post_file(first, "a.srt", SRT.encode(), path="/documents/jobs")).json()
        async with serving(tiny_weights, documents_dir=tmp_path) as second:
            state = await wait_finished(second, job["id"])  # the first runs it; the second reads its files
            assert state["status"] == "done"
            from_second = await second.get(f"/documents/jobs/{job['id']}/result")
        from_first = await first.get(f"/documents/jobs/{job['id']}/result")
    assert from_second.status_code == 200 and from_second.content == from_first.content
    async with serving(tiny_weights, documents_dir=tmp_path) as restarted:
        again = await restarted.get(f"/documents/jobs/{job['id']}/result")
        assert again.status_code == 200 and again.content == from_first.content


async def test_expired_jobs_are_deleted(tiny_weights, tmp_path):
    async with serving(tiny_weights, documents_dir=tmp_path, document_expiry_s=0.2) as client:
        job = (await post_file(client, "a.txt", b"Hola", path="/documents/jobs")).json()
        await wait_finished(client, job["id"])
        await asyncio.sleep(0.5)
        await post_file(client, "b.txt", "Adiós".encode(), path="/documents/jobs")  # a submission sweeps
        assert (await client.get(f"/documents/jobs/{job['id']}")).status_code == 404


async def test_progress_events_of_a_300_segment_document_while_short_requests_answer(tiny_weights, tmp_path):
    big = paragraphs_docx([PAIRS[i % 30][0] for i in range(320)])
    async with serving(tiny_weights, documents_dir=tmp_path) as client:
        job = (await post_file(client, "long.docx", big, path="/documents/jobs")).json()
        assert job["segments_total"] == 320

        async def short_requests() -> list[int]:
            """For each short request, how many of the document's segments were done when it was answered."""
            seen = []
            for es, _ in PAIRS[:4]:
                response = await client.post("/translate", json={"text": es, "source": "es", "target": "en"})
                assert response.status_code == 200
                seen.append((await client.get(f"/documents/jobs/{job['id']}")).json()["segments_done"])
            return seen

        async def events() -> list[tuple[str, dict]]:
            response = await client.get(f"/documents/jobs/{job['id']}/events", timeout=300)
            return parse_sse(response.text)

        stream, seen = await asyncio.gather(events(), short_requests())
    progress = [data for name, data in stream if name == "progress"]
    assert stream[-1][0] == "done" and stream[-1][1]["segments_done"] == 320
    done = [p["segments_done"] for p in progress]
    assert len(set(done)) >= 3 and done == sorted(done)
    assert any(p["eta_s"] is not None and p["eta_s"] > 0 for p in progress)
    # Every short request was answered while the document was decoding, not after it.
    assert len(seen) == 4 and max(seen) < 320


async def test_a_job_whose_server_stopped_is_reported_failed(client):
    job = (await post_file(client, "a.srt", SRT.encode(), path="/documents/jobs")).json()
    await wait_finished(client, job["id"])
    store = client.app.state.document_jobs.store
    store.update(job["id"], status="running")  # as a replica that stopped halfway left it
    assert (await client.get(f"/documents/jobs/{job['id']}")).json()["status"] == "running"
    state_file = store.path(job["id"], "state.json")
    long_ago = time.time() - store.stale_s - 1
    os.utime(state_file, (long_ago, long_ago))
    state = (await client.get(f"/documents/jobs/{job['id']}")).json()
    assert state["status"] == "failed" and "interrupted" in state["error"]


async def test_source_auto_and_a_named_glossary(tiny_weights, tmp_path):
    glossaries = tmp_path / "glossaries"
    glossaries.mkdir()
    (glossaries / "zoo.es-en.tsv").write_text("gato\tfeline\n", encoding="utf-8")
    text = f"{PAIRS[0][0]}\n\n{PAIRS[2][0]}\n".encode()
    async with serving(tiny_weights, documents_dir=tmp_path / "jobs", glossaries_dir=glossaries) as client:
        declared = await post_file(client, "a.txt", text)
        auto = await post_file(client, "a.txt", text, source="auto")
        assert auto.status_code == 200 and auto.content == declared.content
        named = await post_file(client, "a.txt", text, glossary_name="zoo")
        # The term opens each sentence here, where a lower-case term may take a capital.
        assert named.status_code == 200 and named.content.decode().lower().count("feline") == 2
        unknown = await post_file(client, "a.txt", text, glossary_name="nope")
        assert unknown.status_code == 422 and "no glossary 'nope'" in unknown.text


async def test_a_folder_that_cannot_be_written_is_503_not_a_crash(tiny_weights, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    async with serving(tiny_weights, documents_dir=blocked / "jobs") as client:
        response = await post_file(client, "a.txt", b"Hola", path="/documents/jobs")
        assert response.status_code == 503 and "DOCUMENTS_DIR" in response.json()["detail"]
        assert response.headers["retry-after"]


async def test_a_segment_over_a_limit_is_left_as_it_was_and_counted(tiny_weights, tmp_path):
    long_line = "El gato come pescado y el perro duerme en casa. " * 3
    text = f"{PAIRS[0][0]}\n{long_line}\n{PAIRS[1][0]}\n".encode()
    async with serving(tiny_weights, documents_dir=tmp_path, max_chars=100) as client:
        job = (await post_file(client, "a.txt", text, path="/documents/jobs")).json()
        state = await wait_finished(client, job["id"])
        assert state["status"] == "done" and state["untranslated"] == 1
        lines = (await client.get(f"/documents/jobs/{job['id']}/result")).text.split("\n")
    assert lines[1] == long_line and lines[0] != PAIRS[0][0] and lines[2] != PAIRS[1][0]


async def test_a_sentence_across_subtitle_cues_keeps_every_cue_and_timing(client):
    import srt

    es = PAIRS[3][0].rstrip(".").split(" ")  # "El perro duerme en casa."
    cues = srt.compose([
        srt.Subtitle(1, srt.timedelta(seconds=1), srt.timedelta(seconds=2), " ".join(es[:3])),
        srt.Subtitle(2, srt.timedelta(seconds=2), srt.timedelta(seconds=3), " ".join(es[3:]) + "."),
    ])
    response = await post_file(client, "a.srt", cues.encode())
    assert response.status_code == 200
    after = list(srt.parse(response.content.decode()))
    assert [(c.index, c.start, c.end) for c in after] == [(c.index, c.start, c.end) for c in srt.parse(cues)]
    assert "<img" not in response.text and " ".join(c.content for c in after) != " ".join(es) + "."
