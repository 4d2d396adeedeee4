"""End-to-end test of the attention viewer at `/`, in headless Chromium against a real uvicorn server.

The server runs as a subprocess on a free port, serving a tiny model this test trains in a few
seconds (a BPE on a few dozen sentence pairs and a 2+2-layer Transformer that memorises them),
so the page shows real tokens, probabilities and attention without the shipped weights.
Chromium comes from Debian (`.ci/install-browser.sh`); Playwright's own browser download is not used.

The page tells "Transformers from top to bottom" for the typed sentence: the source tokens, the
positional-encoding table, the encoder's self-attention, then the decoding step by step (masked
decoder self-attention, cross-attention, projection + softmax top-k, whose alternatives re-translate
with decoding.prefix). The tests compare what it shows with the API's answer to the very request the
page sent, so they hold whatever the tiny model learnt.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

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
            app_process(weights, log, DEVICE="cpu", LOG_LEVEL="warning", OMP_NUM_THREADS=1,
                        DOCUMENTS_DIR=weights.parent / "jobs") as running:
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


def _cells(page, table: str = "#heatmap") -> list[dict]:
    return page.eval_on_selector_all(
        f"{table} td.cell",
        "els => els.map(e => ({row: +e.dataset.row, col: +e.dataset.col, weight: +e.dataset.weight,"
        " masked: e.dataset.masked === 'true' && e.classList.contains('masked')}))",
    )


def _query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def _config(server) -> dict:
    (model,) = httpx.get(f"{server}/models").json()
    return model["config"]


def _translate_request(page, action):
    """Runs `action` and returns the JSON body of the POST /translate the page sent for it."""
    with page.expect_request(lambda r: r.url.endswith("/translate") and r.method == "POST", timeout=60_000) as req:
        action()
    return req.value.post_data_json


def _replay(server, body: dict) -> dict:
    """The API's answer to exactly what the page asked (first translation)."""
    api = httpx.post(f"{server}/translate", json=body, timeout=60)
    assert api.status_code == 200, api.text
    return api.json()["translations"][0]


def _heads(attention: dict) -> dict[int, list]:
    assert attention["reduction"] == "heads"
    return dict(zip(attention["layers"], attention["weights"]))


def _detokenize(tokens: list[str]) -> str:
    return "".join(t for t in tokens if t != "</s>").replace("\u2581", " ").strip()


def _pe(pos: int, dim: int, d_model: int) -> float:
    """model/transformer.py PositionalEncoding, entry (pos, dim)."""
    angle = pos * math.exp(2 * (dim // 2) * (-math.log(10000.0) / d_model))
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


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
    assert _query(page)["layer"] == "1" and _query(page)["head"] == "mean"
    cells = _cells(page)
    assert len(cells) == len(tokens) * len(source_tokens)
    assert {(c["row"], c["col"]) for c in cells} == {
        (i, j) for i in range(len(tokens)) for j in range(len(source_tokens))}
    last_mean = _matrix(cells, len(tokens), len(source_tokens))
    _assert_close(last_mean, _mean_over_heads(heads_by_layer[decoder_layers - 1]))
    _assert_rows_sum_to_one(last_mean)

    # Another layer: the cells follow it.
    page.select_option("#layer", "0")
    first_mean = _matrix(_cells(page), len(tokens), len(source_tokens))
    _assert_close(first_mean, _mean_over_heads(heads_by_layer[0]))
    _assert_rows_sum_to_one(first_mean)
    assert max(abs(a - b) for ra, rb in zip(first_mean, last_mean) for a, b in zip(ra, rb)) > 1e-3
    assert _query(page)["layer"] == "0"

    # One head instead of the mean.
    page.select_option("#head", "2")
    head2 = _matrix(_cells(page), len(tokens), len(source_tokens))
    _assert_close(head2, heads_by_layer[0][2])
    _assert_rows_sum_to_one(head2)
    assert max(abs(a - b) for ra, rb in zip(head2, first_mean) for a, b in zip(ra, rb)) > 1e-3
    assert _query(page)["head"] == "2"

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


def test_viewer_tells_the_story_in_the_articles_order(page, server):
    config = _config(server)
    enc, dec, d_model = config["encoder_layers"], config["decoder_layers"], config["d_model"]
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "greedy"}
    body = _translate_request(page, lambda: page.goto(f"{server}/?{urlencode(query)}"))
    _wait_done(page)
    # One request asks for every head of every layer of the three attentions, layer counts from /models.
    assert body["decoding"] == {"strategy": "greedy"}
    out = body["output"]
    assert out["attention"] == "heads" and sorted(out["attention_kinds"]) == ["cross", "decoder", "encoder"]
    assert out["encoder_attention_layers"] == list(range(enc))
    assert out["attention_layers"] == out["decoder_attention_layers"] == list(range(dec))
    answer = _replay(server, body)
    source_tokens, tokens = answer["source_tokens"], answer["tokens"]

    # The sections come in the article's order.
    order = page.eval_on_selector_all("section.story", "els => els.map(e => e.id)")
    assert order == ["s-tokens", "s-embedding", "s-encoder", "s-decoding"]

    # 1. The tokenizer: the source tokens as chips, with their positions.
    chips = page.eval_on_selector_all("#source-chips .chip",
                                      "els => els.map(e => [e.dataset.token, +e.dataset.position])")
    assert chips == [[t, j] for j, t in enumerate(source_tokens)]

    # The three heatmaps, each container saying which attention it shows.
    kinds = page.eval_on_selector_all("[data-attention-kind]", "els => els.map(e => e.dataset.attentionKind)")
    assert sorted(kinds) == ["cross", "decoder", "encoder"]
    shape = {"encoder": (len(source_tokens), len(source_tokens)), "decoder": (len(tokens), len(tokens)),
             "cross": (len(tokens), len(source_tokens))}
    for kind, (rows, cols) in shape.items():
        n = page.locator(f"[data-attention-kind='{kind}'] table td.cell").count()
        assert n == rows * cols, kind

    # 2. Embedding + positional encoding: the sinusoid table drawn for the source positions.
    canvas = page.eval_on_selector("#pe-canvas", "c => ({...c.dataset, width: c.width, height: c.height})")
    dims = min(64, d_model)
    assert int(canvas["dModel"]) == d_model and int(canvas["dims"]) == dims
    assert (int(canvas["rows"]) == len(source_tokens)
            and canvas["positions"] == ",".join(map(str, range(len(source_tokens)))))
    assert canvas["width"] > dims and canvas["height"] > len(source_tokens)
    pixels = page.evaluate("""() => {
        const c = document.getElementById("pe-canvas"), d = c.dataset, ctx = c.getContext("2d");
        const s = c.width / parseFloat(c.style.width), out = [];
        for (let r = 0; r < +d.rows; r++) for (let k = 0; k < +d.dims; k++) {
            const x = (+d.left + (k + 0.5) * +d.cellWidth) * s, y = (+d.top + (r + 0.5) * +d.cellHeight) * s;
            out.push([r, k, ...ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data]);
        }
        return out;
    }""")
    assert len(pixels) == len(source_tokens) * dims
    blank = next(p[2:5] for p in pixels if p[0] == 0 and p[1] == 0)  # PE(0, 0) = sin 0 = 0: no colour
    values, blueness = [], []
    for r, k, red, green, blue, _ in pixels:
        v = _pe(r, k, d_model)
        values.append(v)
        blueness.append(blue - red)  # positive values are drawn in blue, negative ones in orange
        if abs(v) > 0.1:
            assert (blue - red > 0) == (v > 0), (r, k, v)
        if abs(v) < 0.005:
            assert max(abs(a - b) for a, b in zip((red, green, blue), blank)) <= 6, (r, k, v)
    mv, mb = sum(values) / len(values), sum(blueness) / len(blueness)
    cov = sum((v - mv) * (b - mb) for v, b in zip(values, blueness))
    corr = cov / math.sqrt(sum((v - mv) ** 2 for v in values) * sum((b - mb) ** 2 for b in blueness))
    assert corr > 0.99
    # Reading one value: by pointer, and by keyboard.
    r, k = 3, 5
    page.hover("#pe-canvas", position={"x": int(canvas["left"]) + (k + 0.5) * int(canvas["cellWidth"]),
                                       "y": int(canvas["top"]) + (r + 0.5) * int(canvas["cellHeight"])})
    readout = page.eval_on_selector("#pe-readout", "e => ({...e.dataset})")
    assert (int(readout["position"]), int(readout["dim"])) == (r, k)
    assert float(readout["value"]) == pytest.approx(_pe(r, k, d_model), abs=1e-9)
    page.focus("#pe-canvas")
    for key in ["ArrowRight", "ArrowRight", "ArrowDown"]:
        page.keyboard.press(key)
    readout = page.eval_on_selector("#pe-readout", "e => ({...e.dataset})")
    assert (int(readout["position"]), int(readout["dim"])) == (1, 2)

    # 3. Encoder self-attention: a layer per encoder layer, heads and their mean.
    encoder = _heads(answer["encoder_attention"])
    assert page.eval_on_selector_all(
        "#enc-layer option", "els => els.map(e => e.value)") == [str(i) for i in range(enc)]
    assert page.input_value("#enc-layer") == str(enc - 1) and page.input_value("#enc-head") == "mean"
    n = len(source_tokens)
    shown = _matrix(_cells(page, "#enc-heatmap"), n, n)
    _assert_close(shown, _mean_over_heads(encoder[enc - 1]))
    _assert_rows_sum_to_one(shown)
    page.select_option("#enc-layer", "0")
    page.select_option("#enc-head", "1")
    shown = _matrix(_cells(page, "#enc-heatmap"), n, n)
    _assert_close(shown, encoder[0][1])
    assert _query(page)["enc_layer"] == "0" and _query(page)["enc_head"] == "1"
    # The cross-attention's selectors are its own.
    assert page.input_value("#layer") == str(dec - 1) and page.input_value("#head") == "mean"

    # 4. The decoding starts at step 1, whose input is <s>; its top-k is the step's.
    assert page.input_value("#step") == "1" and _query(page)["step"] == "1"
    assert page.get_attribute("#step", "max") == str(len(tokens))
    header = page.eval_on_selector_all("#dec-heatmap thead th", "els => els.map(e => e.textContent)")
    assert header == ["<s>", *tokens[:-1]]
    assert page.eval_on_selector_all("#topk .topk-alt", "els => els.map(e => e.dataset.token)") == \
        [t["token"] for t in answer["steps"][0]["top"]]
    assert page.errors == []


def test_viewer_steps_through_the_decoding(page, server):
    dec = _config(server)["decoder_layers"]
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "greedy"}
    body = _translate_request(page, lambda: page.goto(f"{server}/?{urlencode(query)}"))
    _wait_done(page)
    answer = _replay(server, body)
    tokens, source_tokens = answer["tokens"], answer["source_tokens"]
    n = len(tokens)
    assert n >= 3, "the tiny model writes at least a word, a full stop and </s>"
    decoder = _heads(answer["decoder_attention"])
    cross = _heads(answer["attention"])

    def shown_step() -> int:
        i = int(page.input_value("#step")) - 1
        assert page.inner_text("#step-label") == f"Step {i + 1} of {n}"
        assert _query(page)["step"] == str(i + 1)
        assert page.eval_on_selector_all(".tok.is-step", "els => els.map(e => +e.dataset.row)") == [i]
        assert page.eval_on_selector_all("#dec-heatmap tbody tr.is-step", "els => els.map(e => +e.dataset.row)") == [i]
        assert page.eval_on_selector_all("#heatmap tbody tr.is-step", "els => els.map(e => +e.dataset.row)") == [i]
        future = page.eval_on_selector_all("#dec-heatmap tbody tr.is-future", "els => els.map(e => +e.dataset.row)")
        assert future == list(range(i + 1, n))
        # The top-k of the projection + softmax is this step's.
        assert page.eval_on_selector_all(
            "#topk .topk-alt", "els => els.map(e => e.dataset.token)"
        )[:len(answer["steps"][i]["top"])] == [t["token"] for t in answer["steps"][i]["top"]]
        return i

    def masked_after(i: int) -> None:
        """Row i of the decoder heatmap: the inputs after i are marked masked, the others carry the weights."""
        cells = [c for c in _cells(page, "#dec-heatmap") if c["row"] == i]
        assert [c["col"] for c in cells] == list(range(n))
        assert [c["col"] for c in cells if c["masked"]] == list(range(i + 1, n))
        want = _mean_over_heads(decoder[dec - 1])[i]
        for c in cells:
            assert c["weight"] == pytest.approx(want[c["col"]], abs=1e-5)
            if c["masked"]:
                assert want[c["col"]] == 0.0
        assert sum(c["weight"] for c in cells if not c["masked"]) == pytest.approx(1.0, abs=1e-4)
        assert page.locator(f"#dec-heatmap td.cell.masked[data-row='{i}']").count() == n - 1 - i

    assert shown_step() == 0
    masked_after(0)
    # Every row of the heatmap masks its own future, whatever the step.
    assert all(c["masked"] == (c["col"] > c["row"]) for c in _cells(page, "#dec-heatmap"))

    # The keyboard on the slider.
    page.focus("#step")
    page.keyboard.press("ArrowRight")
    assert shown_step() == 1
    masked_after(1)
    page.keyboard.press("End")
    assert shown_step() == n - 1
    masked_after(n - 1)
    page.keyboard.press("ArrowLeft")
    assert shown_step() == n - 2
    page.keyboard.press("Home")
    assert shown_step() == 0

    # The slider itself, the buttons and the tokens.
    page.fill("#step", "2")
    assert shown_step() == 1
    page.click("#step-next")
    assert shown_step() == 2
    masked_after(2)
    page.click("#step-prev")
    assert shown_step() == 1
    page.click(f".tok[data-row='{n - 1}']")
    assert shown_step() == n - 1
    page.click("#step-first")
    assert shown_step() == 0
    assert page.is_disabled("#step-prev") and not page.is_disabled("#step-next")

    # The story line names what the decoder reads and writes at the step.
    page.fill("#step", "2")
    story = page.inner_text("#step-story")
    assert story.startswith(f"Step 2 of {n}.") and tokens[1].replace("\u2581", "") in story

    # Without a pointer on the cross-attention, the source strip is shaded by the step's row.
    page.mouse.move(0, 0)
    shade = page.eval_on_selector_all(".src-tok", "els => els.map(e => +e.style.getPropertyValue('--align'))")
    row = _mean_over_heads(cross[dec - 1])[1]
    assert shade == pytest.approx([w / max(row) for w in row], abs=2e-3)
    assert len(shade) == len(source_tokens)

    # Another decoder layer and head for the masked self-attention.
    page.select_option("#dec-layer", "0")
    page.select_option("#dec-head", "3")
    cells = _cells(page, "#dec-heatmap")
    _assert_close(_matrix(cells, n, n), decoder[0][3])
    assert all(c["masked"] == (c["col"] > c["row"]) for c in cells)
    q = _query(page)
    assert (q["dec_layer"], q["dec_head"], q["step"]) == ("0", "3", "2")
    assert page.errors == []


def test_a_top_k_alternative_forces_a_prefix_and_the_rest_follows(page, server):
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "greedy"}
    body = _translate_request(page, lambda: page.goto(f"{server}/?{urlencode(query)}"))
    _wait_done(page)
    before = _replay(server, body)
    tokens = before["tokens"]
    assert "prefix" not in body["decoding"]
    assert page.locator("#compare").is_hidden() and page.locator("#prefix-note").is_hidden()

    # The first step after the first with an alternative one can force (a piece of text, not the chosen one).
    def forceable(i: int) -> list[str]:
        page.fill("#step", str(i + 1))
        return page.eval_on_selector_all("#topk .topk-alt:not([disabled])", "els => els.map(e => e.dataset.token)")
    step = next(i for i in range(1, len(tokens)) if forceable(i))
    alternative = forceable(step)[0]
    assert alternative != tokens[step] and alternative in [t["token"] for t in before["steps"][step]["top"]]
    chosen = page.locator("#topk .topk-item.chosen .topk-alt")
    assert chosen.get_attribute("data-token") == tokens[step] and chosen.is_disabled()

    # Clicking it asks for the same translation with the start forced through that alternative.
    prefix = _detokenize([*tokens[:step], alternative])
    body2 = _translate_request(page, lambda: page.click(f"#topk .topk-alt[data-token='{alternative}']"))
    assert body2["decoding"] == {**body["decoding"], "prefix": prefix}
    assert {k: v for k, v in body2.items() if k != "decoding"} == {k: v for k, v in body.items() if k != "decoding"}
    _wait_done(page)
    after = _replay(server, body2)

    # The page shows the new translation, its forced steps marked, next to the one before.
    assert page.inner_text("#translation") == after["text"]
    assert page.eval_on_selector_all(".tok", "els => els.map(e => e.dataset.token)") == after["tokens"]
    forced = [i for i, s in enumerate(after["steps"]) if s.get("forced")]
    assert forced, "a prefix forces at least its first token"
    assert page.eval_on_selector_all(".tok.forced", "els => els.map(e => +e.dataset.row)") == forced
    assert page.locator("#compare").is_visible()
    assert page.inner_text("#compare-before") == before["text"]
    assert page.inner_text("#compare-after") == after["text"]
    assert page.eval_on_selector_all(
        "#compare-after-tokens .mini-tok.forced", "els => els.map(e => +e.dataset.index)") == forced
    assert page.eval_on_selector_all(
        "#compare-before-tokens .mini-tok", "els => els.map(e => e.dataset.token)") == tokens
    assert page.locator("#prefix-note").is_visible() and page.inner_text("#prefix-text") == prefix
    q = _query(page)
    assert q["prefix"] == prefix and q["step"] == str(min(step + 1, len(after["tokens"])))

    # The link of this view forces the same start at once.
    link = page.url
    page.goto("about:blank")
    body3 = _translate_request(page, lambda: page.goto(link))
    _wait_done(page)
    assert body3 == body2
    assert page.eval_on_selector_all(".tok.forced", "els => els.map(e => +e.dataset.row)") == forced
    assert page.input_value("#step") == q["step"]

    # ...and the forced start can be dropped again.
    body4 = _translate_request(page, lambda: page.click("#clear-prefix"))
    assert body4 == body
    _wait_done(page)
    assert "prefix" not in _query(page)
    assert page.locator(".tok.forced").count() == 0
    assert page.inner_text("#translation") == before["text"]
    assert page.errors == []


def test_viewer_restores_every_selection_from_the_url(page, server):
    config = _config(server)
    assert config["encoder_layers"] >= 2 and config["decoder_layers"] >= 2 and config["n_heads"] >= 4
    query = {"text": SENTENCE, "source": "es", "target": "en", "strategy": "beam", "beam_size": "3", "step": "3",
             "layer": "0", "head": "2", "enc_layer": "0", "enc_head": "1", "dec_layer": "0", "dec_head": "3"}
    body = _translate_request(page, lambda: page.goto(f"{server}/?{urlencode(query)}"))
    _wait_done(page)
    assert body["decoding"] == {"strategy": "beam", "beam_size": 3}
    answer = _replay(server, body)
    n, m = len(answer["tokens"]), len(answer["source_tokens"])
    assert n >= 3
    assert page.input_value("#text") == SENTENCE and page.input_value("#beam-size") == "3"
    assert page.input_value("#step") == "3"
    assert (page.input_value("#layer"), page.input_value("#head")) == ("0", "2")
    assert (page.input_value("#enc-layer"), page.input_value("#enc-head")) == ("0", "1")
    assert (page.input_value("#dec-layer"), page.input_value("#dec-head")) == ("0", "3")
    _assert_close(_matrix(_cells(page, "#heatmap"), n, m), _heads(answer["attention"])[0][2])
    _assert_close(_matrix(_cells(page, "#enc-heatmap"), m, m), _heads(answer["encoder_attention"])[0][1])
    _assert_close(_matrix(_cells(page, "#dec-heatmap"), n, n), _heads(answer["decoder_attention"])[0][3])
    assert page.eval_on_selector_all("#dec-heatmap tbody tr.is-step", "els => els.map(e => +e.dataset.row)") == [2]
    assert _query(page) == query  # nothing lost on the way back into the URL

    # Out-of-range values fall back to the defaults instead of failing.
    query.update(step="999", layer="7", head="99", enc_head="x")
    page.goto(f"{server}/?{urlencode(query)}")
    _wait_done(page)
    assert page.input_value("#step") == str(n)
    assert (page.input_value("#layer"), page.input_value("#head")) == (str(config["decoder_layers"] - 1), "mean")
    assert page.input_value("#enc-head") == "mean"
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


def test_the_document_tab_translates_a_file_and_offers_the_download(page, server, tmp_path):
    source = tmp_path / "carta.txt"
    source.write_text("El gato come pescado.\n\nEl perro duerme.\n", encoding="utf-8")
    page.goto(f"{server}/#documents")
    assert page.locator("#panel-documents").is_visible() and page.locator("#panel-text").is_hidden()
    page.wait_for_function("document.getElementById('doc-formats').textContent.includes('.docx')")
    page.set_input_files("#doc-file", str(source))
    assert "carta.txt" in page.inner_text("#doc-name")
    page.click("#doc-submit")
    page.wait_for_selector("body[data-document-state=done]", timeout=60_000)
    link = page.locator("#doc-download")
    assert link.is_visible() and link.get_attribute("download") == "carta.txt"
    fetched = httpx.get(link.get_attribute("href"))
    expected = httpx.post(f"{server}/documents/translate", files={"file": ("carta.txt", source.read_bytes())},
                          data={"source": "es", "target": "en"})
    assert fetched.status_code == 200 and fetched.content == expected.content != source.read_bytes()
    bar = page.locator("#doc-progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "2"
    assert "2 / 2 segments" in page.inner_text("#doc-status") or "translated" in page.inner_text("#doc-status")
    page.click("#tab-text")
    assert page.locator("#panel-text").is_visible() and page.locator("#panel-documents").is_hidden()
    assert not page.errors


def test_a_dropped_file_of_no_supported_format_shows_the_refusal(page, server):
    page.goto(f"{server}/#documents")
    dropped = page.evaluate_handle(
        "() => { const d = new DataTransfer(); d.items.add(new File(['MZ'], 'tool.exe')); return d; }")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    assert "tool.exe" in page.inner_text("#doc-name")
    page.click("#doc-submit")
    page.wait_for_selector("body[data-document-state=refused]", timeout=60_000)
    error = page.locator("#doc-error")
    assert error.is_visible() and ".docx" in error.inner_text() and "supported" in error.inner_text()
    assert page.locator("#doc-download").is_hidden()
