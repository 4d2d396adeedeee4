"""End-to-end test of the attention viewer at `/`, in headless Chromium against a real uvicorn server.

The server runs as a subprocess on a free port, serving a tiny model this test trains in a few
seconds (a BPE on a few dozen sentence pairs and a 2+2-layer Transformer that memorises them),
so the page shows real tokens, probabilities and attention without the shipped weights.
Chromium comes from Debian (`.ci/install-browser.sh`); Playwright's own browser download is not used.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bench.common import app_process
from tests.app_fixtures import build_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "viewer"
SENTENCE = "El gato come pescado."

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn serving the app with the tiny model; yields its base URL."""
    weights = tmp_path_factory.mktemp("weights")
    build_tiny_model(weights)
    with (weights.parent / "server.log").open("w+b") as log, \
            app_process(weights, log, DEVICE="cpu", LOG_LEVEL="warning", OMP_NUM_THREADS=1) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; run .ci/install-browser.sh (Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing; pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    yield page
    context.close()


def _wait_done(page, state: str = "done") -> None:
    page.wait_for_selector(f"body[data-state={state}]", timeout=60_000)


def _cells(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#heatmap td.cell",
        "els => els.map(e => ({row: +e.dataset.row, col: +e.dataset.col, weight: +e.dataset.weight}))",
    )


def _matrix(cells: list[dict], rows: int, cols: int) -> list[list[float]]:
    m = [[math.nan] * cols for _ in range(rows)]
    for c in cells:
        m[c["row"]][c["col"]] = c["weight"]
    return m


def _mean_over_heads(heads: list[list[list[float]]]) -> list[list[float]]:
    return [[sum(h[i][j] for h in heads) / len(heads) for j in range(len(heads[0][0]))] for i in range(len(heads[0]))]


def _assert_close(got: list[list[float]], want: list[list[float]], tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, abs=tol), f"row {i}"


def _assert_rows_sum_to_one(m: list[list[float]]) -> None:
    for i, row in enumerate(m):
        assert sum(row) == pytest.approx(1.0, abs=1e-4), f"row {i} sums to {sum(row)}"


def test_viewer_link_translates_and_shows_attention(page, server):
    (model,) = httpx.get(f"{server}/models").json()
    decoder_layers = model["config"]["decoder_layers"]
    assert decoder_layers == 2
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "beam", "beam_size": "4"}
    page.goto(f"{server}/?{urlencode(query)}")
    _wait_done(page)

    # The same request through the API: the page must show exactly this answer.
    api = httpx.post(f"{server}/translate", timeout=60, json={
        "text": SENTENCE, "source": "es", "target": "en",
        "decoding": {"strategy": "beam", "beam_size": 4},
        "output": {"steps": True, "top_k": 5, "attention": "heads", "attention_layers": list(range(decoder_layers))},
    })
    assert api.status_code == 200, api.text
    answer = api.json()["translations"][0]
    tokens, source_tokens = answer["tokens"], answer["source_tokens"]
    attention = answer["attention"]
    assert attention["layers"] == list(range(decoder_layers))
    heads_by_layer = dict(zip(attention["layers"], attention["weights"]))

    assert page.inner_text("#translation") == answer["text"]
    assert page.eval_on_selector_all(".tok", "els => els.map(e => e.dataset.token)") == tokens
    assert page.eval_on_selector_all(".src-tok", "els => els.map(e => e.dataset.token)") == source_tokens
    shown_p = page.eval_on_selector_all(".tok", "els => els.map(e => +e.dataset.probability)")
    assert shown_p == pytest.approx([s["probability"] for s in answer["steps"]], abs=1e-9)

    # Defaults: last layer, mean over heads; the URL now records them.
    assert page.input_value("#layer") == str(decoder_layers - 1)
    assert page.input_value("#head") == "mean"
    assert "layer=1" in page.url and "head=mean" in page.url
    cells = _cells(page)
    assert len(cells) == len(tokens) * len(source_tokens)
    assert {(c["row"], c["col"]) for c in cells} == {(i, j) for i in range(len(tokens)) for j in range(len(source_tokens))}
    last_mean = _matrix(cells, len(tokens), len(source_tokens))
    _assert_close(last_mean, _mean_over_heads(heads_by_layer[decoder_layers - 1]))
    _assert_rows_sum_to_one(last_mean)

    # Another layer: the cells follow it.
    page.select_option("#layer", "0")
    first_mean = _matrix(_cells(page), len(tokens), len(source_tokens))
    _assert_close(first_mean, _mean_over_heads(heads_by_layer[0]))
    _assert_rows_sum_to_one(first_mean)
    assert max(abs(a - b) for ra, rb in zip(first_mean, last_mean) for a, b in zip(ra, rb)) > 1e-3
    assert "layer=0" in page.url

    # One head instead of the mean.
    page.select_option("#head", "2")
    head2 = _matrix(_cells(page), len(tokens), len(source_tokens))
    _assert_close(head2, heads_by_layer[0][2])
    _assert_rows_sum_to_one(head2)
    assert max(abs(a - b) for ra, rb in zip(head2, first_mean) for a, b in zip(ra, rb)) > 1e-3
    assert "head=2" in page.url

    # Hovering a target token highlights its row and shades the source by its weights.
    row = 1
    page.hover(f".tok[data-row='{row}']")
    active = page.eval_on_selector_all("#heatmap td.cell.is-active", "els => els.map(e => +e.dataset.row)")
    assert active == [row] * len(source_tokens)
    shade = page.eval_on_selector_all(".src-tok", "els => els.map(e => +e.style.getPropertyValue('--align'))")
    best = max(range(len(source_tokens)), key=lambda j: head2[row][j])
    assert shade[best] == pytest.approx(1.0)
    assert shade == pytest.approx([w / head2[row][best] for w in head2[row]], abs=2e-3)
    # The top-k alternatives of that step appear with it.
    alts = page.locator(f".tok-item[data-index='{row}'] .alts")
    assert alts.is_visible()
    assert alts.locator(".alt-token").all_inner_texts() == [t["token"] for t in answer["steps"][row]["top"]]

    # ...and the reverse: a source token shades the target tokens that attend to it.
    col = best
    page.hover(f".src-tok[data-col='{col}']")
    active = page.eval_on_selector_all("#heatmap td.cell.is-active", "els => els.map(e => +e.dataset.col)")
    assert active == [col] * len(tokens)
    shade = page.eval_on_selector_all(".tok", "els => els.map(e => +e.style.getPropertyValue('--align'))")
    column = [r[col] for r in head2]
    assert shade == pytest.approx([w / max(column) for w in column], abs=2e-3)

    # Keyboard: focusing a token shows its alternatives and names it for screen readers.
    page.mouse.move(0, 0)
    page.focus(".tok[data-row='0']")
    assert page.locator(".tok-item[data-index='0'] .alts").is_visible()
    label = page.get_attribute(".tok[data-row='0']", "aria-label")
    assert label.startswith("Token 1:") and "probability" in label

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.activeElement.blur()")
    page.hover(f"#heatmap tbody th[data-row='{row}']")
    page.screenshot(path=str(ARTIFACTS / "viewer-desktop.png"), full_page=True)

    # The URL reproduces the view: a fresh page on it shows layer 0, head 2 at once.
    link = page.url
    page.goto("about:blank")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(link)
    _wait_done(page)
    assert page.input_value("#layer") == "0" and page.input_value("#head") == "2"
    _assert_close(_matrix(_cells(page), len(tokens), len(source_tokens)), heads_by_layer[0][2])
    # Phone width: nothing but the heatmap's own scroller may be wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.hover(f"#heatmap tbody th[data-row='{row}']")
    page.screenshot(path=str(ARTIFACTS / "viewer-phone.png"), full_page=True)
    assert page.errors == []


def test_viewer_shows_api_errors(page, server):
    # beam_size above the server's limit: a 422 whose message the page shows as it is.
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "beam", "beam_size": "50"}
    page.goto(f"{server}/?{urlencode(query)}")
    _wait_done(page, "error")
    api = httpx.post(f"{server}/translate", timeout=60, json={
        "text": SENTENCE, "source": "es", "target": "en", "decoding": {"strategy": "beam", "beam_size": 50},
    })
    assert api.status_code == 422
    detail = api.json()["detail"]
    message = detail if isinstance(detail, str) else detail[0]["msg"]
    error = page.locator("#error")
    assert error.is_visible()
    assert "422" in error.inner_text() and message in error.inner_text()
    assert page.get_attribute("#error", "role") == "alert"
    assert page.locator("#result").is_hidden()

    # An empty text never reaches the server.
    page.fill("#text", "   ")
    page.click("#submit")
    assert "Type a text" in error.inner_text()
    assert page.errors == []


def test_the_docs_page_renders_every_operation_offline(page, server):
    """/docs in a browser that may only reach the server: Swagger UI draws an entry per route."""
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server) else route.abort())
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock", timeout=60_000)
    shown = set(page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)"))
    documented = set(httpx.get(f"{server}/openapi.json").json()["paths"])
    assert documented == shown and "/translate" in shown
    assert page.errors == []
