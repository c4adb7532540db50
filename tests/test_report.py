"""`bench report`: a static page of a tiny sweep that opens from disk, checked in a real browser
where one is installed (Debian's chromium and chromium-driver, with selenium)."""

import os
import re
import shutil

import pytest
from conftest import bench

RUN = ["experiment=tiny", "dataset.limit=1", "metric=[ssim,psnr]", "progress=false",
       "pairs=[fidelity,edit,protection,control,invisibility]"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    env_cache = root / "cache"
    before = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(env_cache)  # the module's own cache, for bench's processes
    try:
        bench("run", "-m", *RUN, "defense=none,noise", "transform=jpeg",
              "transform.strength=0.3,0.8", "hydra.sweep.dir=sweep", cwd=root)
        bench("run", *RUN, "defense=noise", "transform=identity", "hydra.run.dir=reference",
              cwd=root)
        bench("report", "sweep", "reference", "-o", "site", cwd=root)
    finally:
        os.environ.pop("BENCH_CACHE")
        if before is not None:
            os.environ["BENCH_CACHE"] = before
    return root / "site"


def test_the_report_is_one_page_with_its_figures_and_nothing_remote(report):
    page = (report / "index.html").read_text()
    assert "Robustness leaderboard" in page and "<td>noise</td>" in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all((report / s).is_file() for s in sources)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no CDN, no network
    assert "grid_defense.png" in page and "curves_ssim_edit.png" in page


def test_the_report_works_in_a_real_browser(report, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("no chromium/chromedriver here (Debian: apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get((report / "index.html").as_uri())
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || "
            "i.naturalWidth === 0).map(i => i.src)")
        assert broken == []
        column = "return Array.from(arguments[0].tBodies[0].rows).map(r => r.children[1]" \
                 ".textContent.trim())"
        table = next(t for t in driver.find_elements("css selector", "table.sortable")
                     if _numbers(driver.execute_script(column, t)))
        header = table.find_elements("css selector", "th")[1]
        header.click()
        ascending = driver.execute_script(column, table)
        header.click()
        descending = driver.execute_script(column, table)
        assert ascending == sorted(ascending, key=float) and descending == ascending[::-1]
        driver.find_element("css selector", "img.thumb").click()
        assert driver.find_element("id", "zoom").value_of_css_property("display") == "flex"
        driver.save_screenshot(str(tmp_path / "report.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


def _numbers(values: list[str]) -> bool:
    """Distinct numbers: a column whose sort can be seen."""
    try:
        return len({float(v) for v in values}) == len(values) > 1
    except ValueError:
        return False
