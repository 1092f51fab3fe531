"""The report page of a version built by the real flow, opened from disk in headless Chromium (Debian's
chromium + chromedriver, driven by Selenium): no console errors, one card per sample, filters that
show exactly the samples the lake says match, charts and rejects from the data, and a screenshot."""

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from stores.lake import Lake

pytestmark = pytest.mark.slow

VERSION = 2
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# As root on a closed network Chromium needs these (env docs, "Known to work"): no sandbox, no GPU,
# and nothing of its own reaching out (each refused connection would be noise, or a console error).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,2200"]


@pytest.fixture(scope="module")
def report(built, tmp_path_factory):
    output = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "html", "--dataset", "wethink", "--version", str(VERSION), "--output", str(output)],
                                env={"THINKMILL_HOME": str(built["home"])})
    assert result.exit_code == 0, result.output
    return output / "index.html"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("headless Chromium is missing: apt-get install chromium chromium-driver (.ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="thinkmill-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: selenium-manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def lake_sql(built, query: str) -> list[dict]:
    with Lake.open(built["root"], read_only=True) as lake:
        return lake.sql(query).to_pylist()


def at(table: str, alias: str = "") -> str:
    return f"{table} {alias} AT (VERSION => {VERSION})"


def open_page(driver, path: Path) -> list[dict]:
    """Load the page from disk; return what the browser logged while loading it."""
    driver.get_log("browser")  # forget earlier pages' messages
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def visible_cards(driver) -> list:
    return driver.find_elements("css selector", "article.sample:not([hidden])")


def choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_page_loads_offline_with_no_console_errors_and_every_sample(report, browser, built):
    messages = open_page(browser, report)
    assert [m for m in messages if m["level"] in ("SEVERE", "WARNING")] == []
    n_questions = lake_sql(built, f"SELECT count(*) AS n FROM {at('questions')}")[0]["n"]
    assert n_questions > 10
    assert len(visible_cards(browser)) == n_questions
    assert browser.find_element("id", "shown-count").text == str(n_questions)
    ids = {card.get_attribute("data-question-id") for card in visible_cards(browser)}
    assert ids == {r["question_id"] for r in lake_sql(built, f"SELECT question_id FROM {at('questions')}")}
    # Every thumbnail is a file beside the page, and decoded.
    loaded = browser.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded == len(browser.find_elements("css selector", "img.thumb")) == n_questions
    assert browser.find_elements("id", "cap-note") == []  # every sample is shown: nothing to say


def test_answer_type_filter_shows_exactly_the_matching_samples(report, browser, built):
    open_page(browser, report)
    expected = {r["answer_type"]: r["n"] for r in lake_sql(built, f"SELECT answer_type, count(*) AS n FROM {at('questions')} GROUP BY 1")}
    assert len(expected) >= 2
    for answer_type, n in expected.items():
        choose(browser, "filter-answer-type", answer_type)
        cards = visible_cards(browser)
        assert len(cards) == n, answer_type
        assert {card.get_attribute("data-answer-type") for card in cards} == {answer_type}
        assert browser.find_element("id", "shown-count").text == str(n)
    choose(browser, "filter-answer-type", "")
    assert len(visible_cards(browser)) == sum(expected.values())


def test_difficulty_filter_follows_the_chosen_policy(report, browser, built):
    open_page(browser, report)
    rows = lake_sql(built, f"""SELECT policy_id, question_id, pass_rate FROM {at('difficulty')}
                               WHERE method = 'group_stats' AND pass_rate IS NOT NULL""")
    n_questions = lake_sql(built, f"SELECT count(*) AS n FROM {at('questions')}")[0]["n"]
    policies = sorted({r["policy_id"] for r in rows})
    options = [o.get_attribute("value") for o in browser.find_elements("css selector", "#filter-policy option")]
    assert sorted(options) == policies and len(policies) >= 2
    for policy in policies:
        choose(browser, "filter-policy", policy)
        scored = {r["question_id"]: r["pass_rate"] for r in rows if r["policy_id"] == policy}
        expected = {
            "never": sum(p == 0 for p in scored.values()), "hard": sum(0 < p < 0.5 for p in scored.values()),
            "easy": sum(0.5 <= p < 1 for p in scored.values()), "always": sum(p == 1 for p in scored.values()),
            "unscored": n_questions - len(scored)}
        for bucket, n in expected.items():
            choose(browser, "filter-difficulty", bucket)
            assert len(visible_cards(browser)) == n, (policy, bucket)
        choose(browser, "filter-difficulty", "")
    # Filters combine: answer type AND difficulty.
    policy = policies[0]
    choose(browser, "filter-policy", policy)
    choose(browser, "filter-difficulty", "never")
    choose(browser, "filter-answer-type", "num")
    never_solved = {r["question_id"] for r in rows if r["policy_id"] == policy and r["pass_rate"] == 0}
    numeric = {r["question_id"] for r in lake_sql(built, f"SELECT question_id FROM {at('questions')} WHERE answer_type = 'num'")}
    assert {c.get_attribute("data-question-id") for c in visible_cards(browser)} == never_solved & numeric


def test_source_filter_matches_the_assets_sources(report, browser, built):
    open_page(browser, report)
    expected = {r["source"]: r["n"] for r in lake_sql(built, f"""
        SELECT a.source, count(*) AS n FROM {at('questions', 'q')} JOIN {at('assets', 'a')} ON a.asset_id = q.asset_ids[1] GROUP BY 1""")}
    for source, n in expected.items():
        choose(browser, "filter-source", source)
        assert len(visible_cards(browser)) == n


def test_charts_and_rejects_come_from_the_data(report, browser, built):
    open_page(browser, report)
    histograms = lake_sql(built, f"SELECT DISTINCT policy_id, method FROM {at('difficulty')} WHERE pass_rate IS NOT NULL")
    assert len(browser.find_elements("css selector", "svg.histogram")) == len(histograms)
    titles = [e.get_attribute("aria-label") for e in browser.find_elements("css selector", "svg.chart")]
    assert "Verification pass rate by answer type" in titles and "Verification pass rate by verifier" in titles
    rejects = {r["reason"]: r["n"] for r in lake_sql(built, f"SELECT reason, count(*) AS n FROM {at('rejects')} GROUP BY 1")}
    shown = {row.get_attribute("data-reason"): int(row.find_element("css selector", "td.num").text)
             for row in browser.find_elements("css selector", "tr.reject-reason")}
    assert shown == rejects and any(reason.startswith("ingest.") for reason in shown)  # the broken files of the fixture
    difficulty_rows = browser.find_elements("css selector", "table.difficulty td.policy")
    assert difficulty_rows and all("@" in cell.text for cell in difficulty_rows)  # every difficulty names its policy


def test_screenshots_of_the_page(report, browser, tmp_path):
    open_page(browser, report)
    top, cards = tmp_path / "report-top.png", tmp_path / "report-samples.png"
    assert browser.save_screenshot(str(top))
    choose(browser, "filter-answer-type", "mc")
    browser.execute_script("document.getElementById('samples').scrollIntoView()")
    assert browser.save_screenshot(str(cards))
    for shot in (top, cards):
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        shutil.copy(shot, Path(tempfile.gettempdir()) / f"thinkmill-{shot.name}")  # to look at after the run


def test_page_fetches_nothing_from_the_network(report):
    html = report.read_text()
    references = re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    assert references
    for reference in references:
        assert reference.startswith(("data:", "thumbs/", "#")), reference
        if reference.startswith("thumbs/"):
            assert (report.parent / reference).is_file()
    assert "http://" not in html and "https://" not in html


def test_a_capped_page_says_how_many_it_shows(built, browser, tmp_path):
    result = CliRunner().invoke(app, ["report", "html", "-d", "wethink", "--version", str(VERSION), "-o", str(tmp_path / "cap"),
                                      "--max-samples", "5"], env={"THINKMILL_HOME": str(built["home"])})
    assert result.exit_code == 0, result.output
    n_questions = lake_sql(built, f"SELECT count(*) AS n FROM {at('questions')}")[0]["n"]
    assert f"(5 of {n_questions} samples)" in result.output
    messages = open_page(browser, tmp_path / "cap" / "index.html")
    assert [m for m in messages if m["level"] == "SEVERE"] == []
    assert len(visible_cards(browser)) == 5
    note = browser.find_element("id", "cap-note").text
    assert f"first 5 of {n_questions} samples" in note and "--max-samples" in note


def test_default_output_lives_under_thinkmill_home(built):
    result = CliRunner().invoke(app, ["report", "html", "-d", "wethink", "--version", "1"], env={"THINKMILL_HOME": str(built["home"])})
    assert result.exit_code == 0, result.output
    assert (built["home"] / "reports" / "wethink-v1" / "index.html").is_file()


def test_unknown_version_lists_the_versions(built):
    result = CliRunner().invoke(app, ["report", "html", "-d", "wethink", "--version", "99"], env={"THINKMILL_HOME": str(built["home"])})
    assert result.exit_code != 0
    assert "no version 99" in str(result.exception) and "1, 2" in str(result.exception)
