"The book of a run (`aras docs`): pages with a sidebar and inline figures, looked at in a headless browser."
import base64
import io

import nbformat
import pytest
from PIL import Image

from aras.book import build_book
from conftest import _browser_missing, _wait


def _run_folder(tmp_path):
    "Two executed chapters as `aras reproduce` leaves them: one with a 300 x 200 figure, one with a table."
    buf = io.BytesIO(); Image.new("RGB", (300, 200), (200, 30, 30)).save(buf, format="PNG")
    fig = nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<Figure>"})
    table = nbformat.v4.new_output("execute_result", {"text/html": "<table><tr><td>71.0</td></tr></table>"}, execution_count=1)
    runs = tmp_path / "runs"; runs.mkdir()
    for name, title, out in (("03_data", "Data preparation", fig), ("05_segmentation", "Segmentation", table)):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nWhy."),
                                                       nbformat.v4.new_code_cell("x", outputs=[out])]), runs / f"{name}.ipynb")
    return runs


def test_an_unreadable_notebook_is_named(tmp_path):
    runs = _run_folder(tmp_path); (runs / "04_gan.ipynb").write_text("{not json")
    with pytest.raises(Exception, match="04_gan.ipynb: not a readable notebook"):
        build_book(runs, tmp_path / "book")
    assert not (tmp_path / "book").exists()                                         # nothing half-written


@pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "browser present")
def test_the_book_in_a_browser_has_its_sidebar_and_figures(tmp_path, browser):
    from selenium.webdriver.common.by import By
    index = build_book(_run_folder(tmp_path), tmp_path / "book", "aras: test run")
    browser.get(index.as_uri())
    links = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "nav.aras-nav a"), what="the sidebar")
    assert [a.text for a in links] == ["aras: test run", "Data preparation", "Segmentation"]
    links[1].click()
    img = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "img"), what="the figure")[0]
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 300
    nav = browser.find_element(By.CSS_SELECTOR, "nav.aras-nav")
    assert nav.rect["x"] == 0 and img.rect["x"] >= nav.rect["width"]                  # the sidebar never covers the page
    assert browser.find_element(By.CSS_SELECTOR, "nav.aras-nav a.current").text == "Data preparation"
    shot = tmp_path / "page.png"; browser.save_screenshot(str(shot))
    colours = Image.open(shot).convert("RGB").getcolors(1 << 20)
    assert max(colours)[0] < 0.95 * sum(c for c, _ in colours)                       # not a blank page
    assert any(rgb == (200, 30, 30) for _, rgb in colours)                            # the figure is drawn


def test_the_readme_is_the_index_notebook(tmp_path):
    "README.md is written from nbs/index.ipynb (`aras readme`): the committed one is in step, and a new one follows it."
    from aras.book import index_markdown, write_readme
    from aras.core import project_root
    root = project_root()
    assert index_markdown(root / "nbs" / "index.ipynb") == (root / "README.md").read_text()
    (tmp_path / "nbs").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# aras\n\nWhy."), nbformat.v4.new_code_cell("1"),
                                                   nbformat.v4.new_markdown_cell("## Two commands\n")]), tmp_path / "nbs" / "index.ipynb")
    assert write_readme(tmp_path).read_text() == "# aras\n\nWhy.\n\n## Two commands\n"


def test_the_front_page_is_the_index_notebook_then_the_chapters(tmp_path):
    from aras.core import project_root
    index = build_book(_run_folder(tmp_path), tmp_path / "book", "aras: test run", front=project_root() / "nbs" / "index.ipynb")
    page = index.read_text()
    assert "Two commands" in page and "scripts/reproduce.sh" in page and 'class="aras-nav"' in page
    i = page.index("The chapters of this run")                                     # after the front text, in order
    assert i > page.index("Two commands") and page.index('href="03_data.html"', i) < page.index('href="05_segmentation.html"', i)


def test_pages_hide_directives_hidden_cells_and_parameters(tmp_path):
    "As nbdev renders docs: no `#|` lines, no `#| hide` or `default_exp` cell, no parameters cell, prose first."
    runs = tmp_path / "runs"; runs.mkdir()
    cells = [nbformat.v4.new_markdown_cell("# Data\n\nWhy these patches."),
             nbformat.v4.new_code_cell("profile = 'smoke'  # PARAM_DEFAULT", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("profile = 'small'  # PARAM_INJECTED", metadata={"tags": ["injected-parameters"]}),
             nbformat.v4.new_code_cell("#| default_exp data"), nbformat.v4.new_code_cell("#| hide\nHIDDEN_CELL = 1"),
             nbformat.v4.new_code_cell("#| export\ndef shown_function(): return 1")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), runs / "03_data.ipynb")
    page = (build_book(runs, tmp_path / "book").parent / "03_data.html").read_text()
    for gone in ("#| export", "#| default_exp", "default_exp", "HIDDEN_CELL", "PARAM_DEFAULT", "PARAM_INJECTED"):
        assert gone not in page, gone
    assert "shown_function" in page and page.index("Why these patches") < page.index("shown_function")
