"""The web UI in a real browser: Debian's chromium driven by Playwright, against the whole platform.

Screenshots of every step land in ``artifacts/screenshots/<test>/``.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.harness import ROOT, Proc, Stack

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
HAVE_CHROMIUM = CHROMIUM.exists()
SHOTS = ROOT / "artifacts" / "screenshots"
TIMEOUT = 15_000  # ms: every expect() waits up to this long

Shot = Callable[[str], Awaitable[None]]

expect.set_options(timeout=TIMEOUT)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: the UI tests need Debian's chromium (apt-get install -y chromium)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            await b.close()


class Tab:
    """One signed-in browser tab, its JavaScript errors, and numbered screenshots."""

    def __init__(self, context: BrowserContext, page: Page, folder: Path) -> None:
        self.context = context
        self.page = page
        self.folder = folder
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Failed to load resource" not in msg.text
                else None
            ),
        )

    async def shot(self, step: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(list(self.folder.glob("*.png"))) + 1
        await self.page.screenshot(path=self.folder / f"{n:02d}-{step}.png", full_page=True)


@pytest.fixture
async def tabs(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Callable[[str], Awaitable[Tab]]]:
    opened: list[Tab] = []
    folder = SHOTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    for old in folder.rglob("*.png"):
        old.unlink()

    async def open_tab(who: str) -> Tab:
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        tab = Tab(context, await context.new_page(), folder / who)
        opened.append(tab)
        return tab

    yield open_tab
    errors = [e for tab in opened for e in tab.errors]
    for tab in opened:
        await tab.context.close()
    assert not errors, f"JavaScript errors in the UI: {errors}"


async def sign_in(tab: Tab, stack: Stack, token: str) -> Page:
    page = tab.page
    await page.goto(f"{stack.api}/")
    await expect(page.get_by_test_id("login-view")).to_be_visible()
    await page.get_by_label("API token").fill(token)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("app-shell")).to_be_visible()
    await expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")
    return page


async def member(stack: Stack, project: str, user: str, role: str) -> str:
    token = await stack.user(user)
    await stack.ok("PUT", f"/api/v1/projects/{project}/members", json={"user": user, "role": role})
    return token


async def test_connect_a_cluster_through_the_form_and_see_it_go_online(
    stack: Stack, tabs: Callable[[str], Awaitable[Tab]], tmp_path: Path
) -> None:
    tab = await tabs("admin")
    page = tab.page
    await page.goto(f"{stack.api}/")
    await expect(page.get_by_test_id("login-view")).to_be_visible()
    await page.get_by_label("API token").fill("tat_not-a-real-token")
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("login-error")).to_contain_text("not valid")
    await tab.shot("login-refused")

    await sign_in(tab, stack, stack.admin_token)
    await expect(page.get_by_test_id("whoami")).to_contain_text("admin")
    await expect(page.get_by_test_id("admin-badge")).to_be_visible()
    await tab.shot("signed-in")

    await page.get_by_test_id("connect-cluster-button").click()
    await page.get_by_label("Name", exact=True).fill("edge-1")
    await page.get_by_label("Labels").fill("env=dev, region=eu")
    await tab.shot("connect-form")
    await page.get_by_test_id("connect-submit").click()
    command = page.get_by_test_id("agent-command")
    await expect(command).to_contain_text("tether agent run")
    await expect(page.get_by_test_id("connect-status")).to_contain_text("Waiting for the agent")
    await tab.shot("agent-command")

    # Run exactly the command the page shows (the test adds only where the sim driver keeps its state).
    shown = shlex.split(await command.inner_text())
    assert shown[:3] == ["tether", "agent", "run"], shown
    assert shown[shown.index("--server") + 1] == stack.nats_url
    agent = Proc(
        name="agent-edge-1",
        argv=[sys.executable, "-m", "services.cli", *shown[1:], "--driver", "sim", "--state-dir", str(tmp_path / "e1")],
        env=stack.env(),
        log=stack.tmp / "logs" / "agent-edge-1.log",
    ).start()
    stack.agents.append(agent)
    await expect(page.get_by_test_id("connect-status")).to_contain_text("Online", timeout=20_000)
    await tab.shot("online")

    await page.get_by_test_id("nav-clusters").click()
    row = page.get_by_test_id("cluster-row-edge-1")
    await expect(page.get_by_test_id("cluster-status-edge-1")).to_have_text("Online")
    await expect(page.get_by_test_id("cluster-nodes-edge-1")).to_have_text(re.compile(r"^\d+/\d+$"))
    await expect(row).to_contain_text("env=dev")
    await tab.shot("clusters")

    labels = page.get_by_test_id("cluster-filter-labels")
    await labels.fill("env=prod")
    await expect(row).to_have_count(0)
    await labels.fill("env=dev,region")
    await expect(row).to_be_visible()
    status = page.get_by_test_id("cluster-filter-status")
    await status.select_option("offline")
    await expect(row).to_have_count(0)
    await status.select_option("online")
    await expect(row).to_be_visible()
    await tab.shot("filtered")
    await labels.fill("")
    await status.select_option("all")

    # The agent goes away: the page shows it offline by itself, without a reload.
    agent.stop()
    await expect(page.get_by_test_id("cluster-status-edge-1")).to_have_text("Offline")
    await tab.shot("offline-without-reload")

    await page.get_by_test_id("cluster-link-edge-1").click()
    await expect(page.get_by_test_id("cluster-detail-status")).to_have_text("Offline")
    history = page.get_by_test_id("history-table")
    await expect(history.get_by_test_id("history-row").filter(has_text="offline")).to_have_count(1)
    await expect(history.get_by_test_id("history-row").filter(has_text="online")).to_have_count(1)
    await expect(page.get_by_test_id("cluster-timeline")).to_be_visible()
    await tab.shot("cluster-health")


async def test_a_user_puts_a_tenant_to_sleep_and_sees_its_phase_change(
    stack: Stack, tabs: Callable[[str], Awaitable[Tab]], tmp_path: Path
) -> None:
    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"], "quota": {"tenants": 5}})
    bob = await member(stack, "p1", "bob", "user")
    await stack.ok("POST", "/api/v1/projects/p1/tenants", token=bob, json={"name": "t1", "version": "v1.35"})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t2", "version": "v1.35"})
    await stack.wait_synced("tenant", "p1", "t1")

    tab = await tabs("bob")
    page = await sign_in(tab, stack, bob)
    await page.get_by_test_id("nav-tenants").click()
    phase = page.get_by_test_id("phase-p1-t1")
    await expect(phase).to_have_text("Ready")
    # bob manages his own tenant cluster, not the one the admin created
    await expect(page.get_by_test_id("action-sleep-p1-t1")).to_be_visible()
    await expect(page.get_by_test_id("tenant-row-p1-t2")).to_be_visible()
    await expect(page.get_by_test_id("tenant-row-p1-t2").get_by_role("button")).to_have_count(0)
    await tab.shot("tenants")

    await page.get_by_test_id("action-sleep-p1-t1").click()
    await expect(phase).to_have_text("Sleeping")
    await expect(page.get_by_test_id("action-wake-p1-t1")).to_be_visible()
    await tab.shot("asleep")
    asleep = await stack.workload("tenant", "p1", "t1")
    assert asleep is not None and asleep["desired"]["state"] == "sleeping"

    await page.get_by_test_id("action-wake-p1-t1").click()
    await expect(phase).to_have_text("Ready")
    await expect(page.get_by_test_id("action-sleep-p1-t1")).to_be_visible()

    await page.get_by_test_id("action-upgrade-p1-t1").click()
    await page.get_by_test_id("upgrade-version").fill("v1.36")
    await tab.shot("upgrade-dialog")
    await page.get_by_test_id("upgrade-dialog-confirm").click()
    row = page.get_by_test_id("tenant-row-p1-t1")
    await expect(row).to_contain_text("v1.36")
    await expect(row).to_contain_text("in sync")
    await expect(phase).to_have_text("Ready")
    await tab.shot("upgraded")

    await row.get_by_role("link", name="t1").click()
    await expect(page.get_by_test_id("workload-conditions")).to_contain_text("Ready")
    # Connect: how kubectl reaches it through the platform's gateway
    await expect(page.get_by_test_id("connect-command")).to_have_text("tether tenant kubeconfig t1 -p p1 --merge")
    await expect(page.get_by_test_id("connect-server")).to_have_text(f"{stack.api}/kubernetes/project/p1/tenant/t1")
    await tab.shot("tenant-detail")

    await page.get_by_test_id("action-delete-p1-t1").click()
    await page.get_by_test_id("delete-dialog-confirm").click()
    await expect(page.get_by_test_id("workload-gone")).to_be_visible(timeout=30_000)
    await stack.wait_gone("tenant", "p1", "t1")
    await tab.shot("deleted")


async def test_a_viewer_sees_no_action_buttons(
    stack: Stack, tabs: Callable[[str], Awaitable[Tab]], tmp_path: Path
) -> None:
    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"]})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t1", "version": "v1.35"})
    await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "s1"})
    vic = await member(stack, "p1", "vic", "viewer")
    eve = await stack.user("eve")
    await stack.wait_synced("tenant", "p1", "t1")

    tab = await tabs("viewer")
    page = await sign_in(tab, stack, vic)
    actions = page.locator("[data-testid^='action-']")
    await expect(page.get_by_test_id("cluster-status-c1")).to_have_text("Online")
    await expect(page.get_by_test_id("connect-cluster-button")).to_have_count(0)
    await tab.shot("clusters")

    await page.get_by_test_id("nav-tenants").click()
    await expect(page.get_by_test_id("phase-p1-t1")).to_have_text("Ready")
    await expect(actions).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("sleep|wake|upgrade|delete", re.I))).to_have_count(0)
    await tab.shot("tenants")

    await page.get_by_test_id("nav-spaces").click()
    await expect(page.get_by_test_id("phase-p1-s1")).to_have_text("Ready")
    await expect(actions).to_have_count(0)

    await page.get_by_test_id("nav-projects").click()
    await expect(page.get_by_test_id("project-role-p1")).to_have_text("viewer")
    await page.get_by_test_id("project-row-p1").get_by_role("link", name="p1").click()
    await expect(page.get_by_test_id("project-tenants")).to_contain_text("t1")
    await expect(page.get_by_test_id("project-members")).to_contain_text("vic")
    for testid in ("add-member", "create-tenant", "create-space", "remove-member-user-vic"):
        await expect(page.get_by_test_id(testid)).to_have_count(0)
    await expect(actions).to_have_count(0)
    await tab.shot("project")

    await page.goto(f"{stack.api}/#/clusters/c1")
    await expect(page.get_by_test_id("cluster-tenants")).to_contain_text("t1")
    # each tenant's readiness, version and pods, from the agent's health report (sim: one fake pod)
    await expect(page.get_by_test_id("control-plane-row")).to_contain_text("p1/t1")
    await expect(page.get_by_test_id("control-plane-row")).to_contain_text("Ready")
    await expect(page.get_by_test_id("control-plane-row")).to_contain_text("v1.35")
    await expect(page.get_by_test_id("disconnect-cluster")).to_have_count(0)
    await expect(actions).to_have_count(0)
    await tab.shot("cluster")

    await page.goto(f"{stack.api}/#/projects/p1/tenants/t1")
    await expect(page.get_by_test_id("workload-conditions")).to_be_visible()
    await expect(actions).to_have_count(0)

    await page.goto(f"{stack.api}/#/connect")
    await expect(page.get_by_test_id("connect-forbidden")).to_be_visible()

    # Someone outside the project sees none of it.
    outsider = await tabs("outsider")
    page = await sign_in(outsider, stack, eve)
    await page.get_by_test_id("nav-tenants").click()
    await expect(page.get_by_test_id("tenant-table-empty")).to_be_visible()
    await page.get_by_test_id("nav-projects").click()
    await expect(page.get_by_test_id("project-table-empty")).to_be_visible()
    await outsider.shot("nothing-to-see")
