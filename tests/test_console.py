"""The read-only web console: Sign in with Slack through the Slack double (state, team and
viewers checked), signed session cookies, security headers, escaping, and a path prefix
from PROMPTSHIP_PUBLIC_URL."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from promptship.clock import ManualClock
from promptship.config import Settings, parse_policy
from promptship.console.pages import SESSION_COOKIE
from promptship.domain.promptfile import parse_prompt
from promptship.errors import BadInput
from promptship.server import create_app
from promptship.services import Promptship
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy, prompt_yaml
from tests.console_helpers import Console
from tests.helpers import REQUESTER, case_results, push, slack, start_staging_soak

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
VIEWERS = (
    "console: {viewers: [U0VIEW, S0WATCHERS, carol@example.com]}\ngroups: {S0WATCHERS: [U0GROUPIE]}"
)


def test_signing_in_through_slack_opens_the_overview(console: Console) -> None:
    login = console.client.get("/login")
    target = urlsplit(login.headers["location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == (
        f"{console.slack.url}/openid/connect/authorize"
    )
    assert query["response_type"] == ["code"] and query["scope"] == ["openid profile email"]
    assert query["client_id"] == ["1000.2000"]
    assert query["redirect_uri"] == ["http://testserver/auth/callback"]
    assert len(query["state"][0]) >= 20 and len(query["nonce"][0]) >= 20

    signed_in = console.sign_in("U0VIEW", name="Vera Viewer")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    page = console.client.get("/")
    assert page.status_code == 200
    assert "Signed in as <strong>Vera Viewer</strong>" in page.text
    assert "the console is read-only" in page.text.lower()
    token = console.slack.calls("openid.connect.token")[-1]
    assert token["client_secret"] == "oidc-secret-0123"
    assert token["redirect_uri"] == "http://testserver/auth/callback"


def test_a_wrong_or_missing_state_is_refused_without_a_session(console: Console) -> None:
    console.slack.sign_in_as("U0VIEW")
    login = console.client.get("/login")
    back = urlsplit(
        httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    )
    code = parse_qs(back.query)["code"][0]
    forged = console.client.get(f"/auth/callback?code={code}&state=someone-elses-state")
    assert forged.status_code == 400
    assert "not started here" in forged.text
    assert SESSION_COOKIE not in forged.cookies
    assert console.client.get("/").status_code == 303  # still no session
    # without the sign-in cookie (another browser), even the right state is refused
    console.client.cookies.clear()
    replayed = console.client.get(f"/{back.path.lstrip('/')}?{back.query}")
    assert replayed.status_code == 400 and SESSION_COOKIE not in replayed.cookies
    assert console.slack.calls("openid.connect.token") == []  # no code was spent


def test_people_outside_the_viewers_or_the_workspace_are_refused(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    console = Console(tmp_path, slack_api, VIEWERS)
    with console.client:
        outsider = console.sign_in("U0NOBODY", name="Nora")
        assert outsider.status_code == 403
        assert "Nora (U0NOBODY) is not among the console&#39;s viewers" in outsider.text
        assert SESSION_COOKIE not in outsider.cookies
        other_team = console.sign_in("U0VIEW", team="T0OTHER")
        assert other_team.status_code == 403 and "another Slack workspace" in other_team.text
        assert console.client.get("/").status_code == 303
        # a user ID, a user group's member and an e-mail address are let in, as in roles
        for user, who in (
            ("U0VIEW", {}),
            ("U0GROUPIE", {}),
            ("U0CAROL", {"email": "Carol@example.com"}),
        ):
            console.client.cookies.clear()
            assert console.sign_in(user, **who).status_code == 303, user
            assert console.client.get("/").status_code == 200


def test_no_page_without_a_session_and_every_response_carries_the_csp(console: Console) -> None:
    home = console.client.get("/", headers={"Accept": "text/html"})
    assert home.status_code == 303 and home.headers["location"] == "/login"
    for response in (
        home,
        console.client.get("/login"),
        console.client.get("/static/console.css"),
        console.client.get("/auth/callback?state=x&code=y"),
        console.client.post("/logout"),
        console.sign_in(),
        console.client.get("/"),
    ):
        assert response.headers["content-security-policy"] == CSP, response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    page = console.client.get("/")
    # the one script is the console's own file, nothing inline
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts == [(' src="/static/console.js" defer', "")]
    assert "style=" not in page.text and "<style" not in page.text
    assert console.client.get("/static/console.css").headers["content-type"].startswith("text/css")
    js = console.client.get("/static/console.js")
    assert js.headers["content-type"].startswith("text/javascript") and "EventSource" in js.text
    assert js.headers["content-security-policy"] == CSP
    # scripts still get the server's facts as JSON without a session
    console.client.cookies.clear()
    facts = console.client.get("/", headers={"Accept": "application/json"})
    assert facts.status_code == 200 and facts.json()["name"] == "promptship"
    assert facts.headers["content-security-policy"] == CSP


def test_what_people_wrote_is_escaped(console: Console) -> None:
    async def go(core: Promptship) -> None:
        description = '<script>alert("x")</script> & <b>bold</b>'
        spec = parse_prompt(prompt_yaml("customer-support", "1.0.0", description=description))
        await core.push(spec, slack("U09"))
        await core.record_validation_run(
            "customer-support", "1.0.0", case_results(10), slack(REQUESTER)
        )
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))
        await core.request_promotion(
            "customer-support",
            "1.0.0",
            "production",
            slack(REQUESTER),
            reason="<img src=x onerror=alert(1)>",
        )

    console.seed(go)
    console.sign_in()
    page = console.client.get("/")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page.text
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "customer-support" in page.text and "Open requests (1)" in page.text


def test_a_path_prefix_in_the_public_url_is_honoured(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    console = Console(
        tmp_path, slack_api, PROMPTSHIP_PUBLIC_URL="https://ops.example.com/promptship/"
    )
    with console.client:
        assert console.client.get("/").headers["location"] == "/promptship/login"
        login = console.client.get("/login")
        query = parse_qs(urlsplit(login.headers["location"]).query)
        assert query["redirect_uri"] == ["https://ops.example.com/promptship/auth/callback"]
        cookie = login.headers["set-cookie"]
        assert "Path=/promptship/" in cookie and "Secure" in cookie
        # the proxy strips the prefix; the browser sends the cookie back over https
        state = query["state"][0]
        console.slack.sign_in_as("U0VIEW")
        back = urlsplit(
            httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
        )
        assert back.path == "/promptship/auth/callback"
        signed_in = console.client.get(
            f"/auth/callback?{back.query}",
            headers={"Cookie": cookie.split(";")[0]},
        )
        assert parse_qs(back.query)["state"] == [state]
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/promptship/"
        session = signed_in.headers["set-cookie"]
        page = console.client.get("/", headers={"Cookie": session.split(";")[0]})
        assert 'href="/promptship/static/console.css"' in page.text
        assert 'action="/promptship/logout"' in page.text
        assert 'href="/promptship/"' in page.text


def test_session_cookies_are_http_only_and_tampering_signs_out(console: Console) -> None:
    signed_in = console.sign_in("U0VIEW", name="Vera")
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http here; https public URLs get Secure
    value = console.client.cookies[SESSION_COOKIE]
    body, mac = value.rsplit(".", 1)
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["u"] = "U0ADMIN"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    for bad in (f"{forged}.{mac}", f"{body}.{'0' * len(mac)}", body, "x" * 5000):
        console.client.cookies.clear()
        console.client.cookies.set(SESSION_COOKIE, bad)
        assert console.client.get("/").status_code == 303, bad[:40]
    console.client.cookies.clear()
    console.client.cookies.set(SESSION_COOKIE, value)
    assert console.client.get("/").status_code == 200  # the untouched cookie still works


def test_signing_out_needs_the_pages_token(console: Console) -> None:
    console.sign_in()
    page = console.client.get("/").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    refused = console.client.post("/logout", data={"csrf": "guessed"})
    assert refused.status_code == 400
    assert console.client.get("/").status_code == 200  # still signed in
    out = console.client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 200 and "signed out" in out.text
    assert console.client.get("/").status_code == 303


def test_sign_in_explains_what_is_missing(tmp_path: Path, slack_api: SlackDouble) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=db_url), make_policy(), workers=False)
    with TestClient(app, follow_redirects=False) as client:
        page = client.get("/login")
    assert page.status_code == 503
    assert "SLACK_CLIENT_ID, SLACK_CLIENT_SECRET, PROMPTSHIP_SLACK_TEAM_ID" in page.text


def test_a_session_lasts_twelve_hours(console: Console) -> None:
    clock = ManualClock(datetime.now(UTC))
    console.app.state.core.clock = clock
    console.sign_in()
    clock.advance(timedelta(hours=11, minutes=59))
    assert console.client.get("/").status_code == 200
    clock.advance(timedelta(minutes=2))
    assert console.client.get("/").headers["location"] == "/login"


def test_slack_failing_the_code_exchange_is_a_clear_page(console: Console) -> None:
    console.slack.fail_next(1, 500, method="openid.connect.token")
    failed = console.sign_in()
    assert failed.status_code == 502
    assert "Slack did not confirm who you are: openid.connect.token" in failed.text
    assert SESSION_COOKIE not in failed.cookies


def test_the_session_secret_is_kept_beside_a_sqlite_database(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    first = Console(tmp_path, slack_api)
    with first.client:
        first.sign_in()
        cookie = first.client.cookies[SESSION_COOKIE]
    key = tmp_path / "console.db.session-key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = Console(tmp_path, slack_api)  # a restart: sessions stay valid
    with again.client:
        again.client.cookies.set(SESSION_COOKIE, cookie)
        assert again.client.get("/").status_code == 200
    other = Console(tmp_path, slack_api, PROMPTSHIP_SESSION_SECRET="s" * 40)
    with other.client:
        other.client.cookies.set(SESSION_COOKIE, cookie)
        assert other.client.get("/").status_code == 303  # another secret: not ours


def test_the_overview_shows_each_environment_open_requests_and_running_soaks(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    soaking = "environments: {production: {approvals: 2, soak: 3h, soak_interval: 1h}}"
    console = Console(tmp_path, slack_api, soaking)

    async def go(core: Promptship) -> None:
        await start_staging_soak(core, "customer-support", "1.1.0")
        await core.request_promotion("customer-support", "1.1.0", "production", slack(REQUESTER))
        await push(core, "billing-faq", "0.1.0")

    with console.client:
        console.seed(go)
        console.sign_in()
        page = console.client.get("/").text
    rows = {
        row.split("</strong>", 1)[0].rsplit(">", 1)[-1]: row
        for row in page.split('<strong class="prompt">')[1:]
    }
    assert set(rows) == {"billing-faq", "customer-support"}
    support = rows["customer-support"].split("</tr>", 1)[0]
    cells = [c.split("</td>", 1)[0] for c in support.split("<td>")[1:]]
    assert len(cells) == 3  # dev, staging, production
    assert "<code>1.1.0</code>" in cells[1] and "—" in cells[2]
    billing = rows["billing-faq"].split("</tr>", 1)[0]
    assert billing.count("—") == 3  # pushed, deployed nowhere
    assert "Open requests (1)" in page
    assert "1.1.0</code> → production" in page
    assert (
        "check-waiting" in page and "<strong>soak</strong>: soaking: no cycle done yet of 3" in page
    )
    assert "Running soaks (1)" in page
    soak = page.split("Running soaks (1)", 1)[1]
    assert "customer-support" in soak and "0/3 cycles" in soak


def test_a_viewer_entry_that_names_nobody_is_refused_naming_it() -> None:
    with pytest.raises(BadInput) as refused:
        parse_policy("console: {viewers: [U0VIEW, bob]}")
    assert str(refused.value.message) == (
        "promptship.yaml: console.viewers: 'bob' is not a Slack user ID (U01ABCDEF), a "
        "user-group ID (S0GROUP) or an e-mail address"
    )
    assert parse_policy("console: {viewers: [Ann@Example.com]}").console.viewers == [
        "ann@example.com"
    ]


def test_a_sign_in_is_good_once_and_for_ten_minutes(console: Console) -> None:
    clock = ManualClock(datetime.now(UTC))
    console.app.state.core.clock = clock
    console.slack.sign_in_as("U0VIEW")
    login = console.client.get("/login")
    back = urlsplit(
        httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    )
    assert console.client.get(f"/auth/callback?{back.query}").status_code == 303
    # the same code again, under a fresh sign-in's state: Slack refuses a spent code
    console.client.cookies.clear()
    state = parse_qs(urlsplit(console.client.get("/login").headers["location"]).query)["state"][0]
    code = parse_qs(back.query)["code"][0]
    spent = console.client.get(f"/auth/callback?code={code}&state={state}")
    assert spent.status_code == 502 and "invalid_code" in spent.text
    assert SESSION_COOKIE not in spent.cookies
    # a sign-in left at Slack's page for more than ten minutes is started again
    console.client.cookies.clear()
    login = console.client.get("/login")
    back = urlsplit(
        httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    )
    clock.advance(timedelta(minutes=10, seconds=1))
    late = console.client.get(f"/auth/callback?{back.query}")
    assert late.status_code == 400 and "took longer than 10 minutes" in late.text
