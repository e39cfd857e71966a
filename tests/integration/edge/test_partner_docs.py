"""docs/partners.md works as written: its curl and Python samples are extracted and run against a
real edge, and it documents every error code and the embedded mode's route table."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

import aiohttp

from services.edge.domain.errors import CODES
from tests.integration.edge.conftest import Partner, ProvisionPartner
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[3]
GUIDE = REPO / "docs" / "partners.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)

# Appended to the guide's Python samples: checks what they did, then drives the backoff sample
# into a real 429 (with the sleep recorded instead of slept).
HARNESS = """
assert status == 200 and lots["lots"], (status, lots)
delays = []
results = [call_with_backoff("GET", "/v1/inventory/lots", tokens, max_attempts=3, sleep=delays.append) for _ in range(3)]
print("RESULT " + json.dumps({"statuses": [r[0] for r in results], "errors": [r[2].get("error") for r in results],
                               "delays": delays}))
"""


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(GUIDE.read_text()) if lang == language]


def sample_environment(edge: str, partner: Partner) -> dict[str, str]:
    return {**os.environ, "API_BASE": edge, "CLIENT_ID": partner.client_id, "CLIENT_SECRET": partner.client_secret,
            "API_KEY": partner.api_key}


async def run(args: list[str], env: dict[str, str], stdin: bytes = b"") -> str:
    process = await asyncio.create_subprocess_exec(*args, env=env, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    text = out.decode(errors="replace")
    assert process.returncode == 0, text
    return text


def test_the_guide_documents_every_error_code_and_the_embedded_routes() -> None:
    guide = GUIDE.read_text()
    for code, info in CODES.items():
        assert re.search(rf"^\| `{code}` \| {info.status}\b", guide, re.M), code
    routes = tomllib.loads((REPO / "examples" / "routes.toml").read_text())["route"]
    for route in routes:
        assert f"| `{route['prefix']}` |" in guide, route["prefix"]


async def test_the_curl_samples_run_against_a_real_edge(edge: str, provision: ProvisionPartner) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    assert not missing, f"the guide's samples need {missing}: apt-get install -y curl jq"
    partner = await provision()
    script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
    out = await run(["bash", "-s"], sample_environment(edge, partner), script.encode())
    decoder = json.JSONDecoder()  # answers have no trailing newline: find each token document
    tokens = [decoder.raw_decode(out, m.start())[0] for m in re.finditer(r'\{"access_token"', out)]
    assert [t["token_type"] for t in tokens] == ["Bearer", "Bearer"] and tokens[1]["scope"] == "inventory:read"
    assert re.search(r"HTTP/1.1 200", out) and re.search(r"^x-ratelimit-remaining: \d+", out, re.M | re.I)
    assert '"lots"' in out


async def not_near_a_minute_boundary() -> bool:
    return time.time() % 60 < 45


async def test_the_python_samples_run_and_back_off_on_429(edge: str, provision: ProvisionPartner,
                                                          http: aiohttp.ClientSession) -> None:
    await eventually(not_near_a_minute_boundary, timeout=20, what="a minute with room for the test")
    partner = await provision(rate_limit_per_minute=3)
    script = "\n".join(blocks("python")) + HARNESS
    out = await run([sys.executable, "-c", script], sample_environment(edge, partner))
    result = json.loads(out.split("RESULT ", 1)[1])
    assert result["statuses"] == [200, 200, 429], out
    assert result["errors"][-1] == "rate_limit_exceeded"
    assert len(result["delays"]) == 2  # retried twice, waiting for the window each time
    assert all(0 < delay <= 61 + 1.0 for delay in result["delays"])
