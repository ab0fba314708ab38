"""The web UI's day-two pages in a real browser: people (users, tokens, teams), project edit and delete,
cluster edit and remove. Every destructive action asks first; a cancel changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from playwright.async_api import expect

from tests.harness import Stack
from tests.ui.test_web_ui import Tab, browser, sign_in, tabs  # noqa: F401  (fixtures)


async def test_people_projects_and_clusters_change_and_go(stack: Stack, tabs: Callable[[str], Awaitable[Tab]]) -> None:  # noqa: F811
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs"})
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "quota": {"tenants": 2}})
    await stack.connect_cluster("pend", labels={"env": "dev"})
    tab = await tabs("admin")
    page = await sign_in(tab, stack, stack.admin_token)

    # users: create (the token is shown once), tokens, delete with a confirmation that can be cancelled
    await page.get_by_test_id("nav-people").click()
    await page.get_by_test_id("create-user").click()
    await page.get_by_test_id("user-name").fill("carol")
    await page.get_by_test_id("user-dialog-confirm").click()
    await expect(page.get_by_test_id("new-token")).to_contain_text("tat_")
    await tab.shot("user-created")
    await page.get_by_test_id("token-dialog-confirm").click()
    await expect(page.get_by_test_id("user-row-carol")).to_be_visible()

    await page.get_by_test_id("user-tokens-carol").click()
    await expect(page.get_by_test_id("token-table")).to_be_visible()
    await page.get_by_test_id("token-name").fill("ci")
    await page.get_by_test_id("tokens-dialog-confirm").click()
    await expect(page.get_by_test_id("new-token")).to_contain_text("tat_")
    await page.get_by_test_id("token-dialog-confirm").click()
    tokens = (await stack.ok("GET", "/api/v1/users/carol/tokens"))["items"]
    assert sorted(t["name"] for t in tokens) == ["", "ci"]

    await stack.ok("POST", "/api/v1/teams/devs/members", json={"user": "carol"})
    await page.get_by_test_id("user-delete-carol").click()
    await expect(page.get_by_test_id("delete-user-dialog-takes")).to_contain_text("membership of team devs")
    await tab.shot("delete-user-asks")
    await page.get_by_test_id("delete-user-dialog-cancel").click()
    assert "carol" in [u["name"] for u in (await stack.ok("GET", "/api/v1/users"))["items"]]
    await page.get_by_test_id("user-delete-carol").click()
    await page.get_by_test_id("delete-user-dialog-confirm").click()
    await expect(page.get_by_test_id("user-row-carol")).to_have_count(0)
    assert "carol" not in [u["name"] for u in (await stack.ok("GET", "/api/v1/users"))["items"]]

    # teams: delete asks too
    await page.get_by_test_id("team-delete-devs").click()
    await page.get_by_test_id("delete-team-dialog-confirm").click()
    await expect(page.get_by_test_id("team-row-devs")).to_have_count(0)
    assert (await stack.ok("GET", "/api/v1/teams"))["items"] == []

    # project: edit the quota, then delete it (asked first)
    await page.goto(f"{stack.api}/#/projects/p1")
    await page.get_by_test_id("edit-project").click()
    await page.get_by_test_id("project-edit-tenants").fill("7")
    await page.get_by_test_id("project-edit-dialog-confirm").click()
    await expect(page.get_by_test_id("toasts")).to_contain_text("project p1 saved")
    assert (await stack.ok("GET", "/api/v1/projects/p1"))["quota"]["tenants"] == 7
    await page.get_by_test_id("delete-project").click()
    await page.get_by_test_id("delete-project-dialog-cancel").click()
    assert (await stack.req("GET", "/api/v1/projects/p1")).status_code == 200
    await page.get_by_test_id("delete-project").click()
    await page.get_by_test_id("delete-project-dialog-confirm").click()
    await expect(page.get_by_test_id("projects-view")).to_be_visible()
    assert (await stack.req("GET", "/api/v1/projects/p1")).status_code == 404

    # cluster: edit labels, then remove the never-connected one
    await page.goto(f"{stack.api}/#/clusters/pend")
    await page.get_by_test_id("edit-cluster").click()
    await page.get_by_test_id("cluster-edit-labels").fill("env=prod, tier=edge")
    await page.get_by_test_id("cluster-edit-dialog-confirm").click()
    await expect(page.get_by_test_id("toasts")).to_contain_text("cluster pend saved")
    assert (await stack.cluster("pend"))["labels"] == {"env": "prod", "tier": "edge"}
    await page.get_by_test_id("remove-cluster").click()
    await expect(page.get_by_test_id("remove-cluster-takes")).to_contain_text("command consumer")
    await tab.shot("remove-cluster-asks")
    await page.get_by_test_id("remove-cluster-dialog-confirm").click()
    await expect(page.get_by_test_id("toasts")).to_contain_text("cluster pend removed")
    assert (await stack.req("GET", "/api/v1/clusters/pend")).status_code == 404
