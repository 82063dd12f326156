"""`tributary admin rebalance --watch` (the optional balancer): it asks the router to start the
moves that even copies out, round after round, prints each round that started moves, and keeps
going when a round fails. Run against a stand-in router that records what it is asked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MOVE = {"move_id": "abcd1234-0-n1-n3", "dataset": "d0", "shard": 0, "source": "n1",
        "target": "n3", "primary": False, "dataset_uuid": "abcd1234", "tenant_id": "default"}


class StandInRouter(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server interface
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandInRouter.bodies.append({"path": self.path, **body})
        if len(StandInRouter.bodies) == 2:        # one failed round: the watch goes on
            self.send_response(503)
            payload = {"error": {"type": "Unavailable", "message": "no leader"}}
        else:
            self.send_response(200)
            payload = {"dry_run": False, "in_flight": 0,
                       "moves": [MOVE] if len(StandInRouter.bodies) in (1, 3) else []}
        data = json.dumps(payload).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_watch_starts_moves_every_round_and_survives_a_failed_round():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInRouter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watch = subprocess.Popen(
        [sys.executable, "-m", "tributary.cli", "admin", "rebalance", "--watch",
         "--watch-interval", "0.2", "--url", f"http://127.0.0.1:{server.server_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(StandInRouter.bodies) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watch.kill()
        out, err = watch.communicate(timeout=10)
        server.shutdown()
    assert len(StandInRouter.bodies) >= 5
    assert all(b == {"path": "/admin/rebalance", "dry_run": False, "max_concurrent_moves": 2}
               for b in StandInRouter.bodies)
    assert out.splitlines() == ["started 1 move(s): d0/0 n1->n3"] * 2
    assert "no leader" in err and "trying again" in err
