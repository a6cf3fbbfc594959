"""pyro_vae.explorer: the latent-space explorer page, opened from file:// in headless Chromium."""

import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import headless_chromium
from torch import nn
from torch.distributions import ContinuousBernoulli

from pyro_vae import VAE, Trainer
from pyro_vae.errors import InvalidDataError
from pyro_vae.figures.explorer import ELBO_PARTICLES, SAMPLE_ROW, write_explorer
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.rng import rng_fork

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

SHOTS = "/tmp/explorer_shots"  # copies of the screenshots, for a person to look at
#: The 28x28 grey levels (0-255) a canvas of the page shows, read at its cells' centres.
CANVAS_PIXELS = """
const c = document.getElementById(arguments[0]), ctx = c.getContext("2d");
const data = ctx.getImageData(0, 0, c.width, c.height).data, cell = c.width / 28, out = [];
for (let r = 0; r < 28; r++) for (let k = 0; k < 28; k++)
  out.push(data[4 * (Math.floor((r + 0.5) * cell) * c.width + Math.floor((k + 0.5) * cell))]);
return out;"""


@pytest.fixture(scope="module")
def browser():
    with headless_chromium("1400,1000", logs=True) as driver:
        yield driver


def binary_digits(mnist, n):
    """The first ``n`` digits of test + train, binarized at 0.5 (the embedded test set holds 1,000)."""
    images = torch.cat([mnist.test_images, mnist.train_images])[:n]
    labels = torch.cat([mnist.test_labels, mnist.train_labels])[:n]
    return (images > 0.5).float(), labels


def open_page(browser, path, seconds=60):
    """Open the page and wait until its script has run.

    One CI run saw ``typeof pyroVaeExplorer`` undefined right after ``get`` for the two
    2,000-digit pages, with nothing to tell why, and it never came back here. So: wait for the
    script's own mark; if it never comes, load the page once more, so that a browser hiccup (the
    page is fine on the second load, and the test says so) is told apart from a page whose script
    fails (fails again, with the state of the page and the console both times).
    """
    attempts = []
    for _ in range(2):
        browser.get(f"file://{path}")
        if page_script_ran(browser, seconds):
            if attempts:
                warnings.warn(
                    f"the explorer page set no pyroVaeExplorer on its first load: {attempts[0]}", stacklevel=2
                )
            assert_no_console_errors(browser)
            return browser.execute_script("return pyroVaeExplorer.state()")
        attempts.append(
            browser.execute_script(
                "return {href: location.href, ready: document.readyState, title: document.title,"
                " bodyChars: document.body ? document.body.innerText.length : null}"
            )
            | {"console": console_errors(browser)}
        )
    pytest.fail(f"the page set no pyroVaeExplorer within {seconds} s, on two loads: {attempts}")


def page_script_ran(browser, seconds):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, seconds, poll_frequency=0.2).until(
            lambda b: b.execute_script("return typeof window.pyroVaeExplorer") == "object"
        )
        return True
    except TimeoutException:
        return False


def console_errors(browser):
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def assert_no_console_errors(browser):
    severe = console_errors(browser)
    assert not severe, severe


def decoded_pixels(browser):
    return browser.execute_script(CANVAS_PIXELS, "decoded")


def text(browser, element_id):
    return browser.find_element("id", element_id).text


def number(browser, element_id):
    return float(text(browser, element_id).replace("−", "-"))


def click_point(browser, i):
    """Click test digit ``i`` where the page draws it (offsets from the canvas centre)."""
    from selenium.webdriver import ActionChains

    canvas = browser.find_element("id", "map")
    # Wholly in view: selenium's offsets count from the centre of the element's visible part.
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    x, y = browser.execute_script(f"return pyroVaeExplorer.pointPixel({i})")
    ActionChains(browser).move_to_element_with_offset(
        canvas, round(x - canvas.size["width"] / 2), round(y - canvas.size["height"] / 2)
    ).click().perform()


def isolated_point(browser, min_pixels=4.0):
    """A digit no other digit is drawn within ``min_pixels`` of, so a click picks it alone."""
    i = browser.execute_script(f"""
const api = pyroVaeExplorer, n = api.state().numPoints, p = [];
for (let i = 0; i < n; i++) p.push(api.pointPixel(i));
for (let i = 0; i < n; i++) {{
  let alone = p[i][0] > 20 && p[i][1] > 20 && p[i][0] < 500 && p[i][1] < 460;
  for (let j = 0; alone && j < n; j++)
    if (j !== i && Math.hypot(p[i][0] - p[j][0], p[i][1] - p[j][1]) < {min_pixels}) alone = false;
  if (alone) return i;
}}
return -1;""")
    assert i >= 0, f"every digit on the map has another within {min_pixels} pixels"
    return i


def python_elbo(vae, x):
    """The ELBO terms the page embeds: elbo_terms on its own RNG fork, seed 0."""
    with torch.no_grad(), rng_fork(0):
        return elbo_terms(vae.model, vae.guide, vae.flatten(x), num_particles=ELBO_PARTICLES, analytic_kl=True)


def assert_panel_matches(browser, vae, x, labels, i):
    """The digit panel shows digit ``i``: its label, its ELBO terms to display precision, its draws."""
    assert browser.execute_script("return pyroVaeExplorer.state().selected") == i
    assert text(browser, "digit-title").endswith(f"label {int(labels[i])}")
    terms = python_elbo(vae, x)
    assert number(browser, "elbo-recon") == pytest.approx(float(terms.recon[i]), abs=0.0051)
    assert number(browser, "elbo-kl") == pytest.approx(-float(terms.kl[i]), abs=0.0051)
    assert number(browser, "elbo-total") == pytest.approx(float(terms.elbo[i]), abs=0.0051)
    if browser.execute_script("return pyroVaeExplorer.state().decoderSupported"):
        assert len(browser.find_elements("css selector", "#sample-row canvas")) == SAMPLE_ROW


def save_screenshot(browser, tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    os.makedirs(SHOTS, exist_ok=True)
    shutil.copy(path, os.path.join(SHOTS, f"{name}.png"))
    assert path.stat().st_size > 10_000


#: The output layer of each built-in guide's network: its first z_dim outputs are the posterior's loc.
OUTPUT_LAYER = {
    "diagonal": lambda guide: guide.encoder.net[-1],
    "conv": lambda guide: guide.head[-1],
    "full_covariance": lambda guide: guide.net[-1],
    "iaf": lambda guide: guide.encoder[-1],
}


def untrained_vae(z_dim, guide="diagonal", spread=20.0, **kwargs):
    """An untrained VAE whose guide's means are spread out: untrained, it maps every digit to
    nearly the same code, and the map would show one blot in which no digit can be clicked."""
    vae = VAE(z_dim=z_dim, hidden_dims=(32,), guide=guide, **kwargs)
    layer = OUTPUT_LAYER[guide](vae.encoder)
    with torch.no_grad():
        layer.weight[:z_dim] *= spread
        layer.bias[:z_dim] *= spread
    return vae


@pytest.fixture(scope="module")
def trained_vae(mnist):
    """A small VAE after 80 quick steps: enough for the decoder to draw digit-like strokes."""
    torch.manual_seed(0)
    vae = VAE(z_dim=8, hidden_dims=(128,))
    Trainer(vae, lr=3e-3, binarize="fixed", seed=0).fit(
        mnist.train_images[:2000], None, epochs=2, batch_size=50, progress=False, log=lambda line: None
    )
    return vae


# ---- size, and no network ------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli"])
def test_default_network_page_is_small_and_self_contained(browser, mnist, tmp_path, likelihood):
    x, labels = binary_digits(mnist, 2000)
    if likelihood == "continuous_bernoulli":  # grey pixels, stored as bytes rather than bits
        x = torch.cat([mnist.test_images, mnist.train_images])[:2000]
    vae = VAE(likelihood=likelihood)  # 784-400-50, untrained: the size does not depend on training
    path = write_explorer(vae, x, labels, tmp_path / "explorer.html")
    assert os.path.getsize(path) < 5_000_000
    html = Path(path).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not load anything"
    state = open_page(browser, path)
    assert state["numPoints"] == 2000 and state["zDim"] == 50 and state["view"] == "pca"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_write_explorer_keeps_mode_and_rng_and_is_deterministic(mnist, tmp_path):
    x, labels = binary_digits(mnist, 100)
    vae = VAE(z_dim=3, hidden_dims=(32,))
    vae.train()
    rng = torch.get_rng_state()
    first = write_explorer(vae, x, labels, tmp_path / "a" / "explorer.html")  # creates the directory
    second = write_explorer(vae, x, labels, tmp_path / "b.html")
    assert vae.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert Path(first).read_bytes() == Path(second).read_bytes()


# ---- the decoder in the page ----------------------------------------------------------------------


def decoder_means(vae, z):
    """``vae.decoded_mean(z)`` (float32), and the same likelihood mean evaluated in float64 on the
    float32 decoder's (clamped) probabilities."""
    with torch.no_grad():
        logits = vae.decoder(z)
        float32 = vae.decoded_mean(z).double()
    eps = torch.finfo(torch.float32).eps
    probs = torch.sigmoid(logits.double()).clamp(eps, 1 - eps)
    float64 = probs if vae.likelihood.name == "bernoulli" else ContinuousBernoulli(probs=probs).mean
    return float32, float64, probs


@pytest.mark.parametrize(
    "likelihood, activation",
    [
        ("bernoulli", "softplus"),
        ("bernoulli", "tanh"),
        ("continuous_bernoulli", "relu"),
        ("continuous_bernoulli", "elu"),
    ],
)
def test_decode_in_the_page_equals_the_pytorch_decoder(browser, mnist, tmp_path, likelihood, activation):
    x, labels = binary_digits(mnist, 50)
    vae = VAE(z_dim=6, hidden_dims=(48, 32), likelihood=likelihood, activation=activation)
    open_page(browser, write_explorer(vae, x, labels, tmp_path / "explorer.html"))
    z = 1.5 * torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    page = torch.tensor(
        browser.execute_script("return arguments[0].map((z) => Array.from(pyroVaeExplorer.decode(z)))", z.tolist()),
        dtype=torch.float64,
    )
    float32, float64, probs = decoder_means(vae, z)
    assert page.shape == (20, 784)
    assert (page - float64).abs().max() < 1e-4
    if likelihood == "bernoulli":
        assert (page - float32).abs().max() < 1e-4
    else:
        # torch's float32 continuous-Bernoulli mean cancels catastrophically for λ just outside
        # its Taylor window (0.499, 0.501] (errors up to 3e-3, measured); elsewhere it agrees.
        away_from_half = (probs - 0.5).abs() >= 0.01
        assert (page - float32).abs()[away_from_half].max() < 1e-4
        assert (page - float32).abs().max() < 5e-3
    assert_no_console_errors(browser)


# ---- interaction: drag, sliders, click, prior ------------------------------------------------------


def test_drag_sliders_click_and_prior(browser, mnist, tmp_path, trained_vae):
    from selenium.webdriver import ActionChains

    x, labels = binary_digits(mnist, 300)
    state = open_page(browser, write_explorer(trained_vae, x, labels, tmp_path / "explorer.html"))
    assert state["view"] == "pca" and "PCA" in text(browser, "view-caption")
    canvas = browser.find_element("id", "map")

    before = decoded_pixels(browser)
    ActionChains(browser).move_to_element_with_offset(canvas, -60, 40).click_and_hold().move_by_offset(
        30, -20
    ).move_by_offset(40, -50).release().perform()
    dragged = browser.execute_script("return pyroVaeExplorer.state()")
    assert dragged["source"] == "cursor" and dragged["z"] != state["z"]
    assert decoded_pixels(browser) != before
    # The sliders follow the cursor.
    sliders = browser.find_elements("css selector", "#sliders input")
    slider_values = [float(slider.get_attribute("value")) for slider in sliders]
    assert slider_values == pytest.approx(dragged["z"], abs=0.011)

    # A slider moves one coordinate of z, and the cursor with it.
    slider = browser.find_element("id", "z3")
    before = decoded_pixels(browser)
    ActionChains(browser).move_to_element_with_offset(slider, slider.size["width"] // 2 - 3, 0).click().perform()
    moved = browser.execute_script("return pyroVaeExplorer.state()")
    assert moved["source"] == "slider z3"
    assert moved["z"][2] == pytest.approx(float(slider.get_attribute("value")))
    assert moved["z"][2] != pytest.approx(dragged["z"][2], abs=0.05)
    assert [a for j, a in enumerate(moved["z"]) if j != 2] == [b for j, b in enumerate(dragged["z"]) if j != 2]
    assert moved["cursor"] != dragged["cursor"]
    assert decoded_pixels(browser) != before

    # A click on a digit opens its panel and moves z to its posterior mean.
    i = isolated_point(browser)
    click_point(browser, i)
    assert_panel_matches(browser, trained_vae, x, labels, i)
    with torch.no_grad():
        mean = trained_vae.posterior_mean(x[i : i + 1])[0]
    assert browser.execute_script("return pyroVaeExplorer.state().z") == pytest.approx(mean.tolist(), abs=1e-5)
    save_screenshot(browser, tmp_path, "explorer_pca_after_click")

    before = decoded_pixels(browser)
    browser.find_element("id", "prior-sample").click()
    assert browser.execute_script("return pyroVaeExplorer.state().source") == "prior"
    assert decoded_pixels(browser) != before
    assert_no_console_errors(browser)


# ---- every view, every guide, a decoder the page cannot run -----------------------------------------


@pytest.mark.parametrize(
    "z_dim, view, words",
    [
        (1, "z1", ["z_dim = 1", "z itself", "jitter"]),
        (2, "z", ["z_dim = 2", "the map is z itself"]),
        (5, "pca", ["z_dim = 5", "PCA", "% of their variance"]),
    ],
)
def test_each_latent_dimension_says_its_view(browser, mnist, tmp_path, z_dim, view, words):
    x, labels = binary_digits(mnist, 200)
    vae = untrained_vae(z_dim)
    state = open_page(browser, write_explorer(vae, x, labels, tmp_path / "explorer.html"))
    assert state["view"] == view
    caption = text(browser, "view-caption")
    for word in words:
        assert word in caption
    if z_dim > 2:  # the explained variance of the posterior means' first two principal axes
        with torch.no_grad():
            means = vae.posterior_mean(x)
        s = torch.linalg.svdvals(means - means.mean(0))
        explained = 100 * s[:2] ** 2 / (s**2).sum()
        assert f"{explained[0]:.1f}% and {explained[1]:.1f}%" in caption
    i = isolated_point(browser)
    click_point(browser, i)
    assert_panel_matches(browser, vae, x, labels, i)
    if z_dim == 1:
        save_screenshot(browser, tmp_path, "explorer_z_dim_1")
    assert_no_console_errors(browser)


def test_a_single_test_digit_still_makes_a_page(browser, mnist, tmp_path):
    x, labels = binary_digits(mnist, 1)
    vae = untrained_vae(5)
    state = open_page(browser, write_explorer(vae, x, labels, tmp_path / "explorer.html"))
    assert state["view"] == "axes" and "PCA has no axes" in text(browser, "view-caption")
    click_point(browser, 0)
    assert_panel_matches(browser, vae, x, labels, 0)
    assert_no_console_errors(browser)


@pytest.mark.parametrize(
    "guide, words",
    [
        ("conv", "diagonal Gaussian"),
        ("full_covariance", "exact covariance"),
        ("iaf", "no closed-form covariance"),
    ],
)
def test_each_built_in_guide(browser, mnist, tmp_path, guide, words):
    x, labels = binary_digits(mnist, 150)
    vae = untrained_vae(4, guide)
    open_page(browser, write_explorer(vae, x, labels, tmp_path / "explorer.html"))
    assert words in text(browser, "posterior-caption")
    i = isolated_point(browser)
    click_point(browser, i)
    assert_panel_matches(browser, vae, x, labels, i)
    if guide == "iaf":
        assert "KL by Monte Carlo" in text(browser, "elbo-caption")
        assert "64 draws" in text(browser, "posterior-caption")
        save_screenshot(browser, tmp_path, "explorer_iaf_after_click")
    assert_no_console_errors(browser)


def test_a_decoder_the_page_cannot_run_leaves_the_static_parts(browser, mnist, tmp_path):
    x, labels = binary_digits(mnist, 100)
    vae = untrained_vae(3)
    vae.decoder = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 784))
    state = open_page(browser, write_explorer(vae, x, labels, tmp_path / "explorer.html"))
    assert not state["decoderSupported"]
    assert "cannot run this decoder (a SiLU module" in text(browser, "decoder-caption")
    assert browser.find_element("id", "prior-sample").get_attribute("disabled")
    i = isolated_point(browser)
    click_point(browser, i)
    assert_panel_matches(browser, vae, x, labels, i)
    with torch.no_grad():  # the reconstruction comes from Python, embedded as bytes
        expected = (vae.reconstruct(x[i : i + 1])[0] * 255).round()
    shown = torch.tensor(browser.execute_script(CANVAS_PIXELS, "digit-recon"), dtype=torch.float32)
    assert (shown - expected).abs().max() <= 1
    with pytest.raises(Exception, match="cannot run its decoder"):
        browser.execute_script("return pyroVaeExplorer.decode([0, 0, 0])")
    assert_no_console_errors(browser)


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_one_clear_error(mnist, tmp_path):
    vae = VAE(z_dim=2, hidden_dims=(16,))
    x, labels = binary_digits(mnist, 10)
    with pytest.raises(InvalidDataError, match=r"^test_x is an empty test set \(0 images\); pass at least one"):
        write_explorer(vae, x[:0], labels[:0], tmp_path / "explorer.html")
    mismatch = r"^test_y has 9 labels but test_x has 10 images; pass one label per image$"
    with pytest.raises(InvalidDataError, match=mismatch):
        write_explorer(vae, x, labels[:9], tmp_path / "explorer.html")
    with pytest.raises(InvalidDataError, match="expected \\[batch, 784\\]"):
        write_explorer(vae, x[:, :700], labels, tmp_path / "explorer.html")
    assert not (tmp_path / "explorer.html").exists()
