"""`dagster dev` loads the workspace and serves the asset graph (a real webserver and daemon)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERY = '{"query": "{ assetNodes { assetKey { path } groupName hasAssetChecks } }"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagster_dev_serves_the_asset_graph(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BILLING_DATA_DIR": str(tmp_path / "data"),
           "BILLING_DB": str(tmp_path / "billing.duckdb")}
    # Its own session, so that SIGINT reaches dagster dev and the processes it starts.
    server = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        nodes = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=QUERY.encode(),
                                                 headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(request, timeout=5).read())
                nodes = body["data"]["assetNodes"]
                if nodes:
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        assert nodes, "dagster dev did not serve the asset graph"
        keys = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"contracts", "contract_status_daily", "dues_postings", "billable_customers",
                "billing_attempts"} <= set(keys)
        assert keys["billable_customers"]["hasAssetChecks"] and keys["dues_postings"]["groupName"] == "dues"
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
